"""`python -m fmnist_core speedrun`: the ladder of tricks, trained where the cache lacks a rung,
and its report (fmnist_core.studies.speedrun)."""

from __future__ import annotations

import argparse
import sys

from fmnist_core.store.cache import RunCache


def add_speedrun(commands) -> None:
    parser = commands.add_parser(
        "speedrun", help="the speedrun's ladder of tricks: train the rungs the cache lacks, write the report"
    )
    parser.add_argument("--rung", type=int, help="only this rung (0 is the plain network); default: all")
    parser.add_argument(
        "--seeds", type=seed_count, default=3, help="seeds per rung, 1 to 20 (their mean ± std)"
    )
    parser.add_argument(
        "--last-seeds",
        dest="last_seeds",
        type=seed_count,
        help="seeds of the ladder's last rung (default: --seeds)",
    )
    parser.add_argument("--report", metavar="DIR", default="reports", help="folder for speedrun.md and .csv")
    parser.add_argument("--epochs", type=int, help="every rung's epochs (default: the ladder's)")
    parser.add_argument("--subset", type=int, default=0, help="train on this many images (0: all)")
    parser.add_argument(
        "--no-train", dest="no_train", action="store_true", help="only tabulate the rungs already cached"
    )
    parser.add_argument(
        "--beside",
        action="store_true",
        help="also train fast_cnn and long_cnn where missing, to compare here",
    )
    parser.set_defaults(handler=command_speedrun)


def seed_count(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 20:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a whole number from 1 to 20")
    return int(text)


def command_speedrun(args: argparse.Namespace) -> int:
    from fmnist_core.studies import speedrun

    if args.beside and args.no_train:
        raise ValueError("--beside: it trains fast_cnn and long_cnn; --no-train only tabulates")
    rungs = [speedrun.check_rung(args.rung)] if args.rung is not None else list(range(len(speedrun.RUNGS)))
    overrides = {"train_subset": args.subset} if args.subset else {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    speedrun.ladder_configs(rungs, args.seeds, **overrides)  # every setting checked before any training
    say = lambda message: print(message, file=sys.stderr)
    train = not args.no_train
    table = speedrun.ladder_table(
        rungs, args.seeds, RunCache(), train, say, beside=args.beside, last_seeds=args.last_seeds, **overrides
    )
    if table.empty:
        print("no rung is cached yet: run without --no-train to train them", file=sys.stderr)
        return 1
    path = speedrun.write_report(table, args.report)
    print(path.read_text())
    return 0
