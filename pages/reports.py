"""Reports: each seed report's experiments, the published figures beside ours, and what is still missing."""

import pandas as pd
import streamlit as st

from fmnist_core.reports import (
    REPORTS,
    Scale,
    check_conclusions,
    collect,
    fill_from_committed,
    load_committed,
    report_entries,
)
from fmnist_core.reports.seeds import claim_configs, load_committed_seeds
from ui.navigation import enter_through_app
from ui.state import job_queue, run_cache, seeds_result
from ui.widgets import kept

enter_through_app()

SEEDS = 3  # the claims are judged over this many seeds
SCALES = {"full (the report's epochs)": 1.0, "quick look (a fifth of the epochs)": 0.2}

with st.sidebar:
    st.header("Reports")
    name = kept(
        st.radio,
        "Report",
        "reports:name",
        "S0",
        options=list(REPORTS),
        format_func=lambda n: REPORTS[n].TITLE,
    )
    scale_label = kept(st.radio, "Scale", "reports:scale", list(SCALES)[0], options=list(SCALES))
scale = Scale(epochs=SCALES[scale_label])
module = REPORTS[name]
st.title(module.TITLE)
st.markdown(module.SUMMARY)
st.caption(f"The report's file: `{module.SOURCE}`. Validation on the test set, as the report did.")

result = collect(name, scale, run_cache())
committed = load_committed(name, scale)
table = fill_from_committed(result.table, committed)
missing = table[table["status"] != "ok"].drop_duplicates("run_id")  # rows may share one run
from_repository = table["source"].str.startswith("repository")
queue = job_queue()
active = [job for job in queue.jobs() if job.active]


@st.fragment(run_every=2.0)
def queue_status() -> None:
    jobs = [job for job in job_queue().jobs() if job.active]
    if not jobs:
        st.rerun()
    running = next((job for job in jobs if job.state == "running"), None)
    text = f"{len(jobs)} training(s) in the queue."
    if running is not None and running.latest is not None:
        p = running.latest
        text += f" Now: {running.config.model} `{running.run_id}` epoch {p.epoch}/{p.epochs}, {p.eta_words}."
    st.info(text)


if active:
    queue_status()
elif len(missing):
    text = (
        f"{len(missing)} of {table['run_id'].nunique()} runs of this report are not in this machine's cache."
    )
    if from_repository.any():
        text += (
            f" Rows whose source is *{committed.source}* show the reproduction committed in the repository "
            f"(`{committed.shown_path}`); train them to "
            "get this machine's own figures."
        )
    st.warning(text)
    if st.button(f"Train the {len(missing)} missing runs", type="primary", icon=":material/play_arrow:"):
        # Queued in grid order: autoencoders come before the classifiers built on their encoders.
        wanted = set(missing["run_id"])
        for entry in report_entries(name, scale):
            if entry.config.run_id in wanted:
                queue.submit(entry.config)
        st.rerun()
else:
    st.success("Every experiment of this report is cached.")

notes = {(e.table, e.label): e.note for e in report_entries(name, scale) if e.note}
shown_notes = set()
for group_name, group in table.groupby("table", sort=False):
    st.subheader(group_name)
    columns = (
        ["label"]
        + [
            c
            for c in group.columns
            if (c.startswith(("published_", "final_", "test_", "difference_")) or c == "minutes")
            and group[c].notna().any()
        ]
        + ["source"]
    )
    st.dataframe(
        group[columns],
        hide_index=True,
        column_config={
            c: st.column_config.NumberColumn(format="%.4f") for c in columns if c not in ("label", "source")
        },
    )
    for label in group["label"]:
        note = notes.pop((group_name, label), None)
        if note and note not in shown_notes:  # rows that share a note show it once
            shown_notes.add(note)
            st.caption(f"**{label}**: {note}")

st.subheader("The report's claims: guess, then see")
st.caption(
    f"Each claim over {SEEDS} seeds: our mean ± std beside the published figure, and a verdict that "
    "weighs the difference against the seeds' own spread (holds, fails, or within seed noise: the "
    "margin against twice the standard error of the difference of the means)."
)
seeded = seeds_result(name, scale, SEEDS)
seeds_source = "this machine's runs"
if all(verdict == "not run" for _, verdict, _ in seeded.verdicts) and scale == Scale():
    repository = load_committed_seeds(name, SEEDS)  # a fresh clone: the repository's own runs
    if repository is not None:
        seeded, seeds_source = repository, f"the repository's runs (`reports/{name}-seeds{SEEDS}.csv`)"
single = check_conclusions(name, table)
by_label = seeded.table.set_index("label") if len(seeded.table) else None
for index, (conclusion, (claim, verdict, detail), (_, holds, seen)) in enumerate(
    zip(module.CONCLUSIONS, seeded.verdicts, single, strict=True)
):
    with st.container(border=True):
        st.markdown(f"**{claim}**")
        guess = st.segmented_control(
            "Your guess first", ["holds", "fails", "can't tell"], key=f"guess:{name}:{scale.epochs}:{index}"
        )
        if guess is None:
            st.caption("Guess, then the runs answer.")
            continue
        if verdict == "not run":
            one = {True: "holds", False: "does not hold", None: "not run yet"}[holds]
            st.info(f"One run each: {one} ({seen}). Over {SEEDS} seeds: not run yet ({detail}).")
            wanted = [
                c
                for c in claim_configs(name, scale, SEEDS, conclusion.needs)
                if not run_cache().exists(c.run_id)
            ]
            if wanted and st.button(
                f"Train the {len(wanted)} runs this claim needs", key=f"seeds:{name}:{index}"
            ):
                for config in wanted:
                    queue.submit(config)
                st.rerun()
            continue
        icon = {"holds": ":material/check_circle:", "fails": ":material/cancel:"}.get(
            verdict, ":material/blur_on:"
        )
        right = guess == verdict or (guess == "can't tell" and verdict == "within seed noise")
        verb = "is " if verdict == "within seed noise" else ""
        st.markdown(f"{icon} Over {SEEDS} seeds it {verb}**{verdict}** ({detail}); from {seeds_source}.")
        st.caption("Your guess matches." if right else f"You guessed *{guess}*.")
        if by_label is not None:
            rows = []
            for label in conclusion.needs:
                if label in by_label.index:
                    row = by_label.loc[label]
                    figures = {"run": label}
                    for metric in ("test_accuracy", "test_mse", "final_train_loss", "final_val_accuracy"):
                        if f"{metric}_mean" in row and row[f"{metric}_mean"] == row[f"{metric}_mean"]:
                            figures[metric] = f"{row[f'{metric}_mean']:.4f} ± {row[f'{metric}_std']:.4f}"
                            published = row.get(f"published_{metric}")
                            if published == published and published is not None:
                                figures[f"published {metric}"] = f"{published:.4f}"
                    rows.append(figures)
            st.dataframe(pd.DataFrame(rows), hide_index=True)

st.caption("The same tables come from the command line: `python -m fmnist_core reproduce " + name + "`.")
