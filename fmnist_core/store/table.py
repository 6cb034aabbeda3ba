"""The run store as a table: one row per entry with its settings, final figures, what it can do
and what it computed with (the app's pickers and Compare runs read it)."""

from __future__ import annotations

import pandas as pd

from fmnist_core.analysis import classes_never_predicted
from fmnist_core.base.files import CorruptRunError
from fmnist_core.models import get_spec
from fmnist_core.store.cache import RunCache
from fmnist_core.store.entries import MissingRunError


def list_runs(cache: RunCache) -> pd.DataFrame:
    """Every entry as a row: run id, status, config columns, final metrics."""
    rows = []
    for run_id in cache.run_ids():
        row: dict = {"run_id": run_id}
        try:
            config = cache.check(run_id)
            manifest = cache.verify(run_id)
            history, metrics = cache.load_record(run_id)
        except (MissingRunError, CorruptRunError) as error:
            rows.append({**row, "status": f"damaged: {error}"})
            continue
        row.update(status="ok", created=manifest.get("created", ""), kind=config.kind)
        row.update(get_spec(config.model).capabilities())  # what it can do, for the app's pickers
        values = config.to_dict()
        settings = values.pop("settings")
        row.update(values)
        row.update(
            {
                key: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
                for key, v in settings.items()
            }
        )
        for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
            if history.get(key):
                row[f"final_{key}"] = history[key][-1]
        for key in ("test_loss", "test_accuracy", "test_mse", "train_seconds", "epochs_done", "device"):
            if key in metrics:
                row[key] = metrics[key]
        if "test_confusion" in metrics:
            row["never_predicted"] = ", ".join(classes_never_predicted(metrics["test_confusion"]))
        ran = metrics.get("execution")
        if isinstance(ran, dict):  # what it computed with: device type, precision, kernels
            row["execution"] = "/".join(str(ran.get(k, "?")) for k in ("device", "precision", "kernels"))
        rows.append(row)
    return pd.DataFrame(rows)
