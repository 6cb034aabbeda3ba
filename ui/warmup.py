"""The app's heavy start-up (torch, the core, the data set), once per server, in a background thread.

The first visitor's page shows at once (the home page imports none of it), with a placeholder
where the data will be; other pages import what they need and wait on the same imports.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time

log = logging.getLogger("fmnist_lab")
HEAVY = (
    "torch",
    "fmnist_core.runs.trained",
    "fmnist_core.runs.jobs",
    "ui.resources",
    "ui.runs",
    "ui.jobs",
    "ui.panels",
    "ui.plots",
)
# Seconds before the warm-up starts: the first page's own drawing (in a browser that is often on
# the same cores) goes first.
# Measured with bench/app_latency.py: 3.6 s to the first render when it starts at once, 2.1 s so.
DELAY = 1.5
_done = threading.Event()
_lock = threading.Lock()
_started = False


def start() -> None:
    """Begin warming up, once per process; returns at once."""
    global _started
    with _lock:
        if _started:
            return
        _started = True
    threading.Thread(target=_warm, name="fmnist-warmup", daemon=True).start()


def _warm() -> None:
    time.sleep(DELAY)
    try:
        for name in HEAVY:
            importlib.import_module(name)
        from fmnist_core.data.fashion import load_data

        load_data()  # parsed and checked once; every page then has it at once
    except Exception:  # the page that needs it raises it again, as one line
        log.exception("warm-up failed")
    finally:
        _done.set()


def ready() -> bool:
    return _done.is_set()


def wait(timeout: float | None = None) -> bool:
    """Block until warm (or `timeout` seconds); whether it is."""
    start()
    return _done.wait(timeout)
