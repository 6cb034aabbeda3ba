"""The Suspect data page's sections, each drawn from what the core found: near-duplicates, likely
mislabels, the training map (dataset cartography), and training without the flagged images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from fmnist_core.analysis import suspects
from fmnist_core.data import exclusions
from fmnist_core.data.fashion import CLASS_NAMES
from fmnist_core.studies import suspects as suspect_study
from ui import events, latent_plots, plots
from ui.jobs import job_queue
from ui.panels import train_missing
from ui.people import enqueue
from ui.queue_panels import waiting_for
from ui.resources import fashion, run_cache

MAP_POINTS = 3000  # the map's points: a random sample of the images the run trained on


def pair_images(pairs: pd.DataFrame, data) -> tuple[np.ndarray, list[str]]:
    """The images of each pair side by side (first, second, ...) and a caption per pair."""
    images, captions = [], []
    for _, pair in pairs.iterrows():
        splits = ("test", "train") if pair["splits"] == "test-train" else (pair["splits"],) * 2
        for split, column in zip(splits, ("first", "second"), strict=True):
            source = data.test_images if split == "test" else data.train_images
            images.append(source[int(pair[column]), 0].numpy())
        captions.append(
            f"{splits[0]} #{pair['first']} / {splits[1]} #{pair['second']} "
            f"({CLASS_NAMES[pair['first_label']]}, rms {pair['rms']:.4f})"
        )
    return np.stack(images), captions


def near_duplicates(pairs: pd.DataFrame, threshold: float) -> None:
    data = fashion()
    st.subheader("Near-duplicates")
    counts = pairs.groupby("splits").size()
    columns = st.columns(4)
    for column, (split, title) in zip(
        columns,
        [("train", "within train"), ("test", "within test"), ("test-train", "test ↔ train")],
        strict=False,
    ):
        chosen = pairs[pairs["splits"] == split]
        column.metric(
            f"Pairs {title}",
            int(counts.get(split, 0)),
            help=f"{int(chosen['identical'].sum())} byte-identical; {int((~chosen['same_label']).sum())} with two labels",
        )
    columns[3].metric("Byte-identical", int(pairs["identical"].sum()))
    st.caption(
        f"Two images count as one when their pixels differ by less than {threshold:.3f} (root mean "
        "square, pixels in 0..1). Every such pair is found: candidates are pruned in a 32-dimensional "
        "PCA space, where no distance is longer than in pixels, then measured in pixels. "
        "zalandoresearch/fashion-mnist#44 counted 43 duplicate pairs in train, 1 in test and 10 "
        "train-test overlaps."
    )
    if not pairs.empty:
        images, captions = pair_images(pairs.head(24), data)
        st.image(plots.mosaic(images, columns=12, scale=2), clamp=True)
        st.caption("Closest pairs first, side by side: " + " · ".join(captions[:12]))


def likely_mislabels(issues: pd.DataFrame, mislabels: np.ndarray, hard) -> None:
    data = fashion()
    st.subheader("Likely mislabels")
    first, second = st.columns(2)
    first.metric(
        "Labels doubted out of fold",
        len(issues),
        help="cleanlab's confident learning on out-of-fold predictions",
    )
    second.metric(
        "Flagged as mislabels",
        len(mislabels),
        help="Doubted out of fold and never learnt by the mapped classifier"
        if hard is not None
        else "Train the map's classifier to keep only those it never learnt either",
    )
    if len(issues):
        shown = issues[issues["index"].isin(mislabels)].head(40)
        st.image(
            plots.mosaic(data.train_images[np.array(shown["index"]), 0].numpy(), columns=10, scale=2),
            clamp=True,
        )
        st.caption(
            "The surest 40, worst first: "
            + " · ".join(
                f"#{row.index} labelled {CLASS_NAMES[row.label]}, looks like {CLASS_NAMES[row.suggested]}"
                for row in shown.head(12).itertuples(index=False)
            )
        )
        with st.expander("Where the doubted labels sit: labelled (rows) and looks like (columns)"):
            names = list(CLASS_NAMES)
            table = pd.crosstab(
                issues["label"].map(names.__getitem__), issues["suggested"].map(names.__getitem__)
            ).reindex(index=names, columns=names, fill_value=0)
            st.dataframe(table.rename_axis(index="labelled", columns="looks like"))


def training_map(map_, positions, flagged: np.ndarray, mapped_label) -> None:
    data, queue = fashion(), job_queue()
    train_labels = data.train_labels.numpy()
    st.subheader("How a classifier learnt each training image")
    if map_ is None:
        mapped = suspect_study.retrain_base(0, cartography=True)
        st.info(
            "The map needs a classifier that kept its confidence in every training image's label after "
            "each epoch: S3's network with cross-entropy and Adam, 15 epochs (about 40 s here)."
        )
        if any(job.run_id == mapped.run_id and job.active for job in queue.jobs()):
            waiting_for(run_ids=(mapped.run_id,))
        elif st.button("Train it", type="primary", icon=":material/play_arrow:") and enqueue([mapped]):
            st.rerun()
    else:
        for column, (region, count) in zip(st.columns(3), map_.region_counts().items(), strict=True):
            column.metric(region.capitalize(), count)
        count = min(MAP_POINTS, len(positions))  # a uniform sample: the map keeps the set's proportions
        rows_shown = np.sort(np.random.default_rng(0).choice(len(positions), count, replace=False))
        flagged_shown = int(np.isin(positions[rows_shown], flagged).sum())
        images_shown = positions[rows_shown]
        state = st.echarts_chart(
            latent_plots.latent_map(
                np.stack([map_.variability[rows_shown], map_.confidence[rows_shown]], 1),
                train_labels[images_shown],
                plots.image_urls(data.train_images[images_shown, 0].numpy()),
                numbers=images_shown,
                what="training image",
                axes=("variability (std of the confidence over epochs)", "confidence in the label (mean)"),
            ),
            key=f"suspects:map:{mapped_label}",
            on_select="rerun",
            height=520,
            alt="Each training image's mean confidence in its label against its variability over the epochs",
        )
        st.caption(
            f"{len(rows_shown):,} of the {len(positions):,} images it trained on (a random sample; {flagged_shown} "
            f"flagged ones among them), over {map_.epochs} epochs. Bottom: images the model never believed (hard to "
            "learn, where mislabels gather); right: images it changed its mind about (ambiguous); top "
            "left: easy. Click or lasso points to list them."
        )
        picked_rows = rows_shown[events.selected_rows(state, len(rows_shown))]
        if len(picked_rows):
            picked = positions[picked_rows]
            flagged_set = set(flagged.tolist())
            st.markdown(f"**{len(picked)} selected training image{'s' if len(picked) > 1 else ''}**")
            st.image(plots.mosaic(data.train_images[picked[:48], 0].numpy(), columns=12, scale=2), clamp=True)
            st.caption(
                " · ".join(
                    f"#{i} {CLASS_NAMES[train_labels[i]]}, confidence {map_.confidence[r]:.2f}"
                    + (" (flagged)" if i in flagged_set else "")
                    for i, r in zip(picked[:12], picked_rows[:12], strict=True)
                )
            )


def without_flagged(flagged: np.ndarray, mislabels: np.ndarray) -> None:
    cache = run_cache()
    st.subheader("Training without the flagged images")
    if len(flagged) == 0:
        st.info("Nothing is flagged: there is nothing to leave out.")
        return
    digest = exclusions.save_exclusion(cache.root, flagged)
    result = suspect_study.retrain_result(cache, digest)
    st.caption(
        f"{len(flagged)} training images flagged: {len(mislabels)} likely mislabels and the near-duplicates "
        "(the later copy of each pair within train, and every training image that repeats a test image). "
        f"The same classifier trained over {suspects.RETRAIN_SEEDS} seeds on all 60,000 images and "
        "without the flagged ones; test accuracy on all 10,000 test images."
    )
    st.dataframe(
        result.table,
        hide_index=True,
        column_config={
            "with_all": st.column_config.NumberColumn("all images", format="%.4f"),
            "without_flagged": st.column_config.NumberColumn("without the flagged", format="%.4f"),
        },
    )
    if result.verdict is not None:
        st.markdown(f"**Leaving them out raises test accuracy: {result.verdict}** ({result.detail})")
    else:
        configs = [config for pair in suspect_study.retrain_configs(digest) for config in pair]
        train_missing(configs, "of the comparison", f"suspects:{digest}")
