"""Fashion-MNIST Lab: the Streamlit entry point; pages live in app_pages/, the navigation in ui/navigation.py."""

from ui.navigation import run_app

run_app()
