"""Inside the network: any cached run's layers for one image, each unit's weights and the test
images that excite it most, a layer's dictionary, dead units, the layer table; a second run beside
it, its units matched to this one's."""

import streamlit as st

from fmnist_core.views import inside
from ui import address_sections, inside_sections, keys, layer_sections, picture_sections, unit_sections
from ui.queue_panels import waiting_for
from ui.resources import load_run
from ui.runs import run_label, run_view, runs_table
from ui.widgets import kept

st.title("Inside the network")
link_notes = st.container()  # what is wrong with the page's address, if anything (filled at the end)
runs = runs_table()
if runs.empty:
    waiting_for(kinds=("autoencoder", "classifier"), otherwise="No trained model yet: train any model first.")
    st.stop()

labels = {run_label(row): row["run_id"] for _, row in runs.iterrows()}
by_id = {run_id: label for label, run_id in labels.items()}
with st.sidebar:
    st.header("Inside the network")
    address_sections.read_address(labels)  # once a session: ?run=ID&layer=NAME&unit=K
    if st.session_state.get(keys.INSIDE_RUN) not in labels:  # the run last trained or picked
        st.session_state[keys.INSIDE_RUN] = next(
            (
                by_id[st.session_state[keys.picked(c)]]
                for c in ("classifies", "reconstructs")
                if st.session_state.get(keys.picked(c)) in by_id
            ),
            next(iter(labels)),
        )
    chosen = st.selectbox("Run", list(labels), key=keys.INSIDE_RUN)
    address_sections.read_beside(labels, chosen)  # once a session: ?beside=ID
    if st.session_state[keys.INSIDE_BESIDE] == chosen:
        st.session_state[keys.INSIDE_BESIDE] = "(none)"
    beside = st.selectbox(
        "Beside it (the same image, layer by layer)",
        ["(none)"] + [label for label in labels if label != chosen],
        key=keys.INSIDE_BESIDE,
        help="E.g. the frozen and the fine-tuned classifier on one encoder: their encoders' layers side by side.",
    )
    address_sections.write_beside(labels[beside] if beside != "(none)" else None)
    shared = kept(
        st.toggle,
        "One colour scale per layer",
        "inside:shared",
        True,
        help="On: a layer's channels share a scale, so a faint channel looks faint. Off: each channel "
        "is stretched to its own range, to see its pattern.",
    )

run = load_run(labels[chosen])
other = load_run(labels[beside]) if beside != "(none)" else None
st.caption(
    "Every layer's output for one image, as the model computes it (forward hooks on the model as "
    "its report wrote it). A unit's top images are over the 10,000 test images, counted once per run."
)
image, what = inside_sections.pick_image(run)
if image is None:
    st.stop()
for shown in (run, other):
    if shown is not None:
        inside_sections.count_units(shown.run_id)
activity = run_view(run.run_id).activity
for warning in inside.warnings(run, activity):
    st.warning(warning, icon=":material/warning:")

passes = [inside.image_pass(shown, image) for shown in (run, other) if shown is not None]
names = [f"{shown.config.model} {shown.run_id[:6]}" for shown in (run, other) if shown is not None]
picture, answer = st.columns([1, 3])
picture.image(image, caption=what, width=140, clamp=True)
if passes[0].probabilities is not None:
    answer.metric("The model's answer", inside.answer(passes[0].probabilities))

layers = activity.layers
other_layers = run_view(other.run_id).activity.layers if other is not None else []
pairs = inside.aligned(layers, other_layers) if other is not None else [(layer,) for layer in layers]
tabs = ["Every layer", address_sections.UNIT_TAB, "Dictionary", "Dead units", "Layer table"]
tabs += ["Matched units"] if other is not None else []
address_sections.check_tab(tabs)
# in the address; a click reruns, so that the costlier tabs (a layer's NMF, its matching) run when open
every, close, features, dead, table, *matched = st.tabs(
    tabs,
    key=keys.INSIDE_TAB,
    bind="query-params",
    on_change="rerun",
    default=address_sections.unit_tab_default(),
)
with every:
    inside_sections.every_layer(passes, pairs, shared, names)
with close:
    address_sections.follow_address(run.run_id, layers)
    layer = address_sections.pick_layer(run.run_id, layers)
    picture_sections.every_picture(run.run_id, layer, activity.dead(layer.name) if layer.rectified else None)
    output = passes[0].outputs[layer.name]
    unit = unit_sections.pick_unit(run.run_id, layer, output, shared)
    address_sections.write_address(run.run_id, layer, unit)
    unit_sections.unit_up_close(run, activity, layer, unit, output, shared, feeding=image)
    twin = dict(pair for pair in pairs if len(pair) == 2 and pair[0] is not None).get(layer)
    if other is not None and twin is not None:  # the same unit across runs: by what it does, not its index
        match = run_view(run.run_id).matches(layer.name, other.run_id, twin.name).iloc[unit]
        if match["match"] is None or match["match"] != match["match"]:
            st.caption(f"No match in {names[1]}: this unit does not vary over the test images.")
        else:
            found = int(match["match"])
            title = f"Its match in {names[1]}: unit {found} of {twin.name}, correlation {match['correlation']:.2f}"
            clear = layer_sections.clear_match(match["correlation"], match["runner_up"])
            margin = "" if clear else ": as close, not a clear match"
            with st.expander(f"{title} (the next best {match['runner_up']:.2f}{margin})", expanded=True):
                unit_sections.unit_up_close(
                    other, run_view(other.run_id).activity, twin, found, passes[1].outputs[twin.name], shared
                )
if features.open:
    with features:
        layer_sections.dictionary(run, layers, layer)
if matched and matched[0].open:
    with matched[0]:
        layer_sections.matching(run, other, pairs, names, layer)
with dead:
    inside_sections.dead_units(run, activity)
    if other is not None:
        st.markdown(f"**{names[1]}**")
        inside_sections.dead_units(other, run_view(other.run_id).activity)
with table:
    inside_sections.layer_table(run)
address_sections.show_notes(link_notes)
