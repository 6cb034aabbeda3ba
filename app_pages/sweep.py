"""Latent size sweep: S0's question (how big must the code be?) asked from n=2 to n=512."""

import numpy as np
import streamlit as st

from fmnist_core import analysis
from fmnist_core.studies import sweep
from fmnist_core.studies.reports import Scale
from ui import events, plots
from ui.panels import train_missing
from ui.resources import fashion, load_run, run_cache
from ui.results import sweep_table
from ui.widgets import kept

SCALES = {
    "quick: 2 epochs on 10,000 images": Scale(epochs=0.2, train_subset=10_000),
    "the report's: 10 epochs on 60,000 images": Scale(),
}

st.title("Latent size sweep")
st.caption(
    "S0 compared latent sizes 64 to 512. Here its autoencoder (p=0.2, Adam) is trained at every n "
    "from 2 to 512, with its classifier on each encoder, frozen and fine-tuned. Beside them: PCA "
    "with k=n components (the linear baseline) and a logistic regression on the codes (what a "
    "linear read-out of the code knows about the class)."
)
with st.sidebar:
    st.header("Latent size sweep")
    scale_label = kept(st.radio, "Scale", "sweep:scale", list(SCALES)[0], options=list(SCALES))
points = sweep.latent_sweep(SCALES[scale_label])
cache = run_cache()
if not train_missing(sweep.sweep_configs(points), "of this sweep", f"sweep:{scale_label}"):
    st.caption("The chart fills in as they finish.")
table = sweep_table(points, scale_label)
event = st.plotly_chart(
    plots.sweep(table), on_select="rerun", selection_mode="points", key=f"sweep:{scale_label}"
)
st.dataframe(
    table.drop(columns="autoencoder_run"),
    hide_index=True,
    column_config={c: st.column_config.NumberColumn(format="%.4f") for c in table.columns if c != "n"},
)
chosen = events.clicked_x(event.selection if event else None)
trained = table[table["test_mse"].notna()]
if trained.empty:
    st.info("No autoencoder of the sweep is trained yet.")
    st.stop()
st.subheader("The same test images at every n")
if chosen is None:
    st.caption("Click a point of the chart to mark its n below.")
data = fashion()
shown = analysis.snapshot_indices(data.test_labels)[:8]
rows = {"original": data.test_images[shown, 0].numpy()}
for _, row in trained.iterrows():
    label = f"n={int(row['n'])}" + (" ◀" if chosen == int(row["n"]) else "")
    rows[label] = analysis.reconstructions(load_run(row["autoencoder_run"]).model, data.test_images[shown])
st.plotly_chart(plots.image_rows(rows), config={"displayModeBar": False})
if 2 in set(trained["n"].astype(int)):
    st.subheader("At n=2: the decoder over the plane")
    two = load_run(trained[trained["n"] == 2]["autoencoder_run"].iloc[0])
    codes = analysis.latent_codes(two.model, data.test_images[:2000])
    low, high = np.percentile(codes, [2, 98], axis=0)
    if np.allclose(low, high):
        st.warning(
            "At n=2 this autoencoder's code is the same for every test image (S0's ReLU on the code "
            "left both units at 0 during training): its decoder draws one image, whatever the input."
        )
        st.stop()
    grid = np.stack(np.meshgrid(np.linspace(low[0], high[0], 12), np.linspace(high[1], low[1], 12)), -1)
    images = analysis.decode(two.model, grid.reshape(-1, 2).astype(np.float32))
    st.image(plots.mosaic(images, columns=12, scale=2), clamp=True, width="stretch")
    st.caption(
        "The decoder's image of each point of a 12x12 grid over the codes' range (2nd to 98th "
        "percentile of the test images' codes): the whole of what a 2-number code can say."
    )
