"""Latent space: the test set's codes in 2-D, walks between two images, sliders along the main directions."""

import numpy as np
import pandas as pd
import streamlit as st

from fmnist_core import analysis, views
from fmnist_core.data import CLASS_NAMES
from ui import events, panels, plots
from ui.navigation import enter_through_app
from ui.panels import waiting_for
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
    waiting_for(
        kinds=("autoencoder", "classifier"),
        otherwise="No trained model yet: train an autoencoder or a classifier first.",
    )
    st.page_link("pages/autoencoder.py", label="Go to the Autoencoder page", icon=":material/compress:")
    st.stop()
# Autoencoders first: only they can decode, which the walks and sliders below need.
ordered = runs.assign(decoder=runs["model"] != "conv_autoencoder").sort_values("decoder", kind="stable")
choices = {run_label(row): row["run_id"] for _, row in ordered.iterrows()}
preferred = st.session_state.get("selected_autoencoder")
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
run_id = choices[label]
run = load_run(run_id)
data = fashion()
labels = data.test_labels.numpy()
version = stamp(run_id)
codes = test_codes(run_id, version)
st.caption(
    f"{codes.shape[1]}-dimensional codes of the test set ({'latent vectors' if run.config.kind == 'autoencoder' else 'penultimate features'})."
)

points = projection(run_id, {"PCA": "pca", "t-SNE": "tsne", "UMAP": "umap"}[method], count, version)
map_column, detail_column = st.columns([3, 1])
with map_column:
    event = st.echarts_chart(
        plots.latent_map(points, labels[:count], test_image_urls(count)),
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

st.subheader("Training time-lapse")
frames = views.timelapse(run.history)
if frames is None:
    st.caption("This run was trained before the lab kept time-lapse snapshots: train it again to see one.")
else:
    # An encoder classifier plays beside its sibling (the same encoder frozen / fine-tuned), if cached.
    players = {run_label(runs[runs["run_id"] == run_id].iloc[0]): frames}
    if run.config.model == "encoder_classifier":
        frozen = run.config.settings["freeze_encoder"]
        sibling = run.config.replace(settings={**run.config.settings, "freeze_encoder": not frozen})
        if sibling.run_id in set(runs["run_id"]):
            other = views.timelapse(load_run(sibling.run_id).history)
            if other is not None and len(other.at) == len(frames.at):
                players = {
                    ("frozen encoder" if frozen else "fine-tuned encoder"): frames,
                    ("fine-tuned encoder" if frozen else "frozen encoder"): other,
                }
    frame = st.select_slider(
        "Moment of training",
        options=list(range(len(frames.at))),
        value=len(frames.at) - 1,
        format_func=lambda i: "before training" if frames.at[i] == 0 else f"epoch {frames.at[i]:g}",
        key=f"timelapse:{run_id}",
    )
    sample = analysis.TIMELAPSE_IMAGES
    for column, (name, player) in zip(st.columns(len(players)), players.items(), strict=True):
        with column:
            if len(players) > 1:
                st.markdown(f"**{name}**")
            st.echarts_chart(
                plots.latent_map(
                    player.maps[frame],
                    labels[:sample],
                    test_image_urls(sample),
                    bounds=player.bounds,
                    selectable=False,
                ),
                height=420,
                key=f"timelapse_map:{name}",
                alt=f"the codes of {sample:,} test images at this moment of training",
            )
            st.plotly_chart(plots.timelapse_knn(player.at, player.knn, frame), key=f"knn:{name}")
    if frames.reconstructions[frame] is not None:
        moment = "before training" if frames.at[frame] == 0 else f"at epoch {frames.at[frame]:g}"
        panels.snapshot_reconstructions(frames.reconstructions[frame], moment)
    elif frames.at[frame] >= 1:  # a classifier: its validation confusion after that epoch
        panels.epoch_snapshot(run.history, int(frames.at[frame]), key=f"timelapse:{run_id}")
    st.caption(
        f"PCA maps of the codes of the first {sample:,} test images, each turned to match the last "
        "(orthogonal Procrustes) so the picture does not spin; the curve is how well 5 nearest "
        "neighbours in code space tell the classes apart."
    )

if run.config.kind != "autoencoder":
    st.info("Walking between images and decoding codes needs a decoder: pick an autoencoder to use them.")
    st.stop()

st.subheader("Latent atlas")
atlas_columns = st.columns([3, 1])
with atlas_columns[1]:
    size = st.slider("Cells a side", 6, 24, 12, key="atlas:size")
    judges = {"no classifier": None} | {
        run_label(row): row["run_id"] for _, row in runs[runs["model"] != "conv_autoencoder"].iterrows()
    }
    judge_label = st.selectbox(
        "Tint by the class", list(judges), index=min(1, len(judges) - 1), key="atlas:judge"
    )
atlas = views.latent_atlas(
    run,
    points,
    codes[:count],
    size,
    load_run(judges[judge_label]) if judges[judge_label] else None,
)
bounds = (
    *(float(v) for v in (points[:, 0].min(), points[:, 0].max(), points[:, 1].min(), points[:, 1].max())),
)
with atlas_columns[0]:
    picked = st.echarts_chart(
        plots.atlas(atlas, bounds, size),
        height=600,
        key=f"atlas:{run_id}:{method}:{count}:{size}:{judge_label}",
        on_select="rerun",
        alt="the latent map cut into cells, each drawn as the decoder's image of its mean code",
    )
with atlas_columns[1]:
    clicked = events.selected_rows(picked, len(atlas.cells), series=1)
    if clicked:
        cell = atlas.cells.iloc[clicked[0]]
        members = atlas.members[clicked[0]]
        st.markdown(f"**{int(cell['count'])} test images in this cell**")
        kinds = pd.Series([CLASS_NAMES[labels[i]] for i in members]).value_counts()
        st.caption(", ".join(f"{name} {n}" for name, n in kinds.items()))
        st.image(
            plots.mosaic(data.test_images[members[:36], 0].numpy(), columns=6), clamp=True, width="stretch"
        )
    else:
        st.caption(
            "Each cell of the map drawn as the decoder's image of its images' mean code, on a square "
            "tinted by the class the chosen classifier gives that image and sized by how many test "
            "images fall there. Click a cell to see its images: T-shirts, shirts and pullovers blur "
            "into each other where their cells meet."
        )

st.subheader("Walk across a class boundary")
classifiers = runs[runs["model"] != "conv_autoencoder"].head(4)  # the best four (runs_table's order)
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
    help="A confusion cell of the best classifier: from an image of the true class it gets right to "
    "the image of the class it chose that it is surest of, both near its surest mistake of that cell: "
    "the walk crosses its boundary there.",
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
    st.plotly_chart(
        plots.walk_probabilities(walk, int(labels[first]), int(labels[second])),
        config={"displayModeBar": False},
    )
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
