"""The Reports page's sections: the experiments' tables beside the published figures, and the
report's claims as cards that ask for a guess before showing the verdict over seeds."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from fmnist_core.studies.reports import REPORTS, Scale, check_conclusions, report_entries
from fmnist_core.studies.reports.seeds import claim_configs, load_committed_seeds
from ui import keys
from ui.panels import train_missing
from ui.results import seeds_result

SEEDS = 3  # the claims are judged over this many seeds


def experiment_tables(name: str, scale: Scale, table: pd.DataFrame) -> None:
    """One table per table of the report, with each row's note once."""
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
                c: st.column_config.NumberColumn(format="%.4f")
                for c in columns
                if c not in ("label", "source")
            },
        )
        for label in group["label"]:
            note = notes.pop((group_name, label), None)
            if note and note not in shown_notes:  # rows that share a note show it once
                shown_notes.add(note)
                st.caption(f"**{label}**: {note}")


def claims(name: str, scale: Scale, table: pd.DataFrame) -> None:
    """Each claim of the report: a guess first, then its verdict over SEEDS seeds."""
    module = REPORTS[name]
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
                "Your guess first",
                ["holds", "fails", "can't tell"],
                key=keys.guess(name, scale.epochs, index),
            )
            if guess is None:
                st.caption("Guess, then the runs answer.")
                continue
            if verdict == "not run":
                one = {True: "holds", False: "does not hold", None: "not run yet"}[holds]
                st.info(f"One run each: {one} ({seen}). Over {SEEDS} seeds: not run yet ({detail}).")
                train_missing(
                    claim_configs(name, scale, SEEDS, conclusion.needs),
                    "this claim needs",
                    f"seeds:{name}:{index}",
                )
                continue
            icon = {"holds": ":material/check_circle:", "fails": ":material/cancel:"}.get(
                verdict, ":material/blur_on:"
            )
            right = guess == verdict or (guess == "can't tell" and verdict == "within seed noise")
            verb = "is " if verdict == "within seed noise" else ""
            st.markdown(f"{icon} Over {SEEDS} seeds it {verb}**{verdict}** ({detail}); from {seeds_source}.")
            st.caption("Your guess matches." if right else f"You guessed *{guess}*.")
            if by_label is not None:
                st.dataframe(claim_figures(by_label, conclusion.needs), hide_index=True)


def claim_figures(by_label: pd.DataFrame, needs) -> pd.DataFrame:
    """The runs a claim needs: mean ± std over the seeds beside the published figure."""
    rows = []
    for label in needs:
        if label not in by_label.index:
            continue
        row = by_label.loc[label]
        figures = {"run": label}
        for metric in ("test_accuracy", "test_mse", "final_train_loss", "final_val_accuracy"):
            if f"{metric}_mean" in row and row[f"{metric}_mean"] == row[f"{metric}_mean"]:
                figures[metric] = f"{row[f'{metric}_mean']:.4f} ± {row[f'{metric}_std']:.4f}"
                published = row.get(f"published_{metric}")
                if published == published and published is not None:
                    figures[f"published {metric}"] = f"{published:.4f}"
        rows.append(figures)
    return pd.DataFrame(rows)
