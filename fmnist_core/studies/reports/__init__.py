"""The seed reports' experiments as data, and `reproduce`: train what the cache lacks, write the tables."""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from fmnist_core.analysis import classes_never_predicted
from fmnist_core.base.device import use_threads
from fmnist_core.base.files import write_text_atomic
from fmnist_core.data.fashion import CLASS_NAMES
from fmnist_core.models import IMAGE_SHAPE, build_skeleton, make_settings
from fmnist_core.runs.trained import get_or_train, resolve_encoder
from fmnist_core.store.cache import RunCache
from fmnist_core.studies.reports import s0, s1, s2, s3, s4
from fmnist_core.studies.reports.committed import Committed, fill_from_committed, load_committed
from fmnist_core.studies.reports.grid import Conclusion, Entry, Scale
from fmnist_core.training.config import ENGINE_VERSION, RunConfig

REPORTS: dict[str, ModuleType] = {"S0": s0, "S1": s1, "S2": s2, "S3": s3, "S4": s4}
OUR_COLUMNS = (
    "final_train_loss",
    "final_val_loss",
    "final_train_accuracy",
    "final_val_accuracy",
    "test_loss",
    "test_accuracy",
    "test_mse",
    "test_classes_never_predicted",
)


def report_names() -> list[str]:
    return list(REPORTS)


def get_report(name: str) -> ModuleType:
    if name not in REPORTS:
        raise ValueError(f"report: {name!r} is not one of {', '.join(REPORTS)}, all")
    return REPORTS[name]


def report_entries(name: str, scale: Scale | None = None) -> list[Entry]:
    return get_report(name).entries(scale or Scale())


@dataclass
class ReportResult:
    name: str
    title: str
    table: pd.DataFrame  # one row per entry: config, published, ours, difference, time
    conclusions: list[tuple[str, bool | None, str]]  # claim, holds (None: not run), what we saw
    trained_seconds: float  # spent training in this call


def _config_summary(config: RunConfig) -> str:
    settings = ", ".join(
        f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
        for k, v in config.telling_settings().items()
    )
    run = f"{config.optimizer} lr={config.lr:g} batch={config.batch_size} epochs={config.epochs} loss={config.loss}"
    changed = config.changed_settings()
    for name in ("weight_decay", "schedule", "label_smoothing", "augment", "tta", "precision"):
        if name in changed:  # the settings a seed's table would not show, where changed
            value = changed[name]
            run += f" {name}={value:g}" if isinstance(value, float) else f" {name}={value}"
    return f"{settings}; {run}" + (f"; {config.train_subset} images" if config.train_subset else "")


def results_row(entry: Entry, cache: RunCache) -> dict:
    """Published figures beside ours for one entry (ours empty where the run is not cached)."""
    row = {
        "table": entry.table,
        "label": entry.label,
        "run_id": entry.config.run_id,
        "config": _config_summary(entry.config),
    }
    for key, value in entry.published.items():
        row[f"published_{key}"] = value
    row["published_minutes"] = entry.published_minutes
    if not cache.exists(entry.config.run_id):
        row["status"] = "missing"
        return row
    if entry.measure:
        row["test_mse"] = row["test_loss"] = _measured(entry.measure, str(cache.root), entry.config.run_id)
        for key, value in entry.published.items():
            if key in row:
                row[f"difference_{key}"] = row[key] - value
        row["status"] = "ok"
        return row
    history, metrics = cache.load_record(entry.config.run_id)
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
        if history.get(key):
            row[f"final_{key}"] = history[key][-1]
    for key in ("test_loss", "test_accuracy", "test_mse"):
        if key in metrics:
            row[key] = metrics[key]
    if "test_confusion" in metrics:
        confusion = metrics["test_confusion"]
        recall = [confusion[i][i] / max(sum(confusion[i]), 1) for i in range(len(confusion))]
        row["worst_class"] = CLASS_NAMES[min(range(len(recall)), key=recall.__getitem__)]
        # A class whose logit never wins on any test image: S0's head (a ReLU on the logits) can
        # leave a class's output at 0 for every image, where no gradient brings it back.
        row["test_classes_never_predicted"] = len(classes_never_predicted(confusion))
    row["minutes"] = metrics["train_seconds"] / 60
    for key, value in entry.published.items():
        if key in row:
            row[f"difference_{key}"] = row[key] - value
    row["status"] = "ok"
    return row


@functools.lru_cache(maxsize=64)
def _measured(measure: str, cache_root: str, run_id: str) -> float:
    """A figure measured on a cached run (a run id names one set of weights, so it is kept)."""
    from fmnist_core.analysis import mse_with_dropout_on
    from fmnist_core.runs.trained import load_run
    from fmnist_core.training.splits import make_splits

    if measure != "dropout_on":
        raise ValueError(f"measure: {measure!r} is not a measure the reports know (dropout_on)")
    run = load_run(run_id, RunCache(cache_root))
    # The test images the run was scored on (a scaled-down grid scores on a subset).
    return mse_with_dropout_on(run.model, make_splits(run.config, cache_root).test_images)


def _train_worker(config_json: str, cache_root: str, threads: int) -> tuple[str, float, bool]:
    """Runs in a joblib worker: train one config with a fixed share of the CPU threads."""
    use_threads(threads)
    run = get_or_train(RunConfig.from_dict(json.loads(config_json)), cache=RunCache(cache_root))
    return run.run_id, run.metrics["train_seconds"], run.cached


def _waves(configs: list[RunConfig]) -> list[list[RunConfig]]:
    """Autoencoders before the classifiers that start from their encoders."""
    first = [c for c in configs if not c.settings.get("encoder_run")]
    second = [c for c in configs if c.settings.get("encoder_run")]
    return [wave for wave in (first, second) if wave]


def forward_flops(config: RunConfig, cache: RunCache) -> int:
    """FLOPs of one image's forward pass; 0 where the model cannot be built yet (its encoder untrained)."""
    try:
        encoder = resolve_encoder(config, cache, weights=False)
    except ValueError:
        return 0
    model = build_skeleton(
        config.model, make_settings(config.model, config.settings), encoder and encoder.settings
    )
    with FlopCounterMode(display=False) as counter, torch.no_grad():  # on the meta device: no memory
        model.eval()(torch.zeros(1, *IMAGE_SHAPE, device="meta"))
    return counter.get_total_flops()


def longest_first(wave: list[RunConfig], cache: RunCache) -> list[RunConfig]:
    """The wave's runs by estimated work, largest first, so that the last run of a wave is not a long
    one left alone on a single worker's threads while the other cores idle."""
    return sorted(wave, key=lambda c: _work(c) * forward_flops(c, cache), reverse=True)


def _work(config: RunConfig) -> float:
    images = config.train_subset or 60_000
    return config.epochs * images


def train_missing(
    configs: list[RunConfig],
    cache: RunCache,
    jobs: int = 1,
    backend: str = "loky",
    on_event: Callable[[str], None] | None = None,
) -> float:
    """Train every config the cache lacks; returns the seconds spent. Cache hits are free."""
    say = on_event or (lambda message: None)
    unique = list({c.run_id: c for c in configs if not cache.exists(c.run_id)}.values())
    if not unique:
        say("every run is cached")
        return 0.0
    total_work = sum(_work(c) for c in unique)
    done_work, started = 0.0, time.perf_counter()
    say(f"{len(unique)} runs to train")
    cores = os.cpu_count() or 1

    def finished(config: RunConfig, seconds: float, index: int) -> None:
        nonlocal done_work
        done_work += _work(config)
        elapsed = time.perf_counter() - started
        left = elapsed * (total_work - done_work) / done_work
        say(
            f"[{index}/{len(unique)}] {config.model} {config.run_id}: {seconds:.0f} s; about {left / 60:.1f} min left"
        )

    index = 0
    for wave in _waves(unique):
        if jobs <= 1:
            for config in wave:
                run = get_or_train(config, cache=cache)
                index += 1
                finished(config, run.metrics["train_seconds"], index)
            continue
        from joblib import Parallel, delayed, parallel_config

        # Never more threads in total than cores: oversubscribed trainings crawl.
        threads = max(1, cores // jobs)
        wave = longest_first(wave, cache)
        tasks = (delayed(_train_worker)(c.to_json(), str(cache.root.resolve()), threads) for c in wave)
        by_id = {c.run_id: c for c in wave}
        # joblib's Dask backend returns results as a list; local backends stream them as they finish.
        return_as = "list" if backend == "dask" else "generator_unordered"
        # parallel_config (unlike Parallel's own argument) also knows joblib's external backends.
        with parallel_config(backend=backend, n_jobs=jobs):
            for run_id, seconds, _cached in Parallel(return_as=return_as)(tasks):
                index += 1
                finished(by_id[run_id], seconds, index)
    return time.perf_counter() - started


def collect(name: str, scale: Scale, cache: RunCache, trained_seconds: float = 0.0) -> ReportResult:
    """The report's table and conclusions from whatever the cache holds now."""
    module = get_report(name)
    entries = module.entries(scale)
    table = pd.DataFrame([results_row(entry, cache) for entry in entries])
    return ReportResult(name, module.TITLE, table, check_conclusions(name, table), trained_seconds)


def check_conclusions(name: str, table: pd.DataFrame) -> list[tuple[str, bool | None, str]]:
    """Each of the report's claims against the table's rows that have figures: (claim, holds, seen)."""
    rows = {
        row["label"]: row
        for row in table.to_dict("records")
        if row.get("status") == "ok" or str(row.get("source", "")).startswith("repository")
    }
    return [(c.claim, *c.evaluate(rows)) for c in get_report(name).CONCLUSIONS]


def reproduce(
    name: str,
    epochs_scale: float = 1.0,
    jobs: int = 1,
    backend: str = "loky",
    scheduler: str | None = None,
    train_subset: int = 0,
    test_subset: int = 0,
    cache: RunCache | None = None,
    on_event: Callable[[str], None] | None = None,
    out_dir: str | os.PathLike | None = "reports",
    train: bool = True,
) -> ReportResult:
    """Train what report `name` needs and the cache lacks, then tabulate published vs ours."""
    if not (0 < epochs_scale <= 10) or math.isnan(epochs_scale):
        raise ValueError(f"epochs_scale: {epochs_scale} is outside (0, 10]")
    if jobs < 1:
        raise ValueError(f"jobs: {jobs} must be at least 1")
    if backend not in ("loky", "threading", "multiprocessing", "dask"):
        raise ValueError(f"backend: {backend!r} is not one of loky, threading, multiprocessing, dask")
    cache = cache or RunCache()
    scale = Scale(epochs=epochs_scale, train_subset=train_subset, test_subset=test_subset)
    entries = get_report(name).entries(scale)
    client = None
    if not train:  # tabulate what the cache holds, train nothing
        result = collect(name, scale, cache)
        if out_dir is not None:
            write_report(result, Path(out_dir), scale)
        return result
    if backend == "dask":
        from distributed import Client

        from fmnist_core.runs.cluster import connect

        # Workers must see the same cache folder (a shared disk) to read encoders and write runs.
        client = (
            connect(scheduler, "--scheduler")
            if scheduler
            else Client(processes=False, n_workers=1, threads_per_worker=jobs)
        )
    try:
        seconds = train_missing([e.config for e in entries], cache, jobs, backend, on_event)
    finally:
        if client is not None:
            client.close()
    result = collect(name, scale, cache, seconds)
    if out_dir is not None:
        write_report(result, Path(out_dir), scale)
    return result


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def to_markdown(result: ReportResult, scale: Scale | None = None) -> str:
    """The report as Markdown: one table per experiment, then the conclusions checked."""
    lines = [f"# {result.title}", ""]
    if scale is not None and scale != Scale():
        parts = [f"epochs × {scale.epochs:g}"]
        if scale.train_subset:
            parts.append(f"{scale.train_subset} training images")
        if scale.test_subset:
            parts.append(f"{scale.test_subset} test images")
        lines += [f"Scaled run: {', '.join(parts)}.", ""]
    lines += [
        "Validation is on the test set, as in the report. Minutes are ours on this machine. "
        f"Trained by engine {ENGINE_VERSION}: the run ids are that engine's.",
        "",
    ]
    table = result.table
    for name, group in table.groupby("table", sort=False):
        columns = ["label"]
        for key in OUR_COLUMNS:
            published = f"published_{key}"
            if published in group and group[published].notna().any():
                columns.append(published)
            if key in group and group[key].notna().any():
                columns.append(key)
            if f"difference_{key}" in group and group[f"difference_{key}"].notna().any():
                columns.append(f"difference_{key}")
        for key in ("published_minutes", "minutes", "status", "config"):
            if key in group and group[key].notna().any():
                columns.append(key)
        lines += [f"## {name}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for record in group[columns].to_dict("records"):
            lines.append("| " + " | ".join(_cell(record[c]) for c in columns) + " |")
        lines.append("")
    lines += ["## Conclusions of the report, checked", ""]
    marks = {True: "holds", False: "does not hold", None: "not run"}
    for claim, holds, seen in result.conclusions:
        lines.append(f"- {claim}: **{marks[holds]}** ({seen})")
    runs = table.drop_duplicates("run_id")
    done = runs["minutes"].dropna() if "minutes" in runs else pd.Series(dtype=float)
    lines += [
        "",
        f"Training time of the {len(done)} runs above, each counted once: {done.sum():.1f} min. "
        f"The call that wrote this file trained for {result.trained_seconds / 60:.1f} min of it "
        "and loaded the rest from the cache.",
        "",
    ]
    return "\n".join(lines)


def write_report(result: ReportResult, out_dir: Path, scale: Scale | None = None) -> tuple[Path, Path]:
    """Write `NAME.md` and `NAME.csv` atomically into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / f"{result.name}.md", out_dir / f"{result.name}.csv")
    contents = (to_markdown(result, scale), result.table.to_csv(index=False))
    for path, text in zip(paths, contents, strict=True):
        write_text_atomic(path, text)
    return paths


__all__ = [
    "Committed",
    "Conclusion",
    "Entry",
    "REPORTS",
    "ReportResult",
    "Scale",
    "check_conclusions",
    "collect",
    "fill_from_committed",
    "load_committed",
    "reproduce",
    "report_entries",
    "to_markdown",
    "train_missing",
    "write_report",
]
