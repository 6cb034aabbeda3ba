"""How the lab holds up as the cache grows: tiny real runs (an MLP trained one epoch on 64
images, scored on 100 test images), and at 100, 1,000 and 5,000 of them the run listing cold (every
entry's files read, as a new server does), the listing again (nothing changed, and one entry
added), and the Compare runs and Explore runs pages rendered through Streamlit's AppTest, with the
process's memory.

Run: .venv/bin/python bench/run_scale.py [--counts 100,1000,5000] [--cache DIR]
(a cache folder per count under DIR, each started as a copy of the one below it; it trains the
runs a folder lacks, about 0.12 s a run here; folders kept with --cache are reused)
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tiny(i: int):
    from fmnist_core.training.config import RunConfig

    lrs = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    return RunConfig.for_model(
        "mlp",
        {"dropout": (i // 5 % 6) / 10},
        epochs=1,
        train_subset=64,
        test_subset=100,
        lr=lrs[i % 5],
        seed=i // 30,
    )


def fill(cache, count: int) -> None:
    from fmnist_core.runs.trained import get_or_train

    have = len(cache.run_ids())
    start = time.perf_counter()
    for i in range(have, count):
        get_or_train(tiny(i), cache=cache)
    if count > have:
        print(f"  trained {count - have} runs in {time.perf_counter() - start:.0f} s")


def forget(table, entries, cache, kept: bool) -> None:
    """This process's listing forgotten, as in a new process; and the kept one too unless `kept`."""
    table._ROWS.clear()
    table._LOADED.clear()
    if not kept:
        (cache.root / table.LISTING).unlink(missing_ok=True)
        entries._VERIFIED.clear()
        entries.LOADABLE.clear()


def timed(action, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def render(path: str) -> float:
    """One page's script run through AppTest after a first (warming) run: seconds."""
    from streamlit.testing.v1 import AppTest

    from ui import warmup

    warmup.wait()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600).run()
    at.switch_page(path)
    at.run()
    assert not at.exception, at.exception[0].value
    return timed(lambda: at.run(), repeats=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="100,1000,5000")
    parser.add_argument("--cache", default="")
    args = parser.parse_args()
    root = Path(args.cache or tempfile.mkdtemp(prefix="fmnist-scale-"))
    from fmnist_core.store import entries, table
    from fmnist_core.store.cache import RunCache

    print(f"caches under {root}; {os.cpu_count()} cores")
    rows = []
    below = None
    for count in sorted(int(c) for c in args.counts.split(",")):
        folder = root / str(count)
        if not folder.is_dir() and below is not None:
            shutil.copytree(below, folder)
        below = folder
        cache = RunCache(folder)
        os.environ["FMNIST_CACHE"] = str(folder)  # the pages' cache
        fill(cache, count)
        listing = functools.partial(table.list_runs, cache)
        forget(table, entries, cache, kept=False)  # a first listing ever: every entry's files read and hashed
        cold = timed(listing, repeats=1)
        forget(table, entries, cache, kept=True)  # a new server on a cache listed before: the kept listing
        restart = timed(listing, repeats=1)
        warm = timed(listing)
        stamp = timed(cache.stamp)
        fill(cache, len(cache.run_ids()) + 1)  # one new run
        added = timed(listing, repeats=1)
        compare = render("app_pages/compare.py")
        explorer = render("app_pages/explorer.py")
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append((count, cold, restart, warm, added, stamp, compare, explorer, memory))
        print(f"  {count} runs done", flush=True)
    print()
    print(
        "runs   first listing  new server  listing again  after 1 new  stamp    Compare page  Explore page  peak RSS"
    )
    for count, cold, restart, warm, added, stamp, compare, explorer, memory in rows:
        print(
            f"{count:>5}  {cold:>11.2f} s  {restart:>8.2f} s  {warm:>11.3f} s  {added:>9.3f} s  {stamp:.3f} s"
            f"  {compare:>10.2f} s  {explorer:>10.2f} s  {memory:>6.0f} MB"
        )


if __name__ == "__main__":
    main()
