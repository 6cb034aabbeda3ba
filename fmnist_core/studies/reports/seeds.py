"""A report's grid over several seeds: each entry's figures as mean ± std, and each claim's verdict
weighed against the seeds' noise (grid.seeds_verdict): holds, fails, or within seed noise."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fmnist_core.base.files import write_text_atomic
from fmnist_core.store.cache import RunCache
from fmnist_core.studies.reports.grid import Comparison, Scale
from fmnist_core.training.config import ENGINE_VERSION

METRICS = (
    "final_train_loss",
    "final_val_loss",
    "final_val_accuracy",
    "test_loss",
    "test_accuracy",
    "test_mse",
    "test_classes_never_predicted",
)


@dataclass
class SeedsResult:
    name: str
    title: str
    seeds: list[int]
    table: pd.DataFrame  # one row per entry: published, then METRIC_mean / METRIC_std / METRIC_runs
    verdicts: list[
        tuple[str, str, str]
    ]  # claim, verdict (holds / fails / within seed noise / not run), detail
    notes: list[tuple[str, str]]  # entry label, the report's note on it


def seed_scales(scale: Scale, seeds: int) -> list[Scale]:
    if not 1 <= seeds <= 10:
        raise ValueError(f"seeds: {seeds} is outside 1..10")
    return [replace(scale, seed=scale.seed + i) for i in range(seeds)]


def seed_configs(name: str, scale: Scale, seeds: int) -> list:
    """Every run of report `name` for each of `seeds` seeds (autoencoders first, per seed)."""
    from fmnist_core.studies.reports import report_entries

    return [entry.config for each in seed_scales(scale, seeds) for entry in report_entries(name, each)]


def claim_configs(name: str, scale: Scale, seeds: int, labels: tuple[str, ...]) -> list:
    """The runs a claim reads (its rows' labels) for every seed, each encoder before the classifiers
    built on it: what to queue so that the claim can be judged."""
    from fmnist_core.studies.reports import report_entries

    wanted = []
    for each in seed_scales(scale, seeds):
        entries = report_entries(name, each)
        by_id = {e.config.run_id: e.config for e in entries}
        for entry in entries:
            if entry.label in labels:
                encoder = by_id.get(entry.config.settings.get("encoder_run"))
                wanted += [c for c in (encoder, entry.config) if c is not None]
    return list({c.run_id: c for c in wanted}.values())


def collect_seeds(name: str, scale: Scale, cache: RunCache, seeds: int = 3) -> SeedsResult:
    """The table over seeds and the verdicts, from whatever the cache holds (a claim whose runs are
    not all cached for every seed is "not run")."""
    from fmnist_core.studies.reports import get_report, results_row

    module = get_report(name)
    per_seed = []  # per seed: label -> results row
    for each in seed_scales(scale, seeds):
        per_seed.append({e.label: results_row(e, cache) for e in module.entries(each)})
    entries = module.entries(scale)
    rows = []
    for entry in entries:
        row = {"table": entry.table, "label": entry.label}
        row.update({f"published_{k}": v for k, v in entry.published.items()})
        found = [rows_of_seed[entry.label] for rows_of_seed in per_seed]
        done = [r for r in found if r.get("status") == "ok"]
        row["seeds_done"] = len(done)
        for metric in METRICS:
            values = [r[metric] for r in done if metric in r and r[metric] == r[metric]]
            if values:
                row[f"{metric}_mean"] = float(np.mean(values))
                row[f"{metric}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                row[f"{metric}_runs"] = " ".join(f"{v:.4f}" for v in values)
        rows.append(row)
    verdicts = []
    for conclusion in module.CONCLUSIONS:
        complete = [r for r in per_seed if all(r[label].get("status") == "ok" for label in conclusion.needs)]
        if len(complete) < seeds:
            verdicts.append((conclusion.claim, "not run", f"{len(complete)} of {seeds} seeds cached"))
        elif isinstance(conclusion.check, Comparison):
            check = conclusion.check
            firsts = [r[check.first][check.metric] for r in complete]
            seconds = [r[check.second][check.metric] for r in complete]
            verdicts.append((conclusion.claim, *check.over_seeds(firsts, seconds)))
        else:  # a claim that is no comparison of two numbers: how many seeds it holds in
            held = [conclusion.check(r)[0] for r in complete]
            verdict = "holds" if all(held) else "fails" if not any(held) else "within seed noise"
            verdicts.append((conclusion.claim, verdict, f"holds in {sum(held)} of {seeds} seeds"))
    first_label: dict[str, str] = {}  # rows that share a note: it is listed once, under the first
    for entry in entries:
        if entry.note:
            first_label.setdefault(entry.note, entry.label)
    notes = [(label, note) for note, label in first_label.items()]
    return SeedsResult(
        name, module.TITLE, [s.seed for s in seed_scales(scale, seeds)], pd.DataFrame(rows), verdicts, notes
    )


def _figure(row: dict, metric: str) -> str:
    mean = row.get(f"{metric}_mean")
    if mean is None or mean != mean:
        return ""
    return f"{mean:.4f} ± {row.get(f'{metric}_std', 0.0):.4f}"


def seeds_markdown(result: SeedsResult) -> str:
    k = len(result.seeds)
    lines = [
        f"# {result.title}, over {k} seeds",
        "",
        f"Seeds {', '.join(map(str, result.seeds))}; every figure is the mean ± sample standard deviation "
        f"over the seeds' runs. Trained by engine {ENGINE_VERSION}. A claim holds when its margin clears "
        "twice the standard error of the difference of the two means, fails when it falls below minus "
        "that, and is within seed noise between the two (fmnist_core/reports/grid.py, seeds_verdict).",
        "",
    ]
    table = result.table
    for name, group in table.groupby("table", sort=False):
        records = group.to_dict("records")
        metrics = [m for m in METRICS if any(_figure(r, m) for r in records)]
        published = [c for c in group.columns if c.startswith("published_") and group[c].notna().any()]
        columns = ["label", *published, *metrics, "seeds_done"]
        lines += [f"## {name}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for r in records:
            cells = [str(r["label"])]
            cells += [
                f"{r[c]:.4f}" if r.get(c) == r.get(c) and r.get(c) is not None else "" for c in published
            ]
            cells += [_figure(r, m) for m in metrics] + [str(r["seeds_done"])]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## The report's claims, over the seeds", ""]
    for claim, verdict, detail in result.verdicts:
        lines.append(f"- {claim}: **{verdict}** ({detail})")
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {label}: {note}" for label, note in result.notes]
    return "\n".join(lines) + "\n"


def write_seeds(result: SeedsResult, out_dir: Path) -> tuple[Path, Path, Path]:
    """reports/NAME-seedsK.md, .csv (the table) and -verdicts.csv, written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{result.name}-seeds{len(result.seeds)}"
    paths = (out_dir / f"{stem}.md", out_dir / f"{stem}.csv", out_dir / f"{stem}-verdicts.csv")
    verdicts = pd.DataFrame(result.verdicts, columns=["claim", "verdict", "detail"])
    texts = (seeds_markdown(result), result.table.to_csv(index=False), verdicts.to_csv(index=False))
    for path, text in zip(paths, texts, strict=True):
        write_text_atomic(path, text)
    return paths


def reproduce_seeds(
    name: str,
    seeds: int,
    scale: Scale,
    cache: RunCache | None = None,
    jobs: int = 1,
    backend: str = "loky",
    on_event: Callable[[str], None] | None = None,
    out_dir: str | os.PathLike | None = "reports",
    train: bool = True,
) -> SeedsResult:
    """Train what report `name` needs for `seeds` seeds and the cache lacks; tabulate and judge."""
    from fmnist_core.studies.reports import train_missing

    cache = cache or RunCache()
    if train:
        train_missing(seed_configs(name, scale, seeds), cache, jobs, backend, on_event)
    result = collect_seeds(name, scale, cache, seeds)
    if out_dir is not None:
        write_seeds(result, Path(out_dir))
    return result


def load_committed_seeds(name: str, seeds: int, root: Path | None = None) -> SeedsResult | None:
    """The repository's own runs over `seeds` seeds (reports/NAME-seedsK*.csv), or None."""
    from fmnist_core.studies.reports.committed import FOLDER

    folder = root or FOLDER
    try:
        table = pd.read_csv(folder / f"{name}-seeds{seeds}.csv")
        verdicts = pd.read_csv(folder / f"{name}-seeds{seeds}-verdicts.csv")
    except (OSError, ValueError):
        return None
    if not {"label", "seeds_done"} <= set(table.columns) or list(verdicts.columns) != [
        "claim",
        "verdict",
        "detail",
    ]:
        return None
    return SeedsResult(
        name, name, list(range(seeds)), table, list(verdicts.itertuples(index=False, name=None)), []
    )
