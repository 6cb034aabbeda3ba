"""Home: what the lab is, the data set at a glance, the device, the cache.

It imports no torch: on a server's first visit it shows at once, with a placeholder until the
background warm-up (ui/warmup.py) has loaded torch and the data set.
"""

import streamlit as st

from ui import warmup

st.title("Fashion-MNIST Lab")
st.markdown(
    "Train, compare and look inside neural networks on **Fashion-MNIST**: 70,000 greyscale 28×28 pictures "
    "of clothes in 10 classes. Build the autoencoders, classifiers, MLPs, CNNs and residual networks of five "
    "student reports, watch them learn, and see their published numbers beside ours."
)


@st.fragment(run_every=0.5)
def wait_for_warmup() -> None:
    if warmup.ready():
        st.rerun()  # the whole page, now with the data
    st.info(
        "Loading PyTorch and the 70,000 images (once per server start, a few seconds)...",
        icon=":material/hourglass_top:",
    )


def data_at_a_glance() -> None:
    from fmnist_core.base.device import describe_device
    from ui.queue_panels import starter_panel
    from ui.resources import data_set_figures, fashion
    from ui.runs import runs_table

    starter_panel()

    data = fashion()
    runs = runs_table()
    left, middle, right = st.columns(3)
    left.metric(
        "Images",
        f"{len(data.train_labels) // 1000}k + {len(data.test_labels) // 1000}k",
        help=f"{len(data.train_labels):,} training images and {len(data.test_labels):,} test images",
    )
    middle.metric("Device", describe_device().split(":")[0], help=describe_device())
    right.metric("Cached runs", len(runs))

    st.subheader("The data set at a glance")
    examples, counts = data_set_figures()
    st.plotly_chart(examples, config={"displayModeBar": False})
    st.plotly_chart(counts)
    st.caption(
        f"Loaded from {data.folder}: the original IDX files, checked to hold 6,000 / 1,000 images per class."
    )


if warmup.ready():  # any visit after the server's first seconds (app.py's navigation started it)
    data_at_a_glance()
else:
    wait_for_warmup()

st.subheader("Where to go")
st.page_link(
    "app_pages/autoencoder.py",
    label="Train an autoencoder and compare its reconstructions",
    icon=":material/compress:",
)
st.page_link(
    "app_pages/classifier.py",
    label="Train a classifier: on an encoder, an MLP, a CNN or a ResNet",
    icon=":material/category:",
)
st.page_link("app_pages/latent.py", label="Explore the latent space", icon=":material/scatter_plot:")
st.page_link("app_pages/compare.py", label="Compare runs side by side", icon=":material/compare_arrows:")
st.page_link("app_pages/reports.py", label="Reproduce the five seed reports", icon=":material/description:")
st.page_link("app_pages/try_it.py", label="Draw or upload a picture and classify it", icon=":material/draw:")
