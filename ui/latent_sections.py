"""The Latent space page's sections below its map, each drawn from what the core returns: the
training time-lapse, the latent atlas, the walk across a class boundary, the main directions of
the code and, for a model that samples, new garments from its prior."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from fmnist_core import analysis, views
from fmnist_core.data.fashion import CLASS_NAMES
from fmnist_core.runs.trained import TrainedRun, frozen_sibling
from ui import events, latent_plots, panels, plots
from ui.resources import fashion, load_run, test_image_urls
from ui.runs import run_label, run_view, runs_that

PROJECTIONS = {
    "PCA": "pca",
    "t-SNE": "tsne",
    "UMAP": "umap",
}  # the sidebar's names: analysis.latent_projection's


def beside(run_id: str, label: str, method: str, count: int) -> None:
    """A second model's map of the same test images in the same projection (a VAE beside the conv
    autoencoder: how the KL term gathers the codes round the origin)."""
    st.subheader("Beside it")
    st.caption(label)
    points = run_view(run_id).projection(PROJECTIONS[method], count)
    labels = fashion().test_labels.numpy()[:count]
    figure = latent_plots.latent_map(points, labels, test_image_urls(count), selectable=False)
    st.echarts_chart(
        figure, height=480, key=f"beside:{run_id}:{method}:{count}", alt=f"{method} map of {label}"
    )


def timelapse(run: TrainedRun, runs: pd.DataFrame) -> None:
    """The codes of fixed test images as training went; an encoder classifier beside its sibling."""
    st.subheader("Training time-lapse")
    frames = views.timelapse(run.history)
    if frames is None:
        st.caption(
            "This run was trained before the lab kept time-lapse snapshots: train it again to see one."
        )
        return
    players = {run_label(runs[runs["run_id"] == run.run_id].iloc[0]): frames}
    sibling = frozen_sibling(run.config)
    if sibling is not None and sibling.run_id in set(runs["run_id"]):
        frozen = run.config.settings["freeze_encoder"]
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
        key=f"timelapse:{run.run_id}",
    )
    labels = fashion().test_labels.numpy()
    for column, (name, player) in zip(st.columns(len(players)), players.items(), strict=True):
        sample = len(player.maps[frame])  # the first 1,000 test images, or the run's scored ones if fewer
        with column:
            if len(players) > 1:
                st.markdown(f"**{name}**")
            figure = latent_plots.latent_map(
                player.maps[frame],
                labels[:sample],
                test_image_urls(sample),
                bounds=player.bounds,
                selectable=False,
            )
            alt = f"the codes of {sample:,} test images at this moment of training"
            st.echarts_chart(figure, height=420, key=f"timelapse_map:{name}", alt=alt)
            st.plotly_chart(latent_plots.timelapse_knn(player.at, player.knn, frame), key=f"knn:{name}")
    if frames.reconstructions[frame] is not None:
        moment = "before training" if frames.at[frame] == 0 else f"at epoch {frames.at[frame]:g}"
        panels.snapshot_reconstructions(frames.reconstructions[frame], moment)
    elif frames.at[frame] >= 1:  # a classifier: its validation confusion after that epoch
        panels.epoch_snapshot(run.history, int(frames.at[frame]), key=f"timelapse:{run.run_id}")
    st.caption(
        f"PCA maps of the codes of the first {sample:,} test images, each turned to match the last "
        "(orthogonal Procrustes) so the picture does not spin; the curve is how well 5 nearest "
        "neighbours in code space tell the classes apart."
    )


def atlas(run: TrainedRun, runs: pd.DataFrame, points: np.ndarray, codes: np.ndarray, key: str) -> None:
    """The map cut into cells, each drawn as the decoder's image of its images' mean code."""
    st.subheader("Latent atlas")
    data = fashion()
    side, cell_column = st.columns([3, 1])
    with cell_column:
        size = st.slider("Cells a side", 6, 24, 12, key="atlas:size")
        judges = {"no classifier": None} | {
            run_label(row): row["run_id"] for _, row in runs_that("classifies", runs).iterrows()
        }
        judge = st.selectbox(
            "Tint by the class", list(judges), index=min(1, len(judges) - 1), key="atlas:judge"
        )
    found = views.latent_atlas(run, points, codes, size, load_run(judges[judge]) if judges[judge] else None)
    bounds = tuple(
        float(v) for v in (points[:, 0].min(), points[:, 0].max(), points[:, 1].min(), points[:, 1].max())
    )
    with side:
        picked = st.echarts_chart(
            latent_plots.atlas(found, bounds, size),
            height=600,
            key=f"atlas:{key}:{size}:{judge}",
            on_select="rerun",
            alt="the latent map cut into cells, each drawn as the decoder's image of its mean code",
        )
    with cell_column:
        clicked = events.selected_rows(picked, len(found.cells), series=1)
        if not clicked:
            st.caption(
                "Each cell of the map drawn as the decoder's image of its images' mean code, on a square "
                "tinted by the class the chosen classifier gives that image and sized by how many test "
                "images fall there. Click a cell to see its images: T-shirts, shirts and pullovers blur "
                "into each other where their cells meet."
            )
            return
        members = found.members[clicked[0]]
        st.markdown(f"**{int(found.cells.iloc[clicked[0]]['count'])} test images in this cell**")
        kinds = pd.Series([CLASS_NAMES[int(data.test_labels[i])] for i in members]).value_counts()
        st.caption(", ".join(f"{name} {n}" for name, n in kinds.items()))
        st.image(
            plots.mosaic(data.test_images[members[:36], 0].numpy(), columns=6), clamp=True, width="stretch"
        )


def walk_ends(runs: pd.DataFrame, codes: np.ndarray, selected: list[int]) -> tuple[str, int, int]:
    """The walk's start: a confusion cell of the best classifier (its pair of test images), or two
    test images of one's choice; returns the choice and the two images."""
    labels = fashion().test_labels.numpy()
    best = runs_that("classifies", runs).head(1)
    cells: dict[str, tuple | None] = {"two test images of my choice": None}
    if not best.empty:
        probabilities = run_view(best.iloc[0]["run_id"]).probabilities
        predictions = probabilities.argmax(1)
        for true, predicted, count in views.commonest_mistakes(labels, predictions, 8):
            cells[f"{CLASS_NAMES[true]} taken for {CLASS_NAMES[predicted]} ({count} images)"] = (
                true,
                predicted,
            )
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
    return (chosen, *(pair or (selected[0] if selected else 0, selected[1] if len(selected) > 1 else 1)))


def boundary_walk(run: TrainedRun, runs: pd.DataFrame, codes: np.ndarray, selected: list[int]) -> None:
    """Decoded codes on the line between two test images, beside their pixel blend, and where the
    best classifiers' answers flip along each."""
    st.subheader("Walk across a class boundary")
    data = fashion()
    labels = data.test_labels.numpy()
    chosen, default_first, default_second = walk_ends(runs, codes, selected)
    left, middle, right = st.columns(3)
    last = len(data.test_images) - 1
    first = left.number_input(
        "From test image", 0, last, value=default_first, key=f"walk:from:{chosen}:{default_first}"
    )
    second = middle.number_input(
        "To test image", 0, last, value=default_second, key=f"walk:to:{chosen}:{default_second}"
    )
    steps = right.slider("Steps", 3, 16, 11)
    classifiers = runs_that("classifies", runs).head(4)  # the best four (runs_table's order)
    judges = {run_label(row): load_run(row["run_id"]) for _, row in classifiers.iterrows()}
    walk = views.boundary_walk(
        run, data.test_images[first, 0].numpy(), data.test_images[second, 0].numpy(), judges, steps
    )
    st.caption(
        f"From #{first} ({CLASS_NAMES[labels[first]]}) to #{second} ({CLASS_NAMES[labels[second]]}). "
        "Top: the straight line between their codes, decoded; below: the plain blend of their pixels."
    )
    rows = {"code path": walk.decoded, "pixel blend": walk.blended}
    st.plotly_chart(
        plots.image_rows(rows, [f"{w:.2f}" for w in walk.weights]), config={"displayModeBar": False}
    )
    if not walk.decoded_probabilities:
        st.info("Train a classifier to see where along the walk its answer flips.")
        return
    figure = latent_plots.walk_probabilities(walk, int(labels[first]), int(labels[second]))
    st.plotly_chart(figure, config={"displayModeBar": False})
    st.dataframe(views.flip_table(walk), hide_index=True)
    st.caption(
        "Where each classifier's answer first changes along each path (the weight at which the new "
        "class overtakes the one it gave at the start). Decoded images stay garment-like, so the code "
        "path asks where the *model's* boundary lies; the pixel blend passes through double exposures."
    )


def directions(run: TrainedRun, codes: np.ndarray) -> None:
    """Sliders along the first principal directions of the test codes, decoded."""
    st.subheader("Move along the main directions of the code")
    mean, found, spread = analysis.principal_directions(codes, 5)
    sliders, picture = st.columns([2, 1])
    with sliders:
        amounts = [
            st.slider(f"Direction {i + 1} (σ)", -3.0, 3.0, 0.0, 0.25, key=f"direction:{i}")
            for i in range(len(found))
        ]
    code = mean + sum(a * s * d for a, s, d in zip(amounts, spread, found, strict=True))
    with picture:
        st.image(
            np.kron(analysis.decode(run.model, code[None])[0], np.ones((8, 8))), clamp=True, caption="decoded"
        )


def prior_samples(run: TrainedRun) -> None:
    """New garments: codes drawn from the prior N(0, I), decoded."""
    st.subheader("New garments from the prior")
    controls, grid = st.columns([1, 3])
    with controls:
        count = st.select_slider("Samples", options=(8, 16, 32, 64), value=32, key="prior:count")
        seed = st.number_input("Draw (a seed)", min_value=0, value=0, step=1, key="prior:seed")
        st.caption(
            "Codes drawn from N(0, I), the prior the KL term pulls the codes towards, through the decoder: "
            "garments no test image is. A larger β makes them more garment-like and blurrier."
        )
    with grid:
        images = analysis.prior_samples(run.model, count, int(seed))
        st.image(plots.mosaic(images, columns=8), clamp=True, width="stretch")
