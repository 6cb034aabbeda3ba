"""Explore runs: every cached run, or one sweep's trials, across their settings at once. Brush any
axis of the parallel coordinates; read each metric against each setting, which settings matter,
the best runs' curves, and runs that differ only by seed as mean ± std."""

import streamlit as st

from fmnist_core.studies import hpsearch
from fmnist_core.views import runs_explorer
from ui import compare_sections, explorer_sections, keys
from ui.resources import run_cache
from ui.results import hp_sweep, importance
from ui.runs import runs_table

st.title("Explore runs")
runs = runs_table(all_data=True)
sweeps = hpsearch.sweep_names(run_cache())
with st.sidebar:
    st.header("Explore runs")
    sources = ["every cached run", *sweeps]
    opened = st.session_state.get(keys.SWEEP_OPEN)
    source = st.selectbox(
        "Runs",
        sources,
        index=sources.index(opened) if opened in sources else 0,
        format_func=lambda s: s if s == sources[0] else f"the trials of sweep {s}",
        key="explorer:source",
    )
sweep = source if source != sources[0] else ""
if sweep:
    plan, table = hp_sweep(sweep)
    settings = [text.split("=")[0] for text in plan.get("params", [])]
    logs = explorer_sections.LOG_SETTINGS | {
        t.split("=")[0] for t in plan.get("params", []) if "log" in t.split(":")[-1]
    }
    table = table.assign(state=table["state"].where(table["state"] != "complete", "finished"))
    metric = plan.get("metric", "value")
    st.caption(
        f"Sweep **{sweep}**: {plan.get('model')} over {', '.join(plan.get('params', []))}, "
        f"{plan.get('sampler')} sampling, pruner {plan.get('pruner')}; it optimised {metric} on a holdout "
        "split of the training images. The test figures were measured once per finished trial, apart."
    )
else:
    table = runs
    if table.empty:
        st.info("No cached runs yet. Train a model, or start a sweep, and its runs appear here.")
        st.stop()
    with st.sidebar:
        models = table["model"].value_counts().index.tolist()  # the model with the most runs first
        picked = st.multiselect("Models", models, default=models[:1], key="explorer:models")
        text = st.text_input("Run id or setting contains", "", key="explorer:filter")
    table = runs_explorer.matching(table[table["model"].isin(picked)], text)
    settings = runs_explorer.varied(table)  # (the sweep's own settings above)
    logs = explorer_sections.LOG_SETTINGS
    metric = None
metrics = ([metric] if metric else []) + [m for m in runs_explorer.metrics_of(table) if m != metric]
if table.empty or not metrics:
    st.info("Nothing to explore here yet: these runs have no figures.")
    st.stop()
with st.sidebar:
    colour = st.selectbox("Colour by (and rank by)", metrics, key=f"explorer:colour:{sweep}")
    extra = ["state"] if sweep else []  # finished, pruned: an axis to brush too
    axes = st.multiselect(
        "Axes",
        [*(runs_explorer.varied(table) if sweep else settings), *extra, *metrics],
        default=[*settings, *extra, colour],
        key=f"explorer:axes:{sweep}",
    )
if not axes:
    st.info("Pick at least one axis in the sidebar.")
    st.stop()
scored = table.dropna(subset=[colour])
chosen = explorer_sections.brushed(scored, axes, colour, key=f"explorer:parallel:{sweep}", logs=logs)
if sweep:
    counts = table["state"].value_counts()
    st.caption(" · ".join(f"{count} {state}" for state, count in counts.items()))

view = st.segmented_control(
    "Look at",
    ["the chosen runs", "metric against setting", "importance", "best curves", "seeds"],
    default="the chosen runs",
    key="explorer:view",
)
if view == "the chosen runs":
    explorer_sections.open_run(chosen, colour)
elif view == "metric against setting":
    if settings:
        st.altair_chart(explorer_sections.against(scored, settings, metrics[:2], logs))
    else:
        st.info("No setting varies among these runs.")
elif view == "importance":
    try:
        shares = importance(scored, settings, colour, sweep)
        how = (
            "Optuna's fANOVA over the sweep's finished trials"
            if sweep
            else "a random forest's permutation importance"
        )
        st.altair_chart(explorer_sections.importance_chart(shares, f"What moves {colour}: {how}"))
    except ValueError as error:
        st.info(f"No importance yet: {error}.")
elif view == "best curves":
    cached = chosen[chosen["status"].eq("ok")] if "status" in chosen else chosen.iloc[0:0]
    best = runs_explorer.best_first(cached, colour).head(5)
    if best.empty:
        st.info("None of the chosen runs is a finished, cached run.")
    else:
        st.caption(f"The {len(best)} best chosen runs by {colour}.")
        compare_sections.overlays(best)
elif view == "seeds":
    groups = runs_explorer.seed_groups(chosen, [m for m in metrics if m in chosen])
    repeated = groups[groups["seeds"] > 1]
    if repeated.empty:
        st.info(
            "No two chosen runs differ only by their seed. Train a run again with another seed (the Seed setting) to see its spread."
        )
    else:
        st.dataframe(repeated, hide_index=True)
