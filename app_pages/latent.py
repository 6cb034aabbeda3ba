"""Latent space: the test set's codes in 2-D, the training time-lapse, the atlas, walks between two
images, sliders along the main directions, and new garments from a VAE's prior."""

import pandas as pd
import streamlit as st

from fmnist_core.data.fashion import CLASS_NAMES
from fmnist_core.models import get_spec
from ui import events, keys, latent_plots, latent_sections, plots
from ui.queue_panels import waiting_for
from ui.resources import fashion, load_run, test_image_urls
from ui.runs import run_label, run_view, runs_table
from ui.widgets import kept

st.title("Latent space")
runs = runs_table()
if runs.empty:
    waiting_for(
        kinds=("autoencoder", "classifier"),
        otherwise="No trained model yet: train an autoencoder or a classifier first.",
    )
    st.page_link("app_pages/autoencoder.py", label="Go to the Autoencoder page", icon=":material/compress:")
    st.stop()
# Autoencoders first: only they can decode, which the walks and sliders below need.
ordered = runs.assign(decoder=~runs["reconstructs"].astype(bool)).sort_values("decoder", kind="stable")
choices = {run_label(row): row["run_id"] for _, row in ordered.iterrows()}
preferred = st.session_state.get(keys.picked("reconstructs"))
names = list(choices)
start = next((label for label, rid in choices.items() if rid == preferred), names[0])
with st.sidebar:
    st.header("Latent space")
    label = kept(st.selectbox, "Model", "latent:run", start, options=names)
    if label not in choices:
        label = names[0]
    methods = ["PCA", "t-SNE"]
    try:
        import umap  # noqa: F401

        methods.append("UMAP")
    except ImportError:
        pass
    method = kept(st.radio, "Projection", "latent:method", "PCA", options=methods, horizontal=True)
    count = kept(
        st.select_slider,
        "Test images shown",
        "latent:count",
        3000,
        options=(1000, 2000, 3000, 5000, 10000),
        help="t-SNE on 10,000 points takes about a minute; it is computed once and kept.",
    )
    others = ["nothing"] + [name for name in names if name != label]
    beside = kept(st.selectbox, "Beside it, the map of", "latent:beside", "nothing", options=others)
run_id = choices[label]
run = load_run(run_id)
data = fashion()
labels = data.test_labels.numpy()
view = run_view(run_id)
codes = view.codes
st.caption(
    f"{codes.shape[1]}-dimensional codes of the test set ({'latent vectors' if run.config.kind == 'autoencoder' else 'penultimate features'})."
)

points = view.projection(latent_sections.PROJECTIONS[method], count)
map_column, detail_column = st.columns([3, 1])
with map_column:
    event = st.echarts_chart(
        latent_plots.latent_map(points, labels[:count], test_image_urls(count)),
        key=f"latent_map:{run_id}:{method}:{count}",  # a new map starts with no selection
        on_select="rerun",
        height=560,
        alt=f"{method} map of {count:,} test images' codes, coloured by class",
    )
selected = events.selected_rows(event, count)
with detail_column:
    st.markdown(
        f"**{len(selected)} selected image{'s' if len(selected) > 1 else ''}**"
        if selected
        else "Hover a point to see its garment; click points, or lasso them with the tools above the "
        "map, to list their images here (double-click the map to clear)."
    )
    if selected:
        classes = pd.Series([CLASS_NAMES[int(data.test_labels[i])] for i in selected]).value_counts()
        st.caption(", ".join(f"{name} {n}" for name, n in classes.items()))
        shown = selected[:48]
        st.image(
            plots.mosaic(data.test_images[shown, 0].numpy(), columns=min(6, len(shown))),
            clamp=True,
            width="stretch",
        )
        st.caption(
            f"Test images {', '.join(f'#{i}' for i in shown[:6])}{' …' if len(selected) > 6 else ''}"
            + (f" (the first 48 of {len(selected)})" if len(selected) > 48 else "")
        )

if beside in choices and beside != label:
    latent_sections.beside(choices[beside], beside, method, count)
latent_sections.timelapse(run, runs)
if not get_spec(run.config.model).reconstructs:
    st.info("Walking between images and decoding codes needs a decoder: pick an autoencoder to use them.")
    st.stop()
if get_spec(run.config.model).samples:
    latent_sections.prior_samples(run)
latent_sections.atlas(run, runs, points, codes[:count], key=f"{run_id}:{method}:{count}")
latent_sections.boundary_walk(run, runs, codes, selected)
latent_sections.directions(run, codes)
