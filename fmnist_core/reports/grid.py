"""The pieces every report's grid is made of: entries, conclusions, and scaling for quick looks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import RunConfig


@dataclass(frozen=True)
class Scale:
    """How far to shrink a grid: a fraction of every entry's epochs, and optionally of the data."""

    epochs: float = 1.0
    train_subset: int = 0  # 0: all 60,000 images
    test_subset: int = 0  # 0: all 10,000 test images

    def config(self, model: str, settings: dict | None = None, **overrides: Any) -> RunConfig:
        full = RunConfig.for_model(model, settings, **overrides)
        epochs = max(1, round(full.epochs * self.epochs))
        return full.replace(epochs=epochs, train_subset=self.train_subset, test_subset=self.test_subset)


@dataclass(frozen=True)
class Entry:
    """One row of a report's table: a config and the figures the report published for it."""

    table: str
    label: str
    config: RunConfig
    published: dict[str, float] = field(default_factory=dict)  # keys as in the results table
    published_minutes: float | None = None  # the report's training time, where it gave one
    note: str = ""


Rows = dict[str, dict[str, Any]]  # label -> results row


@dataclass(frozen=True)
class Conclusion:
    """A claim of the report, checked against our results: check returns (holds, what we saw)."""

    claim: str
    check: Callable[[Rows], tuple[bool, str]]
    needs: tuple[str, ...] = ()  # labels whose rows the check reads

    def evaluate(self, rows: Rows) -> tuple[bool | None, str]:
        missing = [label for label in self.needs if label not in rows]
        if missing:
            return None, f"not run yet: {', '.join(missing)}"
        return self.check(rows)


def lower(metric: str, better: str, worse: str, factor: float = 1.0) -> Callable[[Rows], tuple[bool, str]]:
    """`better` has a lower `metric` than `worse` (times `factor`)."""

    def check(rows: Rows) -> tuple[bool, str]:
        a, b = rows[better][metric], rows[worse][metric]
        return a < b * factor, f"{better}: {a:.4f} vs {worse}: {b:.4f}"

    return check


def higher(metric: str, better: str, worse: str) -> Callable[[Rows], tuple[bool, str]]:
    def check(rows: Rows) -> tuple[bool, str]:
        a, b = rows[better][metric], rows[worse][metric]
        return a > b, f"{better}: {a:.4f} vs {worse}: {b:.4f}"

    return check


def close(metric: str, first: str, second: str, tolerance: float) -> Callable[[Rows], tuple[bool, str]]:
    """Within a relative tolerance of each other."""

    def check(rows: Rows) -> tuple[bool, str]:
        a, b = rows[first][metric], rows[second][metric]
        return abs(a - b) <= tolerance * max(abs(a), abs(b)), f"{first}: {a:.4f} vs {second}: {b:.4f}"

    return check
