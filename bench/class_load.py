"""A class on one lab: 10 and 30 browser sessions on pages with charts while a job trains.

Starts `streamlit run app.py` on a temporary cache (two small runs to show), times one training
alone (in its own process, as the app's jobs train), then for each session count opens that many
browser contexts in headless Chromium (Home, Compare runs and Explore runs in turn), each loading
its page again and again while the same training runs, and prints the page renders' p50 / p95,
the training's slowdown against alone, the server's peak memory, and any session that saw an
error or lost its connection. The browsers run on the same cores as the server: a class's
browsers would not, so the slowdowns here are an upper bound.

Run: .venv/bin/python bench/class_load.py [--sessions 10,30] [--every 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_latency import CHROMIUM, SETTLED, something_to_show, start_server, train_seconds  # noqa: E402

PAGES = ("", "compare", "explorer")
BROKEN = (
    """() => !!document.querySelector("[data-testid='stException'], [data-testid='stConnectionStatus']")"""
)


def peak_memory(pid: int, stop: threading.Event, seen: list[int]) -> None:
    """The server process's resident memory, polled until `stop` (kB, in `seen`)."""
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    seen.append(int(line.split()[1]))
        except OSError:
            return
        stop.wait(0.5)


async def one_session(browser, url: str, index: int, training: threading.Thread, every: float) -> dict:
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await context.new_page()
    target = f"{url}/{PAGES[index % len(PAGES)]}"
    times, broken = [], 0
    try:
        while training.is_alive() or len(times) < 2:
            began = time.perf_counter()
            await page.goto(target)
            await page.wait_for_timeout(300)
            await page.wait_for_function(SETTLED, timeout=300_000)
            times.append(time.perf_counter() - began)
            broken += bool(await page.evaluate(BROKEN))
            await asyncio.sleep(max(0.0, every - (time.perf_counter() - began)))
    except Exception as error:  # a session that could not finish counts as dropped
        return {"times": times, "broken": broken, "dropped": f"{type(error).__name__}: {str(error)[:120]}"}
    finally:
        await context.close()
    return {"times": times, "broken": broken, "dropped": ""}


async def sessions(url: str, count: int, training: threading.Thread, every: float) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        results = await asyncio.gather(*(one_session(browser, url, i, training, every) for i in range(count)))
        await browser.close()
    return list(results)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="10,30")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between a session's loads")
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="fmnist_class_")
    something_to_show(cache)
    server, url = start_server(cache)
    rows = []
    try:
        asyncio.run(sessions(url, 1, threading.Thread(), args.every))  # the server's first visit warms it
        alone = train_seconds(cache)
        print(f"training alone: {alone:.1f} s; {os.cpu_count()} cores", flush=True)
        for count in (int(c) for c in args.sessions.split(",")):
            result: dict = {}
            training = threading.Thread(
                target=lambda out=result: out.setdefault("seconds", train_seconds(cache))
            )
            stop, memory = threading.Event(), []
            watcher = threading.Thread(target=peak_memory, args=(server.pid, stop, memory))
            watcher.start()
            training.start()
            found = asyncio.run(sessions(url, count, training, args.every))
            training.join()
            stop.set()
            watcher.join()
            times = [t for session in found for t in session["times"]] or [float("nan")]
            rows.append(
                (
                    count,
                    len(times),
                    statistics.median(times),
                    percentile(times, 0.95),
                    result["seconds"] / alone,
                    max(memory) / 1024 if memory else float("nan"),
                    sum(session["broken"] for session in found),
                    [session["dropped"] for session in found if session["dropped"]],
                    server.poll() is None,
                )
            )
            print(
                f"  {count} sessions done",
                *{s["dropped"] for s in found if s["dropped"]},
                sep="\n    ",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(
        "\nsessions  renders  p50      p95      training slowdown  server peak RSS  errors  dropped  server alive"
    )
    for count, n, p50, p95, slowdown, rss, broken, dropped, alive in rows:
        print(
            f"{count:>8}  {n:>7}  {p50:>5.2f} s  {p95:>5.2f} s  {slowdown:>15.2f}x  {rss:>12.0f} MB"
            f"  {broken:>6}  {len(dropped):>7}  {alive}"
        )
        for why in dropped[:3]:
            print(f"          dropped: {why}")


if __name__ == "__main__":
    main()
