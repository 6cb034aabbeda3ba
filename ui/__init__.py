"""Streamlit helpers shared by the pages: process-wide state, sidebar widgets, figures, panels."""
