"""The lab's pages and the one way into them: app.py's `st.navigation` over PAGES.

The page scripts live in app_pages/, not pages/: Streamlit would serve a folder named pages/ on its
own (file names in the sidebar, no page config) to a first visitor who came by a page's URL.
"""

import functools
import logging
from pathlib import Path
from urllib.parse import urlsplit

import streamlit as st

from fmnist_core.base import environment
from ui import keys, warmup

log = logging.getLogger("fmnist_lab")

PAGES = [  # file, title, icon; a page's URL path is its file's name
    ("app_pages/home.py", "Home", ":material/home:"),
    ("app_pages/autoencoder.py", "Autoencoder", ":material/compress:"),
    ("app_pages/classifier.py", "Classifier", ":material/category:"),
    ("app_pages/latent.py", "Latent space", ":material/scatter_plot:"),
    ("app_pages/inside.py", "Inside the network", ":material/hub:"),
    ("app_pages/sweep.py", "Latent size sweep", ":material/stacked_line_chart:"),
    ("app_pages/hpsweep.py", "Hyperparameter sweep", ":material/tune:"),
    ("app_pages/explorer.py", "Explore runs", ":material/query_stats:"),
    ("app_pages/compare.py", "Compare runs", ":material/compare_arrows:"),
    ("app_pages/reports.py", "Reports", ":material/description:"),
    ("app_pages/try_it.py", "Try it", ":material/draw:"),
    ("app_pages/quiz.py", "You vs the model", ":material/sports_score:"),
    ("app_pages/suspects.py", "Suspect data", ":material/report:"),
    ("app_pages/speedrun.py", "Speedrun", ":material/speed:"),
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


@functools.cache
def settings_error() -> str:
    """Why the lab's settings are wrong ("" where they are right), checked once per process: they
    are read when the server starts, so a page run has nothing new to check (scripts/run_app.sh
    checks before the server starts; this, where it was started otherwise)."""
    try:
        environment.check_all()
    except ValueError as error:
        return str(error)
    return ""


def take_admin_link() -> None:
    """A teacher's ?admin=TOKEN (any case of `admin`) leaves the address at once, before the lab
    has warmed up (on a projected screen it showed for seconds): kept for people.arrive to check.
    Kept before it leaves: a rerun asked for meanwhile ends this run at the deletion."""
    for key in [key for key in st.query_params if key.lower() == "admin"]:
        st.session_state[keys.ADMIN_GIVEN] = st.query_params.get(key)
        del st.query_params[key]


def run_app() -> None:
    """Page config, navigation, and the page the URL names."""
    st.set_page_config(page_title="Fashion-MNIST Lab", page_icon="👕", layout="wide")
    wrong = settings_error()
    if wrong:
        st.error(f"The lab's settings: {wrong}. Fix it and start the lab again.")
        st.stop()
    take_admin_link()
    navigation = st.navigation(pages(), expanded=True)  # every page in view: none behind "View more"
    try:
        if navigation.url_path:  # every page but Home imports torch and the data anyway: wait for them
            warmup.wait()
        else:
            warmup.start()
        st.session_state.pop(keys.LIVE_SHOWN, None)  # until this run's page shows a job's live view
        if warmup.ready():  # before that no job can run: nothing to list
            from fmnist_core.runs import starter
            from ui import people
            from ui.jobs import job_queue
            from ui.queue_panels import queue_sidebar
            from ui.resources import run_cache

            try:
                queue = job_queue()
            except ValueError as error:  # FMNIST_SCHEDULER unreachable: no queue to train through
                st.error(f"The lab's settings: {error}. Fix it and start the lab again.")
                st.stop()
            people.arrive()
            starter.start_if_empty(queue, run_cache())  # an empty cache trains the starter set
            with st.sidebar:
                queue_sidebar()
        if not navigation.url_path and not st.session_state.get(keys.NAV_CHECKED_URL):
            st.session_state[keys.NAV_CHECKED_URL] = True  # the URL a session opened with: once
            wrong = unknown_path(
                st.context.url or "",
                st.get_option("server.baseUrlPath") or "",
                {Path(file).stem for file, _, _ in PAGES},
            )
            if wrong:
                st.warning(f"There is no page at /{wrong}: here is Home. The lab's pages are in the sidebar.")
        navigation.run()
    except Exception as error:  # st.stop / st.rerun are BaseExceptions and pass through
        if environment.flag("FMNIST_DEBUG"):  # the tests and developers see the traceback
            raise
        log.exception("page %s failed", navigation.title)
        st.error(
            f"This page could not finish: {' '.join(str(error).split()) or type(error).__name__}. "
            "Your runs and any training in progress are untouched; the details are in the server's log."
        )
