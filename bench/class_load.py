"""A class on one lab: 10 and 30 sessions on pages with charts while a job trains.

Starts `streamlit run app.py` on a temporary cache (two small runs to show, `--runs N` small runs
more), on 127.0.0.1: one process, or several (`--servers 1,2`) sharing one job queue in the cache folder's SQLite file
with the sessions shared out between them in turn, as sticky sessions behind nginx would (the
servers' CPU time per render is measured too). Each server renders each page once first (it
loads torch and the data set on its first visit; a class arrives at a warm server). Times one training
alone (in its own process, as the app's jobs train), then for each session count opens that many
sessions (Home, Compare runs and Explore runs in turn), each running its page again and again
while the same training runs, and prints the page renders' p50 / p95, the training's slowdown
against alone, the server's peak memory, and any session that saw an error or lost its connection.

Two kinds of session:
  --client protocol (default): a websocket client that speaks Streamlit's own protocol (the
    BackMsg / ForwardMsg protobufs a browser sends and receives). Sessions arrive spread over the
    first `--every` seconds; each stays connected,
    reruns its page every `--every` seconds (a person clicking) and, in between, reruns the
    page's live fragments at the intervals the server asks for (as a browser does). No browser
    runs on the server's cores, so this measures the server itself.
  --client browser: headless Chromium contexts that load the page again and again. The browsers
    share the server's cores here (a class's would not): an upper bound.

Run: .venv/bin/python bench/class_load.py [--sessions 10,30] [--every 3] [--client protocol] [--servers 1,2] [--epochs 6] [--runs 40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from math import nan
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_latency import CHROMIUM, SETTLED, something_to_show, start_server, train_seconds  # noqa: E402

PAGES = ("", "compare", "explorer")
BROKEN = (
    """() => !!document.querySelector("[data-testid='stException'], [data-testid='stConnectionStatus']")"""
)


def at(url, index: int) -> str:
    """Session `index`'s server: with several, the sessions are shared out in turn (as sticky
    sessions behind a load balancer share out browsers)."""
    return url[index % len(url)] if isinstance(url, list) else url


def peak_memory(pids: list[int], stop: threading.Event, seen: list[int]) -> None:
    """The server processes' resident memory together, polled until `stop` (kB, in `seen`)."""
    while not stop.is_set():
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                return
        seen.append(total)
        stop.wait(0.5)


def cpu_seconds(pids: list[int]) -> float:
    """The processes' CPU time so far (user + system), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


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


async def run_script(ws, page: str, timers: dict, fragment: str = "") -> tuple[float, int]:
    """Ask the server to run `page` (or one of its fragments) and read its answer to the end.

    Returns the seconds until the run finished and how many exceptions it drew; the fragments
    the page asks to rerun are kept in `timers` (id -> [interval, next time due])."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    ask = BackMsg()
    ask.rerun_script.page_name = page
    ask.rerun_script.fragment_id = fragment
    ask.rerun_script.is_auto_rerun = bool(fragment)
    began, errors = time.perf_counter(), 0
    await ws.send(ask.SerializeToString())
    while True:
        answer = ForwardMsg()
        answer.ParseFromString(await asyncio.wait_for(ws.recv(), timeout=300))
        kind = answer.WhichOneof("type")
        if kind == "new_session" and not answer.metadata.run.fragment_ids:
            timers.clear()  # a whole run (a fragment's st.rerun too): its fragments are announced anew
        elif kind == "delta" and answer.delta.WhichOneof("type") == "new_element":
            errors += answer.delta.new_element.WhichOneof("type") == "exception"
        elif kind == "auto_rerun":
            interval = answer.auto_rerun.interval
            timers[answer.auto_rerun.fragment_id] = [interval, time.perf_counter() + interval]
        elif kind == "script_finished" and answer.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
            took = time.perf_counter() - began
            return took, errors + (answer.script_finished == ForwardMsg.FINISHED_WITH_COMPILE_ERROR)


async def protocol_session(
    url: str, index: int, training: threading.Thread, every: float, delay: float
) -> dict:
    """One person on one page, through Streamlit's websocket protocol (see the module's note),
    arriving `delay` seconds after the first (a class does not press Enter in one instant)."""
    import websockets

    page = PAGES[index % len(PAGES)]
    times, fragment_times, broken = [], [], 0
    stream = url.replace("http", "ws", 1) + "/_stcore/stream"
    try:
        await asyncio.sleep(delay)
        async with websockets.connect(stream, subprotocols=["streamlit"], origin=url, max_size=None) as ws:
            while training.is_alive() or len(times) < 3:
                timers: dict = {}
                took, errors = await run_script(ws, page, timers)
                times.append(took)
                broken += errors
                until = time.perf_counter() + max(0.0, every - took)
                while (now := time.perf_counter()) < until:
                    fragment, (interval, due) = min(
                        timers.items(), key=lambda item: item[1][1], default=("", (0, until))
                    )
                    if due > now:
                        await asyncio.sleep(min(due, until) - now)
                        continue
                    took, errors = await run_script(ws, page, timers, fragment)
                    fragment_times.append(took)
                    broken += errors
                    timers[fragment] = [interval, time.perf_counter() + interval]
    except Exception as error:  # a session that could not finish counts as dropped
        return {
            "times": times,
            "fragments": fragment_times,
            "broken": broken,
            "dropped": f"{type(error).__name__}: {str(error)[:120]}",
        }
    return {"times": times, "fragments": fragment_times, "broken": broken, "dropped": ""}


async def sessions(
    url: str | list[str], count: int, training: threading.Thread, every: float, client: str = "browser"
) -> list[dict]:
    if client == "protocol":
        return list(
            await asyncio.gather(
                *(protocol_session(at(url, i), i, training, every, i * every / count) for i in range(count))
            )
        )
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        results = await asyncio.gather(
            *(one_session(browser, at(url, i), i, training, every) for i in range(count))
        )
        await browser.close()
    return list(results)


def more_runs(cache: str, count: int) -> None:
    """`count` small MLP runs more in the cache (a class's runs to list and explore): 1 epoch on
    2,000 images, over a grid of learning rates, dropouts and seeds."""
    if count <= 0:
        return
    code = (
        "import itertools, sys\n"
        "from fmnist_core.runs.trained import get_or_train\n"
        "from fmnist_core.store.cache import RunCache\n"
        "from fmnist_core.training.config import RunConfig\n"
        "grid = itertools.product((0, 1, 2), (1e-3, 3e-3, 1e-2, 3e-2), (0.0, 0.1, 0.2, 0.3, 0.4))\n"
        "for seed, lr, p in itertools.islice(grid, int(sys.argv[2])):\n"
        "    config = RunConfig.for_model('mlp', {'dropout': p}, epochs=1, lr=lr, train_subset=2000, seed=seed)\n"
        "    get_or_train(config, cache=RunCache(sys.argv[1]))\n"
    )
    subprocess.run([sys.executable, "-c", code, cache, str(count)], check=True)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def measure(
    url, servers, cache: str, count: int, every: float, client: str, alone: float, epochs: int
) -> tuple:
    """`count` sessions on the servers at `url` while one training runs apart: one table row."""
    result: dict = {}
    training = threading.Thread(
        target=lambda out=result: out.setdefault("seconds", train_seconds(cache, epochs=epochs))
    )
    pids = [server.pid for server in servers]
    stop, memory = threading.Event(), []
    watcher = threading.Thread(target=peak_memory, args=(pids, stop, memory))
    watcher.start()
    cpu = cpu_seconds(pids)
    training.start()
    found = asyncio.run(sessions(url, count, training, every, client))
    training.join()
    cpu = cpu_seconds(pids) - cpu
    stop.set()
    watcher.join()
    times = [t for session in found for t in session["times"]] or [float("nan")]
    fragments = [t for session in found for t in session.get("fragments", [])]
    print(
        f"  {len(servers)} server(s), {count} sessions done",
        *{s["dropped"] for s in found if s["dropped"]},
        sep="\n    ",
        flush=True,
    )
    return (
        len(servers),
        count,
        len(times),
        statistics.median(times),
        percentile(times, 0.95),
        (
            len(fragments),
            *((statistics.median(fragments), percentile(fragments, 0.95)) if fragments else (nan, nan)),
        ),
        cpu / max(len(times) + len(fragments), 1),  # the servers' CPU seconds per render, fragments included
        result["seconds"] / alone,
        max(memory) / 1024 if memory else float("nan"),
        sum(session["broken"] for session in found),
        [session["dropped"] for session in found if session["dropped"]],
        all(server.poll() is None for server in servers),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="10,30")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between a session's loads")
    parser.add_argument("--client", choices=("protocol", "browser"), default="protocol")
    parser.add_argument(
        "--servers",
        default="1",
        help="server processes, e.g. 1,2: they share the cache folder's queue "
        "and the sessions are shared out between them in turn",
    )
    parser.add_argument(
        "--epochs", type=int, default=1, help="epochs of the training apart (the load lasts as long)"
    )
    parser.add_argument("--runs", type=int, default=0, help="small runs more in the cache (at most 60)")
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="fmnist_class_")
    something_to_show(cache)
    more_runs(cache, args.runs)
    shared = {"FMNIST_WORKERS": "0"}  # the cache folder's queue, whose jobs train apart, as in a class
    rows, alone = [], None
    for count_servers in (int(n) for n in args.servers.split(",")):
        started = [start_server(cache, shared) for _ in range(count_servers)]
        servers, urls = [s for s, _ in started], [u for _, u in started]
        try:
            # Warm each server on each page first: a server process loads torch and the data set once,
            # on its first visit, and a class arrives at a server that has; the rows measure after.
            warm = len(PAGES) * count_servers
            asyncio.run(sessions(urls, warm, threading.Thread(), args.every, args.client))
            if alone is None:
                alone = train_seconds(cache, epochs=args.epochs)
                print(f"training alone: {alone:.1f} s; {os.cpu_count()} cores", flush=True)
            for count in (int(c) for c in args.sessions.split(",")):
                rows.append(measure(urls, servers, cache, count, args.every, args.client, alone, args.epochs))
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=30)
    print(f"\nclient: {args.client}; a page rerun every {args.every:g} s per session; jobs train apart")
    print(
        "servers  sessions  renders  p50      p95      fragment reruns  p50      p95      CPU per render"
        "  training slowdown  servers' peak RSS  errors  dropped  servers alive"
    )
    for n_servers, count, n, p50, p95, (nf, f50, f95), per, slowdown, rss, broken, dropped, alive in rows:
        print(
            f"{n_servers:>7}  {count:>8}  {n:>7}  {p50:>5.2f} s  {p95:>5.2f} s  {nf:>15}  {f50:>5.2f} s  {f95:>5.2f} s"
            f"  {per:>12.3f} s  {slowdown:>16.2f}x  {rss:>15.0f} MB  {broken:>6}  {len(dropped):>7}  {alive}"
        )
        for why in dropped[:3]:
            print(f"          dropped: {why}")


if __name__ == "__main__":
    main()
