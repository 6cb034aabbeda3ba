"""The pieces every report's grid is made of: entries, conclusions, and scaling for quick looks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fmnist_core.models import get_spec
from fmnist_core.training.config import RunConfig

# The reports trained their classifiers on an encoder as S0 did: Adam at a constant 1e-3. The
# model's own recipe (a OneCycle peaking at 3e-3) is the lab's; the reproductions keep the reports'.
REPORTS_ENCODER_TRAINING = {"optimizer": "adam", "lr": 1e-3, "schedule": "constant"}


@dataclass(frozen=True)
class Scale:
    """How far to shrink a grid: a fraction of every entry's epochs, and optionally of the data."""

    epochs: float = 1.0
    train_subset: int = 0  # 0: all 60,000 images
    test_subset: int = 0  # 0: all 10,000 test images
    seed: int = 0  # every run of the grid (an encoder classifier's encoder too) with this seed

    def config(self, model: str, settings: dict | None = None, **overrides: Any) -> RunConfig:
        if get_spec(model).needs_encoder:
            overrides = {**REPORTS_ENCODER_TRAINING, **overrides}
        full = RunConfig.for_model(model, settings, **overrides)
        epochs = max(1, round(full.epochs * self.epochs))
        return full.replace(
            epochs=epochs, train_subset=self.train_subset, test_subset=self.test_subset, seed=self.seed
        )


@dataclass(frozen=True)
class Entry:
    """One row of a report's table: a config and the figures the report published for it."""

    table: str
    label: str
    config: RunConfig
    published: dict[str, float] = field(default_factory=dict)  # keys as in the results table
    published_minutes: float | None = None  # the report's training time, where it gave one
    note: str = ""
    # "dropout_on": the row's test_mse (and test_loss) is its run's test MSE with dropout left on (as a
    # training loop reports its loss), not the run's own eval-mode figure; the row trains nothing.
    measure: str = ""


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


@dataclass(frozen=True)
class Comparison:
    """A claim that compares two rows on one metric: `first` is lower than `second` (times
    `factor`), higher than it, or close to it (within a relative `tolerance`). Called with one set of
    rows it checks one run of each; `over_seeds` weighs several seeds' runs against their noise."""

    kind: str  # lower, higher, close
    metric: str
    first: str
    second: str
    factor: float = 1.0
    tolerance: float = 0.0

    def __call__(self, rows: Rows) -> tuple[bool, str]:
        a, b = rows[self.first][self.metric], rows[self.second][self.metric]
        seen = f"{self.first}: {a:.4f} vs {self.second}: {b:.4f}"
        if self.kind == "lower":
            return a < b * self.factor, seen
        if self.kind == "higher":
            return a > b, seen
        return abs(a - b) <= self.tolerance * max(abs(a), abs(b)), seen

    def over_seeds(self, firsts: list[float], seconds: list[float]) -> tuple[str, str]:
        """The verdict over seeds: "holds", "fails" or "within seed noise" (seeds_verdict's rule)."""
        return seeds_verdict(self.kind, firsts, seconds, self.factor, self.tolerance)


def seeds_verdict(
    kind: str, firsts: list[float], seconds: list[float], factor: float = 1.0, tolerance: float = 0.0
) -> tuple[str, str]:
    """A comparison's verdict over k seeds, and what it rests on.

    The margin is how far the seeds' means clear the claim (lower: factor x mean(second) - mean(first);
    higher: mean(first) - mean(second); close: tolerance x the larger mean - the gap between them).
    The noise is twice the standard error of a difference of two means, 2 sqrt((s1² + s2²) / k), with
    each side's sample standard deviation s over its k seeds. Margin above the noise: holds; below
    minus the noise: fails; between: within seed noise. With one seed there is no noise to weigh:
    the single comparison decides, and the detail says so.
    """
    a, b = np.asarray(firsts, dtype=float), np.asarray(seconds, dtype=float)
    if len(a) == 0 or len(a) != len(b):
        raise ValueError(f"seeds: {len(a)} and {len(b)} values; both sides need the same seeds, at least one")
    if kind == "lower":
        margin = factor * b.mean() - a.mean()
    elif kind == "higher":
        margin = a.mean() - b.mean()
    elif kind == "close":
        margin = tolerance * max(abs(a.mean()), abs(b.mean())) - abs(a.mean() - b.mean())
    else:
        raise ValueError(f"kind: {kind!r} is not one of lower, higher, close")
    k = len(a)
    noise = 2 * np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / k) if k > 1 else 0.0
    verdict = "holds" if margin > noise else "fails" if margin < -noise else "within seed noise"
    if k == 1:
        verdict = "holds" if margin > 0 else "fails"
    detail = f"{a.mean():.4f} ± {a.std(ddof=1) if k > 1 else 0:.4f} vs {b.mean():.4f} ± {b.std(ddof=1) if k > 1 else 0:.4f}"
    detail += f"; margin {margin:+.4f} against noise {noise:.4f} over {k} seed{'s' if k > 1 else ''}"
    return verdict, detail


def lower(metric: str, better: str, worse: str, factor: float = 1.0) -> Comparison:
    """`better` has a lower `metric` than `worse` (times `factor`)."""
    return Comparison("lower", metric, better, worse, factor=factor)


def higher(metric: str, better: str, worse: str) -> Comparison:
    return Comparison("higher", metric, better, worse)


def close(metric: str, first: str, second: str, tolerance: float) -> Comparison:
    """Within a relative tolerance of each other."""
    return Comparison("close", metric, first, second, tolerance=tolerance)
