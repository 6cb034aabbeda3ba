"""The runs a disk cap never removes: the starter set (every page opens on them) and the seed
reports' runs at the scales the Reports page offers (hours of training to make again)."""

from __future__ import annotations

from functools import lru_cache

from fmnist_core.runs.starter import starter_set
from fmnist_core.studies.reports import Scale, report_entries, report_names

REPORT_SCALES = (Scale(), Scale(epochs=0.2))  # the Reports page's full and quick looks


@lru_cache(maxsize=1)
def pinned_run_ids() -> frozenset[str]:
    ids = {starter.config.run_id for starter in starter_set()}
    for name in report_names():
        for scale in REPORT_SCALES:
            ids |= {entry.config.run_id for entry in report_entries(name, scale)}
    return frozenset(ids)
