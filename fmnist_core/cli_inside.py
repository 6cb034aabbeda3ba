"""`python -m fmnist_core inside`: one unit's sheet as a PNG (fmnist_core.views.unit_sheet)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fmnist_core.store.cache import RunCache, ids_named, why_not_named


def add_inside(commands) -> None:
    parser = commands.add_parser(
        "inside", help="one unit of a cached run as a picture: what it responds to, its images, what feeds it"
    )
    parser.add_argument("--run", required=True, help="a cached run's id, or its first 6 characters or more")
    parser.add_argument(
        "--layer", required=True, help="a layer's name, as the Inside page shows it (features.4)"
    )
    parser.add_argument("--unit", required=True, type=int, help="the unit (a conv layer's channel)")
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="the PNG to write (default: unit-RUN-LAYER-UNIT.png here, RUN the id's first 8 characters)",
    )
    parser.set_defaults(handler=command_inside)


def command_inside(args: argparse.Namespace) -> int:
    from fmnist_core.runs.trained import load_run
    from fmnist_core.views.unit_sheet import unit_sheet

    cache = RunCache()
    run = load_run(full_id(args.run, cache), cache)
    out = Path(args.out or f"unit-{run.run_id[:8]}-{args.layer}-{args.unit}.png")
    if out.suffix.lower() != ".png" or out.name.lower() == ".png":
        raise ValueError(f"--out: {str(out)[:60]!r} is not a FILE.png")
    if out.is_dir():
        raise ValueError(f"--out: {str(out)[:60]!r} is a folder")
    if not out.parent.is_dir():
        raise ValueError(f"--out: the folder {str(out.parent)[:60]!r} does not exist")
    sheet = unit_sheet(run, cache, args.layer, args.unit)
    staging = out.with_name(f".{out.name}.partial")
    try:
        sheet.save(staging, format="PNG")
        staging.replace(out)  # whole or not at all
    except OSError as error:
        raise OSError(f"--out: cannot write {str(out)[:60]!r} ({error.strerror or error})") from None
    finally:
        staging.unlink(missing_ok=True)
    print(out)
    return 0


def full_id(given: str, cache: RunCache) -> str:
    """A run id, or the one cached run whose id starts with `given` (6 characters or more)."""
    found = ids_named(given, cache.run_ids())  # a listing: load_run verifies the one it gets
    problem = why_not_named(given, found)
    if problem is None:
        return found[0]
    if found:
        raise ValueError(f"--run: {given[:20]!r} {problem}")
    return given  # load_run says it is not cached
