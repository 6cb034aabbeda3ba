"""The run store as a table: one row per entry with its settings, final figures, what it can do
and what it computed with (the app's pickers, Compare runs and the explorer read it).

A row is read from its entry's files once, then kept with the stamps of those files (and of the
encoder entry it builds on): listing again reads only the entries that changed, so a cache of
thousands of runs lists in the time of a directory scan and a few stat calls per entry. The rows
are also kept on disk (LISTING, JSON) for the next process: a new server lists a large cache
without hashing every file again. A listing is no load: loading a run still checks every file
against its checksum."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pandas as pd

from fmnist_core.analysis import classes_never_predicted
from fmnist_core.base.files import CorruptRunError, checksum, parse_json, read_regular, write_text_atomic
from fmnist_core.models import get_spec
from fmnist_core.store.cache import RunCache
from fmnist_core.store.entries import MissingRunError, is_run_id, stamps

# entry folder -> (((run id, stamps) of the entry and of each entry it depends on), row)
_ROWS: dict[Path, tuple[tuple, dict]] = {}
LISTING = ".listing.json"  # the rows with their stamps, for the next process
_LOADED: set[Path] = set()  # cache folders whose LISTING this process has read
# A row's JSON: ~50 settings and figures (~2 KB) and a validation curve of up to 1,000 epochs (~20 KB).
MAX_ROW_BYTES = 64_000


def list_runs(cache: RunCache) -> pd.DataFrame:
    """Every entry as a row: run id, status, config columns, final metrics, validation curve."""
    run_ids = cache.run_ids()
    if cache.root.resolve() not in _LOADED:
        _load_listing(cache, len(run_ids))
    rows, changed = [], False
    for run_id in run_ids:
        folder = cache.folder(run_id)
        known = _ROWS.get(folder)
        if known is not None and all(stamps(cache.folder(rid)) == seen for rid, seen in known[0]):
            rows.append(known[1])
            continue
        seen = tuple((rid, stamps(cache.folder(rid))) for rid in _depends(cache, run_id))  # before reading
        row = _row(cache, run_id)
        _ROWS[folder] = (seen, row)
        rows.append(row)
        changed = True
    if changed:
        _save_listing(cache, rows)
    return pd.DataFrame(rows)


def rank_runs(table: pd.DataFrame, loaded: str) -> pd.DataFrame:
    """The usable runs of a listing (status ok), best first within each model so that every
    picker defaults to the best run of its kind: autoencoders by test MSE, classifiers by test
    accuracy, then newest first; runs on another data set than `loaded` (a fingerprint) after
    them all, marked `other_data` (their figures were measured on their own test set)."""
    if table.empty:
        return table
    table = table[table["status"] == "ok"]
    if table.empty:
        return table.assign(other_data=pd.Series(dtype=bool))
    score = table["test_mse"] if "test_mse" in table else pd.Series(float("nan"), index=table.index)
    if "test_accuracy" in table:
        score = score.fillna(-table["test_accuracy"])
    return (
        table.assign(_score=score, other_data=table["data"] != loaded)
        .sort_values(["other_data", "_score", "created"], ascending=[True, True, False], na_position="last")
        .drop(columns="_score")
        .reset_index(drop=True)
    )


def _as_stamps(value) -> tuple:
    return tuple(tuple(item) if item is not None else None for item in value)


def _load_listing(cache: RunCache, entries: int) -> None:
    """The rows a former process kept, each only where its digest still matches it (an edited row is
    read again from its entry); a missing or unreadable file is no listing (all read anew)."""
    _LOADED.add(cache.root.resolve())
    try:
        data = read_regular(cache.root / LISTING, MAX_ROW_BYTES * (entries + 1))  # never a FIFO
        kept = parse_json(data)["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    for entry in kept if isinstance(kept, list) else []:
        known = _kept_row(entry)
        if known is not None:
            _ROWS.setdefault(cache.folder(known[1]["run_id"]), known)


def _kept_row(entry) -> tuple[tuple, dict] | None:
    """One kept (stamps, row), where it is whole, names run ids and matches its digest."""
    try:
        seen = tuple((rid, _as_stamps(found)) for rid, found in entry["seen"])
        row = entry["row"]
        whole = all(is_run_id(rid) for rid, _ in seen) and seen[0][0] == row["run_id"]
        if whole and entry["digest"] == _digest(seen, row):
            return seen, row
    except (KeyError, TypeError, ValueError, IndexError):
        pass
    return None


def _digest(seen: tuple, row: dict) -> str:
    """A row's checksum with the stamps it was read under, as its JSON reads back."""
    return checksum(json.dumps([seen, row], sort_keys=True, default=str))


def _save_listing(cache: RunCache, rows: list[dict]) -> None:
    entries = []
    for row in rows:
        seen = _ROWS[cache.folder(row["run_id"])][0]
        entries.append({"seen": seen, "row": row, "digest": _digest(seen, row)})
    with contextlib.suppress(OSError):  # a read-only cache lists all the same
        write_text_atomic(cache.root / LISTING, json.dumps({"rows": entries}, default=str))


def _depends(cache: RunCache, run_id: str) -> list[str]:
    """The entries a row is read from: the run's, and the encoder's it builds on (check reads it)."""
    depends = [run_id]
    config = _any_config(cache, run_id)
    while config is not None and config.settings.get("encoder_run") and len(depends) < 8:
        depends.append(config.settings["encoder_run"])
        config = _any_config(cache, config.settings["encoder_run"])
    return depends


def _any_config(cache: RunCache, run_id: str):
    """The entry's config as read once per change of its files, else what a damaged or removed
    entry still says of itself (recover_config), else None."""
    try:
        return cache.load_config(run_id)
    except (MissingRunError, CorruptRunError):
        return cache.recover_config(run_id)


def _row(cache: RunCache, run_id: str) -> dict:
    """One entry's row, read from its files."""
    row: dict = {"run_id": run_id}
    try:
        config = cache.check(run_id)
        manifest = cache.verify(run_id)
        history, metrics = cache.load_record(run_id)
    except (MissingRunError, CorruptRunError) as error:
        return {**row, "status": f"damaged: {error}"}
    row.update(status="ok", created=manifest.get("created", ""), kind=config.kind)
    row.update(get_spec(config.model).capabilities())  # what it can do, for the app's pickers
    values = config.to_dict()
    settings = values.pop("settings")
    row.update(values)
    row.update(
        {key: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for key, v in settings.items()}
    )
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
        if history.get(key):
            row[f"final_{key}"] = history[key][-1]
    row["val_curve"] = [float(v) for v in history.get("val_loss") or []]  # Compare's sparkline
    for key in ("test_loss", "test_accuracy", "test_mse", "train_seconds", "epochs_done", "device"):
        if key in metrics:
            row[key] = metrics[key]
    if "test_confusion" in metrics:
        row["never_predicted"] = ", ".join(classes_never_predicted(metrics["test_confusion"]))
    ran = metrics.get("execution")
    if isinstance(ran, dict):  # what it computed with: device type, precision, kernels
        row["execution"] = "/".join(str(ran.get(k, "?")) for k in ("device", "precision", "kernels"))
    return row
