"""`python -m fmnist_core inside`: one unit's sheet as a PNG (fmnist_core.views.unit_sheet)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fmnist_core.store.cache import RunCache


def add_inside(commands) -> None:
    parser = commands.add_parser(
        "inside", help="one unit of a cached run as a picture: what it responds to, its images, what feeds it"
    )
    parser.add_argument("--run", required=True, help="a cached run's id")
    parser.add_argument(
        "--layer", required=True, help="a layer's name, as the Inside page shows it (features.4)"
    )
    parser.add_argument("--unit", required=True, type=int, help="the unit (a conv layer's channel)")
    parser.add_argument(
        "--out", metavar="FILE", help="the PNG to write (default: unit-RUN-LAYER-UNIT.png here)"
    )
    parser.set_defaults(handler=command_inside)


def command_inside(args: argparse.Namespace) -> int:
    from fmnist_core.runs.trained import load_run
    from fmnist_core.views.unit_sheet import unit_sheet

    cache = RunCache()
    run = load_run(args.run, cache)
    out = Path(args.out or f"unit-{run.run_id[:8]}-{args.layer}-{args.unit}.png")
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out: {str(out)[:60]!r} does not end in .png")
    sheet = unit_sheet(run, cache, args.layer, args.unit)
    staging = out.with_name(f".{out.name}.partial")
    sheet.save(staging, format="PNG")
    staging.replace(out)  # whole or not at all
    print(out)
    return 0
