"""Latent space: the test set's codes in 2-D, walks between two images, sliders along the main directions."""

import numpy as np
import pandas as pd
import streamlit as st

from fmnist_core import analysis, views
from fmnist_core.data import CLASS_NAMES
from ui import events, plots
from ui.navigation import enter_through_app
from ui.state import (
    fashion,
    load_run,
    projection,
    run_label,
    runs_table,
    stamp,
    test_codes,
    test_image_urls,
    test_probabilities,
)
from ui.widgets import kept

enter_through_app()

st.title("Latent space")
runs = runs_table()
if runs.empty:
    st.info("No trained model yet: train an autoencoder or a classifier first.")
    st.page_link("pages/autoencoder.py", label="Go to the Autoencoder page", icon=":material/compress:")
    st.stop()
# Autoencoders first: only they can decode, which the walks and sliders below need.
ordered = runs.assign(decoder=runs["model"] != "conv_autoencoder").sort_values("decoder", kind="stable")
choices = {run_label(row): row["run_id"] for _, row in ordered.iterrows()}
preferred = st.session_state.get("selected_autoencoder")
labels = list(choices)
start = next((label for label, rid in choices.items() if rid == preferred), labels[0])
with st.sidebar:
    st.header("Latent space")
    label = kept(st.selectbox, "Model", "latent:run", start, options=labels)
    if label not in choices:
        label = labels[0]
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
run_id = choices[label]
run = load_run(run_id)
data = fashion()
version = stamp(run_id)
codes = test_codes(run_id, version)
st.caption(
    f"{codes.shape[1]}-dimensional codes of the test set ({'latent vectors' if run.config.kind == 'autoencoder' else 'penultimate features'})."
)

points = projection(run_id, {"PCA": "pca", "t-SNE": "tsne", "UMAP": "umap"}[method], count, version)
map_column, detail_column = st.columns([3, 1])
with map_column:
    event = st.echarts_chart(
        plots.latent_map(points, data.test_labels.numpy()[:count], test_image_urls(count)),
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

if run.config.kind != "autoencoder":
    st.info("Walking between images and decoding codes needs a decoder: pick an autoencoder to use them.")
    st.stop()

st.subheader("Walk across a class boundary")
classifiers = runs[runs["model"] != "conv_autoencoder"].head(4)  # the best four (runs_table's order)
labels = data.test_labels.numpy()
cells = {"two test images of my choice": None}
if not classifiers.empty:
    judge = classifiers.iloc[0]["run_id"]
    probabilities = test_probabilities(judge, stamp(judge))
    predictions = probabilities.argmax(1)
    matrix = analysis.confusion_matrix(labels, predictions)
    np.fill_diagonal(matrix, 0)
    for flat in np.argsort(-matrix, axis=None)[:8]:  # the eight commonest mistakes
        true, predicted = divmod(int(flat), 10)
        label = f"{CLASS_NAMES[true]} taken for {CLASS_NAMES[predicted]} ({matrix[true, predicted]} images)"
        cells[label] = (true, predicted)
chosen = st.selectbox(
    "Start from",
    list(cells),
    index=1 if len(cells) > 1 and not selected else 0,
    help="A confusion cell of the best classifier: its surest mistake, walked to the nearest image "
    "it gets right of the class it chose.",
)
pair = None
if cells[chosen] is not None:
    pair = views.confusion_pair(labels, predictions, probabilities.max(1), codes, *cells[chosen])
left, middle, right = st.columns(3)
default_first, default_second = pair or (
    selected[0] if selected else 0,
    selected[1] if len(selected) > 1 else 1,
)
first = left.number_input(
    "From test image",
    0,
    len(data.test_images) - 1,
    value=default_first,
    key=f"walk:from:{chosen}:{default_first}",
)
second = middle.number_input(
    "To test image",
    0,
    len(data.test_images) - 1,
    value=default_second,
    key=f"walk:to:{chosen}:{default_second}",
)
steps = right.slider("Steps", 3, 16, 11)
walk = views.boundary_walk(
    run,
    data.test_images[first, 0].numpy(),
    data.test_images[second, 0].numpy(),
    {run_label(row): load_run(row["run_id"]) for _, row in classifiers.iterrows()},
    steps,
)
st.caption(
    f"From #{first} ({CLASS_NAMES[labels[first]]}) to #{second} ({CLASS_NAMES[labels[second]]}). "
    "Top: the straight line between their codes, decoded; below: the plain blend of their pixels."
)
st.plotly_chart(
    plots.image_rows(
        {"code path": walk.decoded, "pixel blend": walk.blended}, [f"{w:.2f}" for w in walk.weights]
    ),
    config={"displayModeBar": False},
)
if walk.decoded_probabilities:
    st.plotly_chart(plots.walk_probabilities(walk), config={"displayModeBar": False})
    flips = []
    for name in walk.decoded_probabilities:
        row = {"classifier": name}
        for path, probabilities_on_path in (
            ("code path", walk.decoded_probabilities[name]),
            ("pixel blend", walk.blended_probabilities[name]),
        ):
            flip = views.flip_point(walk.weights, probabilities_on_path)
            row[path] = f"at {flip[0]:.2f} → {CLASS_NAMES[flip[1]]}" if flip else "no flip"
        flips.append(row)
    st.dataframe(pd.DataFrame(flips), hide_index=True)
    st.caption(
        "Where each classifier's answer first changes along each path (the weight at which the new "
        "class overtakes the one it gave at the start). Decoded images stay garment-like, so the code "
        "path asks where the *model's* boundary lies; the pixel blend passes through double exposures."
    )
else:
    st.info("Train a classifier to see where along the walk its answer flips.")

st.subheader("Move along the main directions of the code")
mean, directions, spread = analysis.principal_directions(codes, 5)
columns = st.columns([2, 1])
with columns[0]:
    amounts = [
        st.slider(f"Direction {i + 1} (σ)", -3.0, 3.0, 0.0, 0.25, key=f"direction:{i}")
        for i in range(len(directions))
    ]
code = mean + sum(a * s * d for a, s, d in zip(amounts, spread, directions, strict=True))
with columns[1]:
    st.image(
        np.kron(analysis.decode(run.model, code[None])[0], np.ones((8, 8))), clamp=True, caption="decoded"
    )
