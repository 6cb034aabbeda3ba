"""Autoencoder: train S0's conv autoencoder with every knob, watch it learn, look at reconstructions."""

import numpy as np
import streamlit as st

from fmnist_core import analysis, views
from ui import plots
from ui.navigation import enter_through_app
from ui.panels import epoch_scrubber, training_panel
from ui.state import fashion, stamp, test_errors
from ui.widgets import autoencoder_settings, build_config, recipe_button, run_settings

enter_through_app()

with st.sidebar:
    st.header("Autoencoder")
    recipe_button("fast_autoencoder", "ae")
    settings = autoencoder_settings()
    run_values = run_settings("conv_autoencoder", "ae")
config = build_config("conv_autoencoder", settings, run_values)

st.title("Autoencoder")
st.caption(
    "S0's network: Conv(1→16, k3) → pool → Conv(16→32, k3) → pool → Linear(800→n) and back through two "
    "transposed convolutions. S0 published a loss of ≈0.052 at n=64, p=0.2."
)
run = training_panel(config, published={"loss": 0.052})
if run is None:
    st.stop()
st.session_state["selected_autoencoder"] = run.run_id


@st.cache_data(max_entries=8)
def pca_baseline(k: int) -> float:
    data = fashion()
    return analysis.pca_reconstruction_mse(data.train_images, data.test_images, k)


data = fashion()
n = run.model.latent_size
first, second, third = st.columns(3)
first.metric("Test MSE (eval mode)", f"{run.metrics['test_mse']:.4f}")
second.metric(
    "Final train loss",
    f"{run.history['train_loss'][-1]:.4f}",
    help="With dropout active, as the reports measured it",
)
if n <= 784:
    with st.spinner("Fitting PCA for the same number of components..."):
        baseline = pca_baseline(min(n, 784))
    third.metric(
        f"PCA with k={n}",
        f"{baseline:.4f}",
        delta=f"{run.metrics['test_mse'] - baseline:+.4f}",
        delta_color="inverse",
    )

curves_tab, recon_tab, error_tab = st.tabs(["Curves", "Reconstructions", "Per-image error"])
with curves_tab:
    st.plotly_chart(plots.curves(run.history, published={"loss": 0.052}))
with recon_tab:
    seed = st.number_input("Which test images (a seed)", min_value=0, value=0, step=1)
    index = np.random.default_rng(int(seed)).choice(len(data.test_images), size=10, replace=False)
    rows = views.reconstruction_rows(run, index)
    captions = [data.class_names[int(label)] for label in data.test_labels[index]]
    st.plotly_chart(plots.image_rows(rows, captions), config={"displayModeBar": False})
    st.markdown("##### During training")
    epoch_scrubber(run.history, key=run.run_id)
with error_tab:
    errors = test_errors(run.run_id, stamp(run.run_id))
    st.plotly_chart(plots.histogram(errors, "Reconstruction error of each test image"))
    per_class = [errors[data.test_labels.numpy() == c].mean() for c in range(10)]
    st.bar_chart(
        {"mean error": dict(zip(data.class_names, per_class, strict=True))}, horizontal=True, height=300
    )
    order = np.argsort(errors)
    for title, picked in (
        ("Best reconstructed", order[:10]),
        ("Worst reconstructed", order[-10:][::-1].copy()),
    ):
        st.markdown(f"**{title}**")
        st.plotly_chart(
            plots.image_rows(
                {
                    "original": data.test_images[picked, 0].numpy(),
                    "reconstruction": views.test_reconstructions(run, picked),
                },
                [f"{errors[i]:.3f}" for i in picked],
            ),
            config={"displayModeBar": False},
            key=f"errors:{title}",
        )
