"""The queue as the pages show it: what a page waits for (and that it fills in when the job ends),
the sidebar's training queue with its Stop buttons, the starter set's progress."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitInvalidLayoutContextError

from fmnist_core import views
from fmnist_core.runs.jobs import FAILED, QUEUED, RUNNING
from ui import keys
from ui.jobs import job_queue
from ui.people import class_mode, is_admin, may_stop, stop_job, whose
from ui.resources import run_cache


def job_name(job) -> str:
    return f"{job.config.model} · `{job.run_id[:6]}`"


def describe_job(job) -> str:
    """One line for a job: model, short id, where it is."""
    name = job_name(job)
    progress = job.latest
    if job.state == QUEUED:
        return f"{name} · queued"
    if progress is None:
        return f"{name} · starting"
    on = f" · on {job.where}" if job.where else ""
    return f"{name} · epoch {progress.epoch}/{progress.epochs} · {progress.eta_words}{on}"


def waiting_for(run_ids=None, kinds=None, otherwise: str = "") -> None:
    """Where a page lacks a run: what trains that will bring it, and when, redrawn every 2 s; the
    whole page reruns as soon as that job ends, so its result shows without a reload. Shows
    `otherwise` where nothing that would help is queued."""
    _waiting(tuple(run_ids or ()), tuple(kinds or ()), otherwise)


@st.fragment(run_every=2.0)
def _waiting(run_ids: tuple, kinds: tuple, otherwise: str) -> None:
    jobs = [
        job
        for job in job_queue().jobs()
        if job.active and (job.run_id in run_ids or job.config.kind in kinds or job.config.model in kinds)
    ]
    key = keys.waiting(run_ids + kinds)
    # Any job it waited for that has ended since the last look (not only the last of them): the
    # page reruns and shows what landed (an MLP done while a VAE still trains fills the page).
    ended = set(st.session_state.get(key, ())) - {job.run_id for job in jobs}
    st.session_state[key] = [job.run_id for job in jobs]
    if ended:
        st.rerun()
    if not jobs:
        if otherwise:
            st.info(otherwise)
        return
    job = min(jobs, key=lambda j: j.state == QUEUED)  # one that trains, where one does
    if job.state == QUEUED:
        ahead = job_queue().position(job.run_id) or 0
        st.info(
            f"Queued: {job_name(job)}, {ahead} training(s) ahead of it. This page "
            "fills in when it is done; no need to reload."
        )
        return
    progress = job.latest
    when = (
        f", ready in about {views.duration(progress.eta_seconds)}"
        if progress is not None and progress.fraction >= 0.1
        else ""
    )
    st.info(
        f"Training now: {describe_job(job)}{when}. This page fills in when it is done; no need to reload."
    )


@st.fragment(run_every=1.0)
def until_ready(ready, message: str) -> None:
    """A caption while first-use work runs in the background; the page reruns when `ready()`."""
    if ready():
        st.rerun()
    st.caption(f":material/hourglass_top: {message}")


def rerun_the_sidebar() -> None:
    """The sidebar's fragment again, after its Stop or Cancel; the whole page where the click came
    in a whole page's run (there Streamlit refuses a fragment's rerun)."""
    try:
        st.rerun(scope="fragment")
    except StreamlitInvalidLayoutContextError:
        st.rerun()


@st.fragment(run_every=5.0)  # secondary: every page's sidebar; a job's own view moves every 3 s
def queue_sidebar() -> None:
    """Every page's sidebar: what trains and waits (with its progress, Stop and Cancel), and the
    last failure, so a job is in view whatever page or settings a person is on. A queue database
    that does not answer (locked too long, made read-only) is one line here, redrawn until it does."""
    queue = job_queue()
    try:
        jobs = queue.jobs()
    except OSError as error:  # store.jobdb.QueueDatabaseError: its one line, never a traceback
        st.warning(f"Training queue: {error}", icon=":material/database:")
        return
    active = [job for job in jobs if job.active]
    failed = [job for job in jobs if job.state == FAILED][-1:]
    if not active and not failed:
        return
    st.markdown("**Training queue**")
    running = [job for job in active if job.state == RUNNING]
    waiting = [job for job in active if job.state != RUNNING]
    for job in running:
        # The job this page shows live: its progress once, there; its Stop stays here, where every
        # page has it (a Stop that came and went with the sidebar's redraws was missed by a click).
        if job.run_id == st.session_state.get(keys.LIVE_SHOWN):
            st.caption(f"{job.config.model} `{job.run_id[:6]}`: training, its progress on this page")
        else:
            st.progress(min(job.latest.fraction, 1.0) if job.latest else 0.0, text=describe_job(job))
        if class_mode():
            st.caption(f"asked for by {whose(job)}")
        if may_stop(job) and st.button(
            "Stop",
            icon=":material/stop:",
            key=f"queue:stop:{job.run_id}",
            disabled=job.stop_requested.is_set(),
            help="A job more people asked for stops when none of them still wants it.",
        ):
            stop_job(job.run_id)
            rerun_the_sidebar()
    if waiting and not running and getattr(queue, "trainers_alive", lambda: 1)() == 0:
        st.caption(
            ":orange[No trainer is running: these wait until one starts "
            "(`python -m fmnist_core worker`, or a server with FMNIST_WORKERS above 0).]"
        )
    if waiting:  # one line each and one button: a queue of five must not push the page's own widgets away
        listed = " · ".join(
            f"{job.config.model} `{job.run_id[:6]}`" + (f" ({whose(job)})" if class_mode() else "")
            for job in waiting[:4]
        )
        more = f" · and {len(waiting) - 4} more" if len(waiting) > 4 else ""
        st.caption(f"Then: {listed}{more}")
        cancellable = [job for job in waiting if may_stop(job)]
        mine = "" if is_admin() else " of yours"
        if cancellable and st.button(
            f"Cancel the {len(cancellable)} queued{mine}", icon=":material/close:", key="queue:cancel"
        ):
            for job in cancellable:
                stop_job(job.run_id)
            rerun_the_sidebar()
    for job in failed:
        st.caption(f":red[Failed: {job.config.model} `{job.run_id[:6]}`: {job.error[:120]}]")


@st.fragment(run_every=2.0)
def starter_panel() -> None:
    """Home: the starter set's progress while any of it is missing from the cache."""
    from fmnist_core.runs.starter import enabled, starter_set

    cache, on = run_cache(), enabled()
    rows = []
    for starter in starter_set():
        progress, state = 0.0, "not queued"
        ready = cache.exists(starter.config.run_id)
        job = job_queue().get(starter.config.run_id) if on and not ready else None  # (a class: read once)
        if ready:
            progress, state = 1.0, "ready"
        elif job is not None:
            state = job.state if job.state != FAILED else f"failed: {job.error[:80]}"
            progress = job.latest.fraction if job.latest else 0.0
        percent = round(100 * min(progress, 1.0))  # whole percents, as the 100% and 0% beside it
        rows.append(
            {"run": starter.name, "makes useful": starter.serves, "state": state, "progress": percent}
        )
    if not on:  # runs of the same configs trained by hand are no starter set training
        if not any(row["state"] == "ready" for row in rows):
            st.caption("The starter set is off (FMNIST_STARTER=0): train a model on any page to begin.")
        return
    if all(row["state"] == "ready" for row in rows) or not any(row["state"] != "not queued" for row in rows):
        return
    st.subheader("Getting started: the starter set is training")
    st.caption(
        "An empty cache trains these small models by itself, one after another; each page becomes "
        "useful as soon as the run it needs is ready. Set FMNIST_STARTER=0 to turn this off."
    )
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        column_config={
            "progress": st.column_config.ProgressColumn(min_value=0, max_value=100, format="%d%%")
        },
    )
