"""Command line: `python -m fmnist_core models|train|runs ...`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from fmnist_core import cli_inside, cli_speedrun, cli_worker
from fmnist_core.analysis import classes_never_predicted
from fmnist_core.base import environment
from fmnist_core.data.fashion import DataError
from fmnist_core.models import get_spec, list_models
from fmnist_core.runs.recipes import get_recipe, list_recipes
from fmnist_core.runs.trained import get_or_train
from fmnist_core.store.cache import CorruptRunError, MissingRunError, RunCache
from fmnist_core.store.prune import prune
from fmnist_core.store.table import list_runs
from fmnist_core.training.config import OPTIMIZERS, RunConfig
from fmnist_core.training.loop import Progress


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set: {pair!r} is not KEY=VALUE")
        if key in values and values[key] != value:
            raise ValueError(f"{key}: given twice with --set ({values[key]!r} and {value!r})")
        values[key] = value
    return values


def model_and_recipe(name: str):
    """A command line's first argument: (the model, its recipe or None)."""
    recipe = get_recipe(name) if name in list_recipes() else None
    return (recipe.model if recipe else name), recipe


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run config the command line describes: the model's or a named recipe, then flags, then --set."""
    model, recipe = model_and_recipe(args.model)
    model_keys = set(get_spec(model).settings_type.__dataclass_fields__)
    settings, overrides = {}, {}
    for key, value in parse_assignments(args.set).items():
        if key in ("model", "settings"):
            raise ValueError(f"--set: {key} is not a setting (name the model as the first argument)")
        (settings if key in model_keys else overrides)[key] = value
    for flag in ("epochs", "batch_size", "lr", "optimizer", "seed"):
        if getattr(args, flag) is not None:
            if flag in overrides:
                raise ValueError(f"{flag}: given both as --{flag.replace('_', '-')} and --set {flag}=")
            overrides[flag] = getattr(args, flag)
    if recipe:
        return recipe.config(settings, **overrides)
    return RunConfig.for_model(model, settings, **overrides)


def print_progress(progress: Progress) -> None:
    if progress.epoch_done:
        shown = ", ".join(
            f"{key} {value:.4f}"
            for key, value in progress.metrics.items()
            if key not in ("epoch", "seconds") and isinstance(value, float)  # not the snapshots
        )
        clear = "\r\033[K" if sys.stderr.isatty() else ""
        when = "kept from the stopped run" if progress.kept else f"{progress.seconds:.1f} s"
        print(f"{clear}epoch {progress.epoch}/{progress.epochs}: {shown} ({when})", file=sys.stderr)
    elif sys.stderr.isatty():  # step lines overwrite each other; logs get epoch lines only
        print(
            f"\repoch {progress.epoch}/{progress.epochs} step {progress.step}/{progress.steps} "
            f"loss {progress.train_loss:.4f} {progress.eta_words}",
            end="",
            file=sys.stderr,
        )


def summary(run) -> dict:
    metrics = run.metrics
    out = {"run_id": run.run_id, "model": run.config.model, "cached": run.cached, "completed": run.completed}
    out.update(epochs=metrics["epochs_done"], train_seconds=round(metrics["train_seconds"], 3))
    out.update({k: metrics[k] for k in ("test_loss", "test_accuracy", "test_mse") if k in metrics})
    if "test_confusion" in run.metrics:
        never = classes_never_predicted(run.metrics["test_confusion"])
        if never:
            out["classes_never_predicted"] = never
    if run.note:
        out["note"] = run.note
    return out


def command_models(args) -> int:
    for name in list_models():
        spec = get_spec(name)
        print(f"{name:20s} {spec.kind:12s} {spec.description}")
    return 0


def command_settings(args) -> int:
    """The FMNIST_* settings, checked by main, a scheduler's answer, the queue's database (run_app.sh)."""
    from fmnist_core.runs import cluster, shared  # here: Dask and SQLAlchemy only for this command

    if environment.scheduler():
        cluster.connect(environment.scheduler(), "FMNIST_SCHEDULER").close()
    shared.check_setting(RunCache().root)  # the queue's database opened once, where one is set
    print("\n".join([*environment.listing(), "settings: ok"]))
    return 0


def command_recipes(args) -> int:
    for name in list_recipes():
        recipe = get_recipe(name)
        print(f"{name:20s} {recipe.model:20s} {recipe.description}")
    return 0


def command_train(args) -> int:
    config = config_from_args(args)
    print(f"run {config.run_id}: {config.model} {json.dumps(config.settings)}", file=sys.stderr)
    stop = threading.Event()

    def interrupted(signum, frame):
        if stop.is_set():  # a second Ctrl-C: quit at once
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping: the finished epochs are kept (Ctrl-C again quits at once)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        run = get_or_train(
            config,
            on_progress=None if args.quiet else print_progress,
            should_stop=stop.is_set,
            cache=RunCache(),
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    if run.note:
        print(f"note: {run.note}", file=sys.stderr)
    result = summary(run)
    if result.get("classes_never_predicted"):
        print(
            f"warning: this classifier never answers {', '.join(result['classes_never_predicted'])} "
            "on the test images (a dead class: its score is 0 for every image)",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0 if run.completed else 130  # 130: the shell's code for a run ended by Ctrl-C


def command_summary(args) -> int:
    from fmnist_core.store.table import list_runs
    from fmnist_core.views.architecture import plan
    from fmnist_core.views.explore import duration

    cache = RunCache()
    if (args.model is None) == (args.run is None):
        raise ValueError("summary: name a model (or recipe) or a cached run with --run, not both")
    if args.run is not None:
        cache.verify(args.run)
        config = cache.load_config(args.run)
    else:
        config = config_from_args(args)
    print(f"{config.model} {json.dumps(config.settings)}")
    shown = plan(config, list_runs(cache), cache, probe=args.run is None)
    print(shown.table.as_text())
    if args.run is None:
        images = config.train_subset or 60_000
        expected = (
            f"about {duration(shown.estimate.seconds)} here (from {shown.estimate.basis})"
            if shown.estimate
            else "not timed"
        )
        print(f"training: {config.epochs} epochs over {images:,} images, {shown.refusal or expected}")
        return 0
    from fmnist_core.runs.trained import load_run
    from fmnist_core.views import inside

    run = load_run(args.run, cache)
    activity = inside.activity(run, cache)
    print(f"\nunits that never fire on the {activity.images:,} test images (rectified layers):")
    print(inside.dead_units(activity).to_string(index=False, formatters={"dead_share": "{:.0%}".format}))
    for warning in inside.warnings(run, activity):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def command_runs(args) -> int:
    if args.prune:
        removed = prune(RunCache())
        for run_id, reason in removed:
            print(f"removed {run_id}: {reason}")
        print(f"{len(removed)} entries removed")
        return 0
    table = list_runs(RunCache())
    if table.empty:
        print("no cached runs")
        return 0
    columns = [
        c
        for c in (
            "run_id",
            "model",
            "epochs",
            "test_accuracy",
            "test_mse",
            "train_seconds",
            "execution",
            "status",
        )
        if c in table
    ]
    print(table[columns].to_string(index=False))
    return 0


def command_reproduce(args) -> int:
    from fmnist_core.studies.reports import report_names, reproduce

    names = report_names() if args.report == "all" else [args.report]
    started = time.perf_counter()
    for name in names:
        print(f"== {name}", file=sys.stderr)
        common = dict(
            jobs=args.jobs,
            backend=args.backend,
            on_event=lambda message: print(message, file=sys.stderr),
            out_dir=args.out,
            train=not args.no_train,
        )
        if args.seeds > 1:
            from fmnist_core.studies.reports import Scale
            from fmnist_core.studies.reports.seeds import reproduce_seeds

            scale = Scale(epochs=args.epochs_scale, train_subset=args.subset)
            for claim, verdict, detail in reproduce_seeds(name, args.seeds, scale, **common).verdicts:
                print(f"{name}: {claim}: {verdict} ({detail})")
            continue
        result = reproduce(
            name, epochs_scale=args.epochs_scale, scheduler=args.scheduler, train_subset=args.subset, **common
        )
        for claim, holds, seen in result.conclusions:
            mark = {True: "holds", False: "does NOT hold", None: "not run"}[holds]
            print(f"{name}: {claim}: {mark} ({seen})")
    print(f"total: {(time.perf_counter() - started) / 60:.1f} min; tables in {args.out}/", file=sys.stderr)
    return 0


def command_sweep(args) -> int:
    from fmnist_core.runs.trained import load_run
    from fmnist_core.studies.reports import Scale, train_missing
    from fmnist_core.studies.sweep import (
        latent_sweep,
        probe_accuracy,
        sweep_configs,
        sweep_table,
        write_sweep,
    )

    if not 0 < args.epochs_scale <= 10:
        raise ValueError(f"epochs-scale: {args.epochs_scale} is outside (0, 10]")
    scale = Scale(epochs=args.epochs_scale)
    points = latent_sweep(scale)
    cache = RunCache()
    if not args.no_train:
        train_missing(sweep_configs(points), cache, on_event=lambda message: print(message, file=sys.stderr))
    probe = None if args.no_probe else (lambda run_id: probe_accuracy(load_run(run_id, cache)))
    table = sweep_table(points, cache, probe)
    path = write_sweep(table, scale, args.out)
    print(path.read_text())
    return 0


def command_sweep_hp(args) -> int:
    from fmnist_core.studies import hpsearch

    params = tuple(hpsearch.parse_param(text) for text in args.param)
    model, recipe = model_and_recipe(args.model)
    fixed = {**recipe.settings, **recipe.run} if recipe else {}  # a recipe's trials start from it
    fixed.update(parse_assignments(args.set))
    if args.epochs is not None:
        fixed["epochs"] = args.epochs
    if args.subset:
        fixed["train_subset"] = args.subset
    name = args.name or hpsearch.plan_name(model, params, args.sampler, args.prune, fixed)
    plan = hpsearch.SweepPlan(
        name, model, params, args.trials, args.sampler, args.prune, tuple(sorted(fixed.items()))
    )
    say = lambda message: print(message, file=sys.stderr)  # noqa: E731
    if args.backend == "dask":
        from fmnist_core.runs.cluster import connect

        if not args.scheduler:
            raise ValueError("scheduler: --backend dask needs --scheduler ADDRESS (tcp://host:8786)")
        with connect(args.scheduler, "--scheduler") as client:
            study = hpsearch.sweep_on_cluster(plan, RunCache(), client, on_event=say)
    else:
        study = hpsearch.sweep(plan, RunCache(), on_event=say)
    table = hpsearch.trials_table(study)
    print(table.to_string(index=False))
    if args.report:
        print(f"report: {hpsearch.write_report(study, args.report)}")
    states = table["state"].value_counts().to_dict()
    best = study.best_trial if states.get("COMPLETE") else None
    print(f"sweep {name}: " + ", ".join(f"{count} {state.lower()}" for state, count in states.items()))
    if best is not None:
        print(
            f"best: trial {best.number}, {plan.metric} {best.value:.4f}, {best.params}, run {best.user_attrs.get('run_id', '(none)')}"
        )
    return 0


def command_suspects(args) -> int:
    from fmnist_core.studies.suspects import study, write_study

    say = lambda message: print(message, file=sys.stderr)
    found = study(RunCache(), seeds=args.seeds, train=not args.no_train, on_event=say)
    path = write_study(found, args.out)
    print(path.read_text())
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse whose refusals are one line naming the option (its usage stays under --help)."""

    def error(self, message: str):
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        raise SystemExit(2)


def count(text: str) -> int:
    """An option that counts something (seeds, jobs): a whole number, at least 1."""
    if not text.strip().isdigit() or len(text.strip()) > 6 or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a whole number from 1 to 999999")
    return int(text)


def add_no_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-train", dest="no_train", action="store_true", help="only tabulate cached runs")


def add_config_arguments(parser: argparse.ArgumentParser, optional: bool = False) -> None:
    """The arguments that describe a run: a model or recipe, the common flags, --set."""
    parser.add_argument(
        "model",
        choices=list_models() + list_recipes(),
        nargs="?" if optional else None,
        help="a model or a named recipe",
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", dest="batch_size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--optimizer", choices=OPTIMIZERS)
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model setting (n=128, dropout=0.1, channels=64,96 ...) or a run setting (loss=kl_div)",
    )


def add_sweep_hp(commands) -> None:
    parser = commands.add_parser(
        "sweep-hp", help="search a model's settings with Optuna (trials are cached runs, pruned early)"
    )
    parser.add_argument(
        "model", choices=list_models() + list_recipes(), help="a model, or a recipe to start from"
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="SPEC",
        help="a setting to vary: lr=1e-4..1e-2:log, dropout=0..0.5, n=16..256:int, optimizer=adam,sgd",
    )
    parser.add_argument("--trials", type=count, default=20)
    parser.add_argument("--sampler", choices=["tpe", "random", "grid"], default="tpe")
    parser.add_argument("--prune", choices=["median", "none"], default="median")
    parser.add_argument("--epochs", type=int, help="every trial's epochs (default: the model's recipe)")
    parser.add_argument("--subset", type=int, default=0, help="train on this many images (0: all)")
    parser.add_argument("--name", help="the sweep's name (default: from its model, ranges and sampler)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a setting all trials share"
    )
    parser.add_argument("--backend", choices=["local", "dask"], default="local")
    parser.add_argument(
        "--scheduler", help="Dask scheduler address, with --backend dask (a shared cache folder)"
    )
    parser.add_argument("--report", metavar="DIR", help="write NAME.md and NAME.csv of the sweep into DIR")
    parser.set_defaults(handler=command_sweep_hp)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m fmnist_core", description="Fashion-MNIST Lab")
    parser.add_argument("--debug", action="store_true", help="show the traceback of any failure")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models", help="list the registered models").set_defaults(handler=command_models)
    commands.add_parser("settings", help="check the FMNIST_* settings").set_defaults(handler=command_settings)

    train_parser = commands.add_parser("train", help="train a model, or load it from the cache")
    add_config_arguments(train_parser)
    train_parser.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
    train_parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    train_parser.set_defaults(handler=command_train)

    summary_parser = commands.add_parser(
        "summary",
        help="a model's layers (shapes, parameters, multiply-adds) before training, or a cached run's",
    )
    add_config_arguments(summary_parser, optional=True)
    summary_parser.add_argument("--run", help="a cached run: its layers, and its dead units on the test set")
    summary_parser.set_defaults(handler=command_summary)

    runs_parser = commands.add_parser("runs", help="the cached runs as a table")
    runs_parser.add_argument(
        "--prune",
        action="store_true",
        help="delete the entries that fail their checks (damaged or stale) and stopped runs whose checkpoint is damaged or whose run has finished",
    )
    runs_parser.set_defaults(handler=command_runs)
    commands.add_parser("recipes", help="the named fast recipes").set_defaults(handler=command_recipes)

    reproduce_parser = commands.add_parser("reproduce", help="re-run a seed report's experiments")
    reproduce_parser.add_argument("report", choices=["S0", "S1", "S2", "S3", "S4", "all"])
    reproduce_parser.add_argument("--epochs-scale", dest="epochs_scale", type=float, default=1.0)
    reproduce_parser.add_argument(
        "--jobs", type=count, default=1, help="runs trained at once (threads are split)"
    )
    reproduce_parser.add_argument("--backend", default="loky", help="joblib backend: loky, threading, dask")
    reproduce_parser.add_argument("--scheduler", help="Dask scheduler address, with --backend dask")
    reproduce_parser.add_argument("--subset", type=int, default=0, help="train on this many images (0: all)")
    reproduce_parser.add_argument("--out", default="reports", help="folder for NAME.md and NAME.csv")
    add_no_train(reproduce_parser)
    reproduce_parser.add_argument(
        "--seeds",
        type=count,
        default=1,
        help="run the grid with this many seeds: mean ± std and verdicts in NAME-seedsN.md",
    )
    reproduce_parser.set_defaults(handler=command_reproduce)

    sweep_parser = commands.add_parser(
        "sweep", help="S0's autoencoder and its classifiers at every latent size from 2 to 512"
    )
    sweep_parser.add_argument("--epochs-scale", dest="epochs_scale", type=float, default=1.0)
    sweep_parser.add_argument("--out", default="reports", help="folder for latent_sweep.md and .csv")
    add_no_train(sweep_parser)
    sweep_parser.add_argument(
        "--no-probe", dest="no_probe", action="store_true", help="skip the linear read-out of the codes"
    )
    sweep_parser.set_defaults(handler=command_sweep)

    add_sweep_hp(commands)

    suspects_parser = commands.add_parser(
        "suspects", help="near-duplicates, likely mislabels, and training without them over seeds"
    )
    suspects_parser.add_argument("--seeds", type=count, default=3)
    suspects_parser.add_argument("--out", default="reports", help="folder for suspects.md")
    add_no_train(suspects_parser)
    suspects_parser.set_defaults(handler=command_suspects)
    for add in (cli_speedrun.add_speedrun, cli_inside.add_inside, cli_worker.add_worker):
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        environment.check_all()  # a setting that is wrong: one line, whatever the command
        return args.handler(args)
    except EXPECTED_FAILURES as error:
        if args.debug:
            raise
        print(f"error: {describe_failure(error)}", file=sys.stderr)
        return 2


# Bad settings or data, a missing or damaged run, an unwritable cache: one line; else a bug, traced.
EXPECTED_FAILURES = (ValueError, DataError, MissingRunError, CorruptRunError, OSError)


def describe_failure(error: Exception) -> str:
    if isinstance(error, MissingRunError):
        return f"no cached run {error}"
    return " ".join(str(error).split()) or type(error).__name__
