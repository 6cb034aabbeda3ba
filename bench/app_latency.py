"""How quickly the app answers in a real browser, alone and while a training runs.

Measures, in headless Chromium against `streamlit run app.py` on a temporary cache:
  - the first render on a cold server (from page.goto until the script has finished and drawn);
  - a page's render alone and while a training runs (median of several loads);
  - a training's time alone and while pages render (the training runs as the app's jobs do: in
    its own process, here `python -m fmnist_core train`).
Goal (issue 15): first render <= 3 s; neither the render nor the training slowed more than 1.5x.

Run: .venv/bin/python bench/app_latency.py [--page try_it] [--loads 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TRAINING = ["train", "conv_autoencoder", "--epochs", "1", "--set", "train_subset=20000", "--quiet", "--json"]
SETTLED = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  return app && app.getAttribute("data-test-script-state") === "notRunning"
    && !document.querySelector("[data-testid='stSkeleton']") && document.querySelector("h1");
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cache: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
        ],
        cwd=ROOT,
        env={**os.environ, "FMNIST_CACHE": cache, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"  # loopback only
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return server, url
        except OSError:
            time.sleep(0.2)


def something_to_show(cache: str) -> None:
    """A small classifier and autoencoder in the cache, for the pages to show."""
    for model in ("mlp", "conv_autoencoder"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "fmnist_core",
                "train",
                model,
                "--epochs",
                "1",
                "--set",
                "train_subset=5000",
                "--quiet",
            ],
            cwd=ROOT,
            env={**os.environ, "FMNIST_CACHE": cache},
            check=True,
            capture_output=True,
        )


def render(page, url: str) -> float:
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_timeout(300)  # the script starts after the page's websocket opens
    page.wait_for_function(SETTLED, timeout=120_000)
    return time.perf_counter() - start


def train_seconds(cache: str, threads: int | None = None, epochs: int = 1) -> float:
    """Wall time of one training in its own process (the interpreter's start excluded: the JSON's own figure)."""
    training = [str(epochs) if word == "1" else word for word in TRAINING]  # --epochs 1 -> epochs
    done = subprocess.run(
        [sys.executable, "-m", "fmnist_core", *training, "--seed", str(time.time_ns() % 10**6)],
        cwd=ROOT,
        env={**os.environ, "FMNIST_CACHE": cache, **({"OMP_NUM_THREADS": str(threads)} if threads else {})},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["train_seconds"]


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--page", default="try_it", help="the page rendered again and again")
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument(
        "--every",
        type=float,
        default=3.0,
        help="seconds from one page load to the next while training (0: back to back)",
    )
    parser.add_argument(
        "--train-threads", type=int, help="torch threads of the training (default: every core)"
    )
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="fmnist_latency_")
    something_to_show(cache)
    server, url = start_server(cache)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            first = render(page, url)
            target = f"{url}/{args.page}"
            render(page, target)  # its caches warm
            alone = [render(page, target) for _ in range(args.loads)]
            training_alone = train_seconds(cache, args.train_threads)
            together, result = [], {}
            trainer = threading.Thread(
                target=lambda: result.setdefault("seconds", train_seconds(cache, args.train_threads))
            )
            trainer.start()
            time.sleep(4)  # past the interpreter's start: the training is in its steps
            while trainer.is_alive():
                began = time.perf_counter()
                together.append(render(page, target))
                time.sleep(max(0.0, args.every - (time.perf_counter() - began)))  # a person reading
            trainer.join()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
        shutil.rmtree(cache, ignore_errors=True)
    render_alone, render_busy = statistics.median(alone), statistics.median(together)
    print(f"{'what':52s} {'alone':>8s} {'together':>9s} {'ratio':>6s}")
    print(f"{'first render, cold server (s)':52s} {first:8.2f}")
    print(
        f"{f'render of /{args.page} (s, median)':52s} {render_alone:8.2f} {render_busy:9.2f} {render_busy / render_alone:6.2f}"
    )
    seconds = result["seconds"]
    print(
        f"{'training, S0 autoencoder 1 epoch x 20,000 images (s)':52s} {training_alone:8.1f} {seconds:9.1f} {seconds / training_alone:6.2f}"
    )
    print(f"renders while training: {len(together)}, one every {args.every:g} s at most")


if __name__ == "__main__":
    main()
