"""Fashion-MNIST Lab: the Streamlit entry point."""

import streamlit as st

st.set_page_config(page_title="Fashion-MNIST Lab", page_icon="👕", layout="wide")
st.title("Fashion-MNIST Lab")
st.write("Train, compare and look inside neural networks on Fashion-MNIST.")
