"""Home: what the lab is, the data set at a glance, the device, the cache.

It imports no torch: on a server's first visit it shows at once, with a placeholder until the
background warm-up (ui/warmup.py) has loaded torch and the data set.
"""

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from fmnist_core.data.labels import CLASS_NAMES
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
    from ui import plots
    from ui.queue_panels import starter_panel
    from ui.resources import fashion
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
    rng = np.random.default_rng(0)
    examples = {}
    for cls, name in enumerate(CLASS_NAMES):
        index = rng.choice(np.flatnonzero(data.train_labels.numpy() == cls), size=10, replace=False)
        examples[name] = data.train_images[index, 0].numpy()
    st.plotly_chart(plots.image_rows(examples), config={"displayModeBar": False})

    counts = pd.DataFrame(
        {
            "class": list(CLASS_NAMES) * 2,
            "split": ["train"] * 10 + ["test"] * 10,
            "images": np.concatenate(
                [np.bincount(data.train_labels.numpy()), np.bincount(data.test_labels.numpy())]
            ),
        }
    )
    figure = px.bar(counts, x="class", y="images", color="split", barmode="group", height=280)
    figure.update_layout(margin=dict(l=10, r=10, t=10, b=10))
    st.plotly_chart(figure)
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
