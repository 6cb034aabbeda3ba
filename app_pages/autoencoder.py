"""Autoencoder: train an autoencoder (S0's conv autoencoder, a VAE) with every knob, watch it learn,
look at its reconstructions."""

import numpy as np
import streamlit as st

from fmnist_core import analysis, views
from fmnist_core.models import get_spec
from fmnist_core.runs.starter import starter_of
from ui import inside_sections, keys, plots
from ui.forms import architecture, model_form, recipe_buttons, start_from_starter
from ui.panels import epoch_scrubber, training_panel
from ui.resources import fashion
from ui.runs import run_view, runs_table
from ui.widgets import build_config, run_settings

with st.sidebar:
    st.header("Autoencoder")
    model = architecture("autoencoder", "ae:model")
    recipe_buttons(model, "ae")
    start_from_starter(starter_of(model), "ae")  # the page opens on the run the starter set trains
    settings = model_form(model, runs_table())
    run_values = run_settings(model, "ae")
config = build_config(model, settings, run_values)
spec = get_spec(model)

st.title("Autoencoder")
st.caption(
    spec.description
    + (f" · its report published a loss of ≈{spec.published['loss']}" if spec.published else "")
)
inside_sections.architecture_panel(config)  # its layers and cost, before it trains
run = training_panel(config, published=spec.published)
if run is None:
    st.stop()
st.session_state[keys.picked("reconstructs")] = run.run_id


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
    st.plotly_chart(plots.curves(run.history, published=spec.published))
with recon_tab:
    seed = st.number_input("Which test images (a seed)", min_value=0, value=0, step=1)
    index = np.random.default_rng(int(seed)).choice(len(data.test_images), size=10, replace=False)
    rows = views.reconstruction_rows(run, index)
    captions = [data.class_names[int(label)] for label in data.test_labels[index]]
    st.plotly_chart(plots.image_rows(rows, captions), config={"displayModeBar": False})
    st.markdown("##### During training")
    epoch_scrubber(run.history, key=run.run_id)
with error_tab:
    errors = run_view(run.run_id).errors
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
