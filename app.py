"""Fashion-MNIST Lab: the Streamlit entry point; pages live in pages/."""

import streamlit as st

st.set_page_config(page_title="Fashion-MNIST Lab", page_icon="👕", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/autoencoder.py", title="Autoencoder", icon=":material/compress:"),
    st.Page("pages/classifier.py", title="Classifier", icon=":material/category:"),
    st.Page("pages/latent.py", title="Latent space", icon=":material/scatter_plot:"),
    st.Page("pages/compare.py", title="Compare runs", icon=":material/compare_arrows:"),
    st.Page("pages/reports.py", title="Reports", icon=":material/description:"),
    st.Page("pages/try_it.py", title="Try it", icon=":material/draw:"),
]

st.navigation(PAGES).run()
