"""The reproduction committed in the repository (reports/NAME.csv beside NAME.md), shown where this
machine's cache lacks a run: a fresh clone's Reports page has every figure from the start, each
marked as the repository's, with the engine that made it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fmnist_core.studies.reports.grid import Scale

FOLDER = Path(__file__).resolve().parents[3] / "reports"  # the repository's reports/
# The columns a run fills in (the rest, published figures and configs, come from the report's grid).
OURS = ("final_", "test_", "difference_")
OUR_NAMES = ("minutes", "worst_class")


@dataclass(frozen=True)
class Committed:
    table: pd.DataFrame  # the committed CSV's finished rows
    source: str  # e.g. "repository, engine 2", as the rows' `source` column says it
    path: Path

    @property
    def shown_path(self) -> str:
        """The CSV's path as the repository names it (reports/...), for messages."""
        try:
            return self.path.relative_to(FOLDER.parent).as_posix()
        except ValueError:
            return str(self.path)


def committed_folder(scale: Scale, root: Path = FOLDER) -> Path | None:
    """reports/ for the reports' own scale, reports/scaled_F/ for epochs x F; None for other scales."""
    if scale.train_subset or scale.test_subset:
        return None
    return root if scale.epochs == 1.0 else root / f"scaled_{scale.epochs:g}"


def load_committed(name: str, scale: Scale, root: Path = FOLDER) -> Committed | None:
    """The committed table of report `name` at `scale`, or None where the repository has none."""
    folder = committed_folder(scale, root)
    if folder is None:
        return None
    path = folder / f"{name}.csv"
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError):  # absent, unreadable or not a CSV: nothing to show
        return None
    if not {"table", "label", "status"} <= set(table.columns):
        return None
    try:
        match = re.search(r"Trained by engine (\d+)", path.with_suffix(".md").read_text())
    except OSError:
        match = None
    source = f"repository, engine {match.group(1)}" if match else "repository"
    return Committed(table[table["status"] == "ok"].reset_index(drop=True), source, path)


def fill_from_committed(table: pd.DataFrame, committed: Committed | None) -> pd.DataFrame:
    """`table` with a `source` column: "this machine" for runs in the cache, and for the runs it
    lacks, the committed figures of the same experiment (same table and label), marked with the
    repository's source. Rows neither has keep their empty figures and source "missing"."""
    rows = table.to_dict("records")
    for row in rows:
        row["source"] = "this machine" if row["status"] == "ok" else "missing"
    if committed is not None:
        ours = [c for c in committed.table.columns if c.startswith(OURS) or c in OUR_NAMES]
        by_key = {(r["table"], r["label"]): r for r in committed.table.to_dict("records")}
        for row in rows:
            found = by_key.get((row["table"], row["label"]))
            if row["status"] != "ok" and found is not None:
                row.update({column: found[column] for column in ours}, source=committed.source)
    return pd.DataFrame(rows)
