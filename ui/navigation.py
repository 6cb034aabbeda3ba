"""The lab's pages and the one way into them, including a page opened by its own URL first.

Streamlit serves a `pages/` folder on its own (file names in the sidebar, no page config) until
some session has run app.py's `st.navigation`: the first visit to /autoencoder after a start
would get that. Each page therefore calls `enter_through_app()` first: outside app.py's
navigation it runs the navigation itself (which shows the page asked for) and stops.
"""

import logging
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

import streamlit as st

from ui import warmup

log = logging.getLogger("fmnist_lab")

_inside = threading.local()  # each script run has its own thread


PAGES = [  # file, title, icon; a page's URL path is its file's name
    ("pages/home.py", "Home", ":material/home:"),
    ("pages/autoencoder.py", "Autoencoder", ":material/compress:"),
    ("pages/classifier.py", "Classifier", ":material/category:"),
    ("pages/latent.py", "Latent space", ":material/scatter_plot:"),
    ("pages/sweep.py", "Latent size sweep", ":material/stacked_line_chart:"),
    ("pages/compare.py", "Compare runs", ":material/compare_arrows:"),
    ("pages/reports.py", "Reports", ":material/description:"),
    ("pages/try_it.py", "Try it", ":material/draw:"),
    ("pages/quiz.py", "You vs the model", ":material/sports_score:"),
    ("pages/suspects.py", "Suspect data", ":material/report:"),
]


def pages() -> list:
    return [st.Page(file, title=title, icon=icon, default=file == PAGES[0][0]) for file, title, icon in PAGES]


def unknown_path(url: str, base: str, known: set[str]) -> str | None:
    """The page path a URL asks for when no page has it (None for a known page or the root)."""
    path = urlsplit(url).path.strip("/")
    base = base.strip("/")
    if base and (path == base or path.startswith(base + "/")):
        path = path[len(base) :].strip("/")
    return path if path and path not in known else None


def run_app() -> None:
    """Page config, navigation, and the page the URL names."""
    st.set_page_config(page_title="Fashion-MNIST Lab", page_icon="👕", layout="wide")
    navigation = st.navigation(pages())
    _inside.active = True
    try:
        if navigation.url_path:  # every page but Home imports torch and the data anyway: wait for them
            warmup.wait()
        else:
            warmup.start()
        if warmup.ready():  # before that no job can run: nothing to list
            from fmnist_core import starter
            from ui.panels import queue_sidebar
            from ui.state import job_queue, run_cache

            starter.start_if_empty(job_queue(), run_cache())  # an empty cache trains the starter set
            with st.sidebar:
                queue_sidebar()
        if not navigation.url_path and not st.session_state.get("nav:checked_url"):
            st.session_state["nav:checked_url"] = True  # the URL a session opened with: once
            wrong = unknown_path(
                st.context.url or "",
                st.get_option("server.baseUrlPath") or "",
                {Path(file).stem for file, _, _ in PAGES},
            )
            if wrong:
                st.warning(f"There is no page at /{wrong}: here is Home. The lab's pages are in the sidebar.")
        navigation.run()
    except Exception as error:  # st.stop / st.rerun are BaseExceptions and pass through
        if os.environ.get("FMNIST_DEBUG") == "1":  # the tests and developers see the traceback
            raise
        log.exception("page %s failed", navigation.title)
        st.error(
            f"This page could not finish: {' '.join(str(error).split()) or type(error).__name__}. "
            "Your runs and any training in progress are untouched; the details are in the server's log."
        )
    finally:
        _inside.active = False


def enter_through_app() -> None:
    """Called first by every page: run inside app.py's navigation, or start it and stop here."""
    if getattr(_inside, "active", False):
        return
    run_app()
    st.stop()
