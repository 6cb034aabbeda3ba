"""Hyperparameter sweep: pick a model, the knobs to vary and their ranges, a budget and a sampler;
the trials queue as ordinary jobs (each an ordinary cached run, validated on a holdout split of
the training images), pruned early by Optuna's median pruner."""

import streamlit as st

from fmnist_core.models import get_spec, list_models
from fmnist_core.studies import hpsearch
from fmnist_core.studies.hpqueue import QueuedSweep
from ui import hpsweep_sections, keys
from ui.jobs import job_queue
from ui.people import is_admin, me
from ui.resources import run_cache, sweep_drivers
from ui.widgets import TRAINING_IMAGES

st.title("Hyperparameter sweep")
st.caption(
    "Engineers choose settings with sweeps: many runs over ranges, the weak ones stopped early. Each trial "
    "is an ordinary run (in the queue, stoppable, cached: a config already trained costs nothing), scored on "
    "10% of the training images held out; the test set is measured once per finished trial and shown apart."
)
models = [name for name in list_models() if hpsweep_sections.sweepable(name)]
with st.sidebar:
    st.header("Sweep")
    model = st.selectbox(
        "Architecture",
        models,
        key="sweep:model",
        format_func=lambda n: f"{n} — {get_spec(n).description.split(':')[0]}",
    )
available = hpsweep_sections.knobs(model)
left, right = st.columns(2)
with left:
    st.subheader("What to vary")
    names = st.multiselect(
        "Knobs",
        list(available),
        default=[n for n in ("lr", "dropout") if n in available] or list(available)[:1],
        format_func=lambda n: available[n].label,
        key=f"sweep:knobs:{model}",
    )
    params = [hpsweep_sections.range_widget(available[n], f"sweep:range:{model}:{n}") for n in names]
with right:
    st.subheader("Budget")
    trials = st.number_input("Trials", 2, 500, 20, key="sweep:trials")
    minutes = st.number_input("At most minutes (0: no limit)", 0, 24 * 60, 0, key="sweep:minutes")
    epochs = st.slider("Epochs per trial", 1, 30, 4, key="sweep:epochs")
    images = st.selectbox("Training images per trial", list(TRAINING_IMAGES), index=2, key="sweep:images")
    sampler = st.radio(
        "Sampler",
        hpsearch.SAMPLERS,
        horizontal=True,
        key="sweep:sampler",
        help="tpe: Bayesian, learns from finished trials; random; grid: 4 values per range",
    )
    prune = st.toggle("Stop weak trials early (median pruner)", True, key="sweep:prune")

plan = None
if names and all(params):
    fixed = (("epochs", epochs), ("train_subset", TRAINING_IMAGES[images]))
    name = hpsearch.plan_name(model, params, sampler, "median" if prune else "none", dict(fixed))
    try:
        plan = hpsearch.SweepPlan(
            name, model, tuple(params), int(trials), sampler, "median" if prune else "none", fixed
        )
    except ValueError as error:
        st.error(f"This sweep cannot run: {error}")
else:
    st.info("Pick at least one knob, each with two different ends or two choices.")
drivers = sweep_drivers()
if plan is not None:
    running = drivers.get(plan.name)
    if running is not None and running.active:
        st.info(f"Sweep {plan.name} is running; its trials are below.")
    elif st.button(
        f"Start sweep {plan.name} ({trials} trials)", type="primary", icon=":material/play_arrow:"
    ):
        try:
            drivers[plan.name] = QueuedSweep(plan, job_queue(), minutes or None, owner=me()).start()
        except ValueError as error:  # its journal cannot be read
            st.error(f"This sweep cannot start: {error}")
        else:
            st.session_state[keys.SWEEP_OPEN] = plan.name
            st.session_state.pop(keys.SWEEP_SHOWN, None)  # the picker below opens the sweep just started
            st.rerun()  # the page as it is now: the sweep running, its progress live

st.divider()
kept = hpsearch.sweep_names(run_cache())
if not kept:
    st.caption("No sweep yet.")
    st.stop()
opened = st.session_state.get(keys.SWEEP_OPEN)
shown = st.selectbox("Sweep", kept, index=kept.index(opened) if opened in kept else 0, key=keys.SWEEP_SHOWN)
st.session_state[keys.SWEEP_OPEN] = shown


@st.fragment(run_every=2.0)
def progress(name: str) -> None:
    study = hpsearch.open_study(run_cache(), name)
    plan = study.user_attrs.get("plan", {})
    table = hpsweep_sections.trials_frame(study)
    driver = sweep_drivers().get(name)
    states = table["state"].value_counts() if not table.empty else {}
    done = int(states.get("complete", 0) + states.get("pruned", 0) + states.get("fail", 0))
    st.progress(
        min(done / max(plan.get("trials", 1), 1), 1.0),
        f"{done} of {plan.get('trials')} trials: {int(states.get('complete', 0))} finished, "
        f"{int(states.get('pruned', 0))} pruned, {int(states.get('fail', 0))} failed or stopped",
    )
    skipped = hpsweep_sections.epochs_skipped(table, plan)
    if skipped:
        st.caption(
            f"The pruner spared {skipped[0]} of {skipped[1]} epochs the finished and pruned trials would have trained."
        )
    if driver is not None and driver.active:
        if (is_admin() or driver.owner == me()) and st.button(
            "Stop this sweep", icon=":material/stop:", key=f"sweep:stop:{name}"
        ):
            driver.stop()
        st.caption(driver.events[-1] if driver.events else "Asking for the first trial...")
    elif driver is not None and driver.error:
        st.error(f"The sweep stopped: {driver.error}")
    if not table.empty:
        st.dataframe(
            table,
            hide_index=True,
            column_config={
                "value": st.column_config.NumberColumn(plan.get("metric", "value"), format="%.4f"),
                "test_accuracy": st.column_config.NumberColumn("test accuracy (apart)", format="%.4f"),
            },
        )
    if (driver is None or not driver.active) and st.button(
        "Explore these trials", icon=":material/query_stats:"
    ):
        st.switch_page("app_pages/explorer.py")


progress(shown)
