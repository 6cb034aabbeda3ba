"""Hyperparameter sweeps with Optuna: ranges of a model's settings (or run settings) searched by
TPE, random or grid sampling, each trial an ordinary cached run validated on a holdout split of
the training images, stopped early by a pruner. The study lives in the cache folder (an Optuna
journal file), so a sweep survives a kill and several processes can share it."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fmnist_core.base.device import use_threads
from fmnist_core.models import get_spec
from fmnist_core.runs.trained import check_resources, get_or_train
from fmnist_core.store.cache import RunCache
from fmnist_core.studies import journal
from fmnist_core.training.config import RunConfig

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
SWEEPS = ".sweeps"  # beside the runs in the cache folder: one journal per sweep
GRID_POINTS = 4  # values per continuous range under the grid sampler
NAME = re.compile(r"[a-z0-9_]{1,60}")


@dataclass(frozen=True)
class Param:
    """One setting to vary: a float or int range (log-scaled or not), or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple = ()

    def suggest(self, trial):
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def text(self) -> str:
        """The command line's form of this parameter (parse_param reads it back)."""
        if self.choices:
            return f"{self.name}={','.join(map(str, self.choices))}"
        flags = ",".join(flag for flag, on in (("int", self.integer), ("log", self.log)) if on)
        return f"{self.name}={self.low:g}..{self.high:g}" + (f":{flags}" if flags else "")

    def grid(self) -> list:
        """The values a grid sweep tries."""
        if self.choices:
            return list(self.choices)
        if self.integer:
            span = int(self.high) - int(self.low)
            return sorted({int(self.low) + round(span * i / (GRID_POINTS - 1)) for i in range(GRID_POINTS)})
        if self.log:
            ratio = math.log(self.high / self.low)
            return [self.low * math.exp(ratio * i / (GRID_POINTS - 1)) for i in range(GRID_POINTS)]
        return [self.low + (self.high - self.low) * i / (GRID_POINTS - 1) for i in range(GRID_POINTS)]


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--param {name}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"--param {name}: {text!r} is not a finite number")
    return value


def _choice(text: str):
    """A choice as the setting holds it: 64 an int, 0.5 a float, adam a word."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_param(text: str) -> Param:
    """`lr=1e-4..1e-2:log`, `dropout=0..0.5`, `n=16..256:int`, `optimizer=adam,sgd`; a ValueError
    naming the parameter otherwise."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name or not rest:
        raise ValueError(f"--param: {text!r} is not NAME=LOW..HIGH[:log|:int] or NAME=A,B,...")
    if ".." not in rest:
        choices = tuple(_choice(part.strip()) for part in rest.split(",") if part.strip())
        if len(choices) < 2:
            raise ValueError(f"--param {name}: give a range LOW..HIGH or at least two choices A,B")
        return Param(name, choices=choices)
    bounds, _, flags = rest.partition(":")
    low_text, _, high_text = bounds.partition("..")
    low, high = _number(low_text, name), _number(high_text, name)
    flag_set = {flag.strip() for flag in flags.split(",") if flag.strip()}
    if flag_set - {"log", "int"}:
        raise ValueError(
            f"--param {name}: unknown flag(s) {', '.join(sorted(flag_set - {'log', 'int'}))} (log, int)"
        )
    if not low < high:
        raise ValueError(f"--param {name}: the range {low:g}..{high:g} is empty (LOW must be below HIGH)")
    if "log" in flag_set and low <= 0:
        raise ValueError(f"--param {name}: a log range needs LOW above 0, got {low:g}")
    if "int" in flag_set and (low != int(low) or high != int(high)):
        raise ValueError(f"--param {name}: an int range needs whole bounds, got {low:g}..{high:g}")
    if "int" in flag_set:
        return Param(name, int(low), int(high), log="log" in flag_set, integer=True)
    return Param(name, low, high, log="log" in flag_set)


@dataclass(frozen=True)
class SweepPlan:
    name: str  # the study's name, and its journal's file name
    model: str
    params: tuple[Param, ...]
    trials: int
    sampler: str = "tpe"
    pruner: str = "median"
    fixed: tuple[tuple[str, object], ...] = ()  # run settings every trial shares (epochs, subset...)
    seed: int = 0

    def __post_init__(self):
        get_spec(self.model)  # ValueError for an unknown model
        if not NAME.fullmatch(self.name):
            raise ValueError(f"name: {self.name!r} must be 1-60 of a-z, 0-9 and _")
        if not self.params:
            raise ValueError("params: give at least one --param to vary")
        if len({p.name for p in self.params}) != len(self.params):
            raise ValueError("params: a parameter is given twice")
        if not 1 <= self.trials <= 10_000:
            raise ValueError(f"trials: {self.trials} is outside 1..10000")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler: {self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise ValueError(f"prune: {self.pruner!r} is not one of {', '.join(PRUNERS)}")
        # Every value must be one a run can hold: a trial's config at each end of every range, and
        # with each choice, checked before any trial starts.
        lows = {p.name: p.choices[0] if p.choices else p.low for p in self.params}
        highs = {p.name: p.choices[-1] if p.choices else p.high for p in self.params}
        for values in (lows, highs, *({p.name: c} for p in self.params for c in p.choices[1:-1])):
            self.config(values)
        self.check_resources()

    def check_resources(self) -> None:
        """Refuse a plan whose ranges reach a run this machine refuses (the queue's check: memory, a
        batch of 1). From the lowest values, each parameter in turn is moved to whichever of its ends
        or choices needs the most memory, so the last run checked is the plan's largest corner."""
        values = {p.name: p.choices[0] if p.choices else p.low for p in self.params}
        for param in self.params:
            needs = {}
            for value in param.choices or (param.low, param.high):
                tried = {**values, param.name: value}
                config = self.config(tried)
                try:
                    needs[value] = check_resources(config)
                except ValueError as error:
                    shown = ", ".join(
                        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in tried.items()
                    )
                    raise ValueError(
                        f"--param {param.name}: a trial at {shown} cannot train here: {error}"
                    ) from None
            values[param.name] = max(needs, key=needs.get)

    @property
    def maximise(self) -> bool:
        return get_spec(self.model).classifies

    @property
    def metric(self) -> str:
        """What the sweep optimises, on the holdout split."""
        return "val_accuracy" if self.maximise else "val_loss"

    def describe(self) -> dict:
        """What the study keeps of its plan (the app lists sweeps by it)."""
        return {
            "model": self.model,
            "params": [p.text() for p in self.params],
            "trials": self.trials,
            "sampler": self.sampler,
            "pruner": self.pruner,
            "metric": self.metric,
            "fixed": {key: value for key, value in self.fixed},
        }

    def config(self, values: dict) -> RunConfig:
        """The run a trial with these values trains: validated on a holdout split of train. The
        plan's fixed values (model or run settings) hold for every trial; a trial's own win."""
        keys = set(get_spec(self.model).settings_type.__dataclass_fields__)
        allowed = (keys | set(RunConfig.__dataclass_fields__)) - {"model", "settings"}
        for where, given in (("--param", values), ("--set", dict(self.fixed))):
            wrong = sorted(set(given) - allowed)
            if wrong:
                raise ValueError(f"{where} {wrong[0]}: not a setting of {self.model} nor of a run")
        merged = {"validation": "holdout", **dict(self.fixed), **values}
        settings = {k: v for k, v in merged.items() if k in keys}
        return RunConfig.for_model(self.model, settings, **{k: v for k, v in merged.items() if k not in keys})


def plan_name(model: str, params, sampler: str, pruner: str, fixed: dict) -> str:
    """A sweep's default name: the same plan (whatever its trial count) names the same sweep, so
    asking again continues it."""
    import json

    from fmnist_core.base.files import checksum

    described = json.dumps(
        [model, sorted(p.text() for p in params), sampler, pruner, sorted(fixed.items())], default=str
    )
    return f"{model}_{checksum(described)[:8]}"


def storage_path(cache: RunCache, name: str) -> Path:
    return cache.root / SWEEPS / f"{name}.journal"


def make_sampler(plan: SweepPlan, seed: int):
    import optuna

    if plan.sampler == "grid":
        return optuna.samplers.GridSampler({p.name: p.grid() for p in plan.params}, seed=seed)
    if plan.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def load_study(plan: SweepPlan, cache: RunCache):
    """The plan's Optuna study in the cache folder, created or, after a kill, continued."""
    import optuna

    path = storage_path(cache, plan.name)
    storage = journal.storage(path, plan.name, writing=True)
    sampler = make_sampler(plan, plan.seed)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        if plan.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    with journal.replaying(path):
        study = optuna.create_study(
            study_name=plan.name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction="maximize" if plan.maximise else "minimize",
            load_if_exists=True,
        )
    if study.trials:  # continued: the sampler's stream moves past the trials it has (from its
        # first seed again, a continued sweep asked for its first trials a second time)
        study.sampler = make_sampler(plan, plan.seed + len(study.trials))
    if "plan" not in study.user_attrs:
        study.set_user_attr("plan", plan.describe())
    return study


def finished(study) -> int:
    return len([t for t in study.trials if t.state.is_finished()])


def sweep_names(cache: RunCache) -> list[str]:
    """The sweeps kept in this cache folder, newest first; a damaged journal (or a link) is left
    out, and logged once, so that no page opens it by default."""
    folder = cache.root / SWEEPS
    if not folder.is_dir() or folder.is_symlink():
        return []
    paths = [p for p in folder.glob("*.journal") if NAME.fullmatch(p.stem) and journal.is_sound(p, p.stem)]
    return [p.stem for p in sorted(paths, key=lambda p: p.lstat().st_mtime, reverse=True)]


def open_study(cache: RunCache, name: str):
    """A kept sweep's study, read as it stands (its plan in study.user_attrs["plan"]); a journal
    that is damaged or a link is a JournalError (a ValueError) in one line."""
    import optuna

    path = storage_path(cache, name)
    if NAME.fullmatch(name):
        journal.refuse_links(path)
    if not NAME.fullmatch(name) or not path.is_file():
        raise ValueError(f"sweep: no sweep named {name!r} in {cache.root}")
    storage = journal.storage(path, name, writing=False)
    with journal.replaying(path):
        return optuna.load_study(study_name=name, storage=storage)


def report_epochs(plan: SweepPlan, trial, epochs: list[dict], reported: int) -> tuple[int, bool]:
    """Report the finished epochs after the first `reported` to the pruner; (epochs reported now,
    whether the pruner says stop)."""
    prune = False
    for epoch in epochs[reported:]:
        reported += 1
        if plan.metric in epoch:
            trial.report(float(epoch[plan.metric]), reported)
            prune = prune or trial.should_prune()
    return reported, prune


def complete(plan: SweepPlan, trial, history: dict, metrics: dict) -> float:
    """A finished trial's value (its last holdout figure); the test figures kept apart."""
    values = history.get(plan.metric) or []
    if not values:
        raise ValueError(f"{plan.metric}: run {trial.user_attrs.get('run_id')} recorded none")
    for key in ("test_accuracy", "test_mse", "test_loss"):
        if key in metrics:
            trial.set_user_attr(key, float(metrics[key]))  # the test set, scored once, shown apart
    return float(values[-1])


def as_epochs(history: dict) -> list[dict]:
    count = len(history.get("epoch") or next(iter(history.values()), []))
    return [{key: values[i] for key, values in history.items() if i < len(values)} for i in range(count)]


def run_trial(plan: SweepPlan, trial, cache: RunCache, on_event: Callable[[str], None]) -> float:
    """One trial in this process: its values, its run (a cache hit costs nothing), reported each epoch."""
    import optuna

    values = {p.name: p.suggest(trial) for p in plan.params}
    config = plan.config(values)
    trial.set_user_attr("run_id", config.run_id)
    if not cache.exists(config.run_id):
        try:
            check_resources(config, cache)
        except ValueError as error:  # past the plan's check: this trial ends in one line, the sweep goes on
            trial.set_user_attr("refused", str(error))
            on_event(f"trial {trial.number}: cannot train here: {error} ({values})")
            raise optuna.TrialPruned(str(error)) from None
    state = {"reported": 0, "pruned": None}

    def on_progress(progress) -> None:
        if progress.epoch_done and state["pruned"] is None:
            state["reported"], prune = report_epochs(plan, trial, [progress.metrics], progress.epoch - 1)
            state["pruned"] = progress.epoch if prune else None

    run = get_or_train(
        config, on_progress=on_progress, should_stop=lambda: state["pruned"] is not None, cache=cache
    )
    if state["pruned"] is not None or not run.completed:
        trial.set_user_attr("pruned_at_epoch", state["pruned"])
        on_event(f"trial {trial.number}: pruned after epoch {state['pruned'] or '?'} ({values})")
        raise optuna.TrialPruned()
    report_epochs(plan, trial, as_epochs(run.history), state["reported"])  # a cached run: all at once
    value = complete(plan, trial, run.history, run.metrics)
    on_event(f"trial {trial.number}: {plan.metric} {value:.4f} ({values})")
    return value


def sweep(plan: SweepPlan, cache: RunCache | None = None, on_event=None):
    """Run the plan's trials that are still to run (finished ones are kept); returns the study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cache = cache or RunCache()
    say = on_event or (lambda message: None)
    study = load_study(plan, cache)
    left = plan.trials - finished(study)
    if left <= 0:
        say(f"sweep {plan.name}: all {plan.trials} trials done")
        return study
    say(f"sweep {plan.name}: {finished(study)} trials done, {left} to run")
    study.optimize(lambda trial: run_trial(plan, trial, cache, say), n_trials=left, catch=())
    return study


def _sweep_on_worker(plan: SweepPlan, root: str, trials: int, worker: int, threads: int) -> int:
    """Runs on a Dask worker: `trials` trials of the shared study, with its own sampler seed (two
    workers drawing the same values would train the same run twice) and its share of the cores."""
    from dataclasses import replace

    import optuna

    use_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cache = RunCache(root)
    study = load_study(replace(plan, seed=plan.seed + 1000 * worker), cache)

    def objective(trial) -> float:
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        return run_trial(plan, trial, cache, lambda message: None)

    study.optimize(objective, n_trials=trials, catch=())
    return trials


def sweep_on_cluster(plan: SweepPlan, cache: RunCache, client, on_event=None):
    """The plan's remaining trials spread over a Dask cluster's workers, into the shared cache
    folder and study (the workers must see the same disk); returns the study."""
    say = on_event or (lambda message: None)
    study = load_study(plan, cache)
    left = plan.trials - finished(study)
    workers = max(1, len(client.scheduler_info()["workers"]))
    shares = [left // workers + (1 if i < left % workers else 0) for i in range(workers)]
    shares = [share for share in shares if share]
    if not shares:
        say(f"sweep {plan.name}: all {plan.trials} trials done")
        return study
    threads = max(1, (os.cpu_count() or 1) // len(shares))
    say(f"sweep {plan.name}: {left} trials on {len(shares)} Dask workers")
    root = str(cache.root.resolve())
    futures = [
        client.submit(_sweep_on_worker, plan, root, share, i, threads, pure=False)
        for i, share in enumerate(shares)
    ]
    client.gather(futures)
    return load_study(plan, cache)


def importance(study):
    """The sweep's parameters by Optuna's fANOVA importance on its finished trials (shares, sum 1)."""
    import optuna
    import pandas as pd

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 2:
        raise ValueError(f"importance: the sweep has {len(done)} finished trial(s), it needs 2")
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return pd.Series(optuna.importance.get_param_importances(study, evaluator=evaluator))


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report_markdown(study) -> str:
    """A sweep as Markdown: its plan, what pruning saved, importance, the best trial, every trial."""
    plan = study.user_attrs.get("plan", {})
    table = trials_table(study)
    seconds = table["duration"].dt.total_seconds() if "duration" in table else None
    counts = table["state"].str.lower().value_counts()
    lines = [
        f"# Sweep {study.study_name}",
        "",
        f"{plan.get('model')} over {', '.join(plan.get('params', []))}; {plan.get('sampler')} sampling, "
        f"pruner {plan.get('pruner')}; every trial {plan.get('fixed')}. Optimised: {plan.get('metric')} on a "
        "holdout split of the training images; the test figures were measured once per finished trial, apart.",
        "",
        "Trials: " + ", ".join(f"{count} {state}" for state, count in counts.items()) + ".",
    ]
    if seconds is not None:
        lines.append(f"Training time of all trials: {seconds.sum():.0f} s.")
    try:
        shares = importance(study)
        lines += ["", "Importance (fANOVA): " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()) + "."]
    except ValueError as error:
        lines += ["", f"No importance: {error}."]
    if counts.get("complete"):
        best = study.best_trial
        lines += [
            "",
            f"**Chosen**: trial {best.number}, {plan.get('metric')} {best.value:.4f}, "
            f"test accuracy {best.user_attrs.get('test_accuracy', float('nan')):.4f}, {best.params}, "
            f"run {best.user_attrs.get('run_id')}.",
        ]
    columns = [c for c in table if c != "duration"] + (["seconds"] if seconds is not None else [])
    shown = table.assign(seconds=seconds) if seconds is not None else table
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(_cell(r[c]) for c in columns) + " |" for r in shown[columns].to_dict("records")
    ]
    return "\n".join(lines) + "\n"


def write_report(study, out_dir) -> Path:
    """NAME.md and NAME.csv (the trials) in `out_dir`, written atomically; returns the .md's path."""
    from fmnist_core.base.files import write_text_atomic

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / f"{study.study_name}.csv", trials_table(study).to_csv(index=False))
    path = folder / f"{study.study_name}.md"
    write_text_atomic(path, report_markdown(study))
    return path


def trials_table(study):
    """One row per trial: state, values, the holdout metric, the test figures, its run id."""
    frame = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs", "duration"))
    return frame.rename(columns=lambda c: c.replace("params_", "").replace("user_attrs_", ""))
