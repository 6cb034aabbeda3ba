"""What watching a training costs: the same job queued from the Classifier page, once with the page
left open on its live view and once with the tab sent elsewhere, side by side.

For each: the job's wall time from Train to cached, its training seconds, and the CPU seconds the
Streamlit server (the job's own process excluded) and Chromium spent meanwhile, as a share of one
core. Goal (issue 27): server + browser <= 10% of one core while a page watches.

Run: .venv/bin/python bench/watch_cost.py [--epochs 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_latency import CHROMIUM, SETTLED, start_server  # noqa: E402

from fmnist_core.store.cache import RunCache  # noqa: E402


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def browser_processes(browser_pid: int) -> list[psutil.Process]:
    root = psutil.Process(browser_pid)
    return [root, *root.children(recursive=True)]


def one_job(page, url: str, cache: RunCache, server: psutil.Process, seed: int, watched: bool, args) -> dict:
    query = f"cls:model=mlp&cls:mlp:epochs={args.epochs}&cls:mlp:seed={seed}"
    page.goto(f"{url}/classifier?{query}")
    page.wait_for_timeout(300)
    page.wait_for_function(SETTLED, timeout=120_000)
    before = set(cache.run_ids())
    browser = browser_processes(args.browser_pid)
    start_server_cpu, start_browser_cpu = cpu_seconds([server]), cpu_seconds(browser)
    began = time.perf_counter()
    page.get_by_role("button", name="Train").click()
    if not watched:
        page.wait_for_timeout(500)  # the click reaches the server, then the tab goes elsewhere
        page.goto("about:blank")
    while not (set(cache.run_ids()) - before):
        time.sleep(0.2)
    wall = time.perf_counter() - began
    browser = browser_processes(args.browser_pid)
    run_id = (set(cache.run_ids()) - before).pop()
    config = cache.load_config(run_id)
    assert (config.model, config.epochs, config.seed) == ("mlp", args.epochs, seed), config
    return {
        "wall": wall,
        "train": cache.load_record(run_id)[1]["train_seconds"],
        "server": (cpu_seconds([server]) - start_server_cpu) / wall,
        "browser": (cpu_seconds(browser) - start_browser_cpu) / wall,
    }


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="fmnist_watch_")
    server_process, url = start_server(root, {"FMNIST_STARTER": "0"})  # only the jobs measured
    server = psutil.Process(server_process.pid)
    results = {True: [], False: []}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            args.browser_pid = next(
                c.pid for c in psutil.Process().children(recursive=True) if "chrom" in c.name().lower()
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            cache = RunCache(root)
            one_job(page, url, cache, server, 999, True, args)  # warm: torch and the data loaded
            for round_ in range(args.rounds):
                for watched in (True, False):
                    result = one_job(page, url, cache, server, round_ * 2 + watched, watched, args)
                    results[watched].append(result)
                    print(
                        f"{'watched' if watched else 'closed '} wall {result['wall']:.1f} s, training "
                        f"{result['train']:.1f} s, server {result['server']:.0%} of a core, browser "
                        f"{result['browser']:.0%}",
                        flush=True,
                    )
            browser.close()
    finally:
        server_process.terminate()
    print(f"\nMLP, {args.epochs} epochs on 60,000 images; medians over {args.rounds} rounds")
    print(f"{'':10s} {'wall s':>8s} {'train s':>8s} {'server':>8s} {'browser':>8s}")
    for watched in (True, False):
        rows = results[watched]
        figures = [statistics.median(r[key] for r in rows) for key in ("wall", "train", "server", "browser")]
        print(
            f"{'watched' if watched else 'tab closed':10s} {figures[0]:8.1f} {figures[1]:8.1f} "
            f"{figures[2]:8.0%} {figures[3]:8.0%}"
        )


if __name__ == "__main__":
    main()
