"""The training panel: cached result, or a Train button, or live progress of a background job."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitInvalidLayoutContextError

from fmnist_core import analysis, views
from fmnist_core.models import describe
from fmnist_core.runs.jobs import DONE, FAILED, QUEUED, RUNNING, STOPPED
from fmnist_core.runs.trained import TrainedRun
from fmnist_core.training.config import RunConfig
from ui import keys

from . import plots
from .people import class_mode, enqueue, is_admin, may_stop, stop_job, whose
from .state import expected_time, fashion, job_queue, load_run, run_cache


def training_panel(config: RunConfig, published: dict | None = None) -> TrainedRun | None:
    """Show the run's state; returns the trained run once it is in the cache."""
    cache = run_cache()
    queue = job_queue()
    job = queue.get(config.run_id)
    if cache.exists(config.run_id):
        run = load_run(config.run_id)
        done = f"{run.metrics['epochs_done']} epoch(s) in {run.metrics['train_seconds']:.0f} s on {run.metrics['device']}"
        sizes = describe(run.model)
        done += f"; {sizes['parameters']:,} parameters ({sizes['trainable_parameters']:,} trained)"
        if job is not None and job.state == DONE and job.result is not None and not job.result.cached:
            st.success(
                f"Trained run `{config.run_id}`: {done}. Saved to the cache.", icon=":material/check_circle:"
            )
        else:
            st.success(
                f"Cached run `{config.run_id}`: {done}. Loaded from the cache, not retrained.",
                icon=":material/inventory_2:",
            )
        return run
    if job is not None and job.active:
        live_job(config.run_id, published)
        return None
    if job is not None and job.state == FAILED:
        st.error(f"Training failed: {job.error}")
    stopped = cache.stopped.summary(config.run_id)
    left = config.epochs - (stopped["epochs_done"] if stopped else 0)
    if stopped:
        st.warning(
            f"Stopped after {stopped['epochs_done']} of {config.epochs} epochs: its curves are below and "
            f"its state is kept. **Continue** trains the {left} epoch(s) left and ends exactly where a "
            "run never stopped would.",
            icon=":material/pause_circle:",
        )
        st.plotly_chart(plots.curves(stopped["history"], published=published), key=f"stopped:{config.run_id}")
    elif job is not None and job.state == STOPPED:
        st.warning("Stopped in its first epoch: no epoch had finished, so there is nothing to keep.")
    images = config.train_subset or 60_000
    refusal = queue.refusal(config)
    if refusal:
        st.error(f"These settings cannot train here: {refusal}.", icon=":material/memory:")
        return None
    estimate, timing = expected_time(config)
    expected = (
        f", about {views.duration(estimate.seconds * left / config.epochs)} here (from {estimate.basis})"
        if estimate is not None
        else ""
    )
    if timing:  # a model never trained here: a few of its steps timed, off the page's thread
        until_ready(
            lambda: not expected_time(config)[1], "Timing a few of its steps for the expected time..."
        )
    st.info(
        f"{'To continue' if stopped else 'Not trained yet'}: {left} epochs over {images:,} images{expected}. "
        "Training runs in its own process; you can leave the page."
    )
    other = next(
        (j for j in queue.jobs() if j.active and j.run_id != config.run_id and j.config.kind == config.kind),
        None,
    )
    if other is not None:  # the settings moved during a training: it stays in view
        with st.container(border=True):
            st.markdown(f"**Training now, with other settings:** {describe_job(other)}")
            live_job(other.run_id, published)
    if st.button(
        "Continue" if stopped else "Train",
        type="primary",
        icon=":material/play_arrow:",
        key=f"train:{config.run_id}",
    ) and enqueue([config]):
        st.rerun()
    return None


def train_missing(configs, what: str, key: str) -> bool:
    """The one way a page queues the runs it lacks: how many of `configs` are missing and queued,
    the job that will bring them, and a button that queues the rest in order. True when all are cached."""
    queue = job_queue()
    to_queue, queued = queue.missing(configs)
    if not to_queue and not queued:
        return True
    missing = len(to_queue) + len(queued)
    st.info(
        f"{missing} of {len(configs)} run{'s' if len(configs) != 1 else ''} {what} "
        f"{'is' if missing == 1 else 'are'} not in the cache ({len(queued)} queued)."
    )
    if queued:
        waiting_for(run_ids=tuple(c.run_id for c in queued))
    if (
        to_queue
        and st.button(
            f"Queue the {len(to_queue)} missing runs" if len(to_queue) > 1 else "Queue the missing run",
            type="primary",
            icon=":material/play_arrow:",
            key=f"missing:{key}",
        )
        and enqueue(to_queue)
    ):
        st.rerun()
    return False


def live_job(run_id: str, published: dict | None = None) -> None:
    """A job's live view: its progress, place and Stop button redrawn every 3 s; its curves and
    epoch snapshot only when they change, looked at every 10 s (a chart redrawn every 2 s cost
    the server and the browser more than the progress it showed: bench/watch_cost.py)."""
    st.session_state[keys.LIVE_SHOWN] = run_id  # the sidebar need not draw the same progress again
    live_progress(run_id)
    live_curves(run_id, published)


PROGRESS_EVERY = 3.0  # seconds between redraws of a watched job's progress line (at 2 s, server and
# browser took 9-11% of a core while a page watched: bench/watch_cost.py)


@st.fragment(run_every=PROGRESS_EVERY)
def live_progress(run_id: str) -> None:
    """Polled every PROGRESS_EVERY s: progress, ETA, queue place and a Stop button; the page reruns
    at the end."""
    queue = job_queue()
    job = queue.get(run_id)
    if job is None or job.state in (DONE, STOPPED) or not job.active:
        st.rerun()  # the whole page: show the result
    if job.state == QUEUED:
        ahead = queue.position(run_id) or 0
        st.info(
            f"Queued: {ahead} training(s) ahead of this one. Jobs run one at a time so each gets every core."
        )
    else:
        progress = job.latest
        if progress is None:
            st.progress(0.0, text="Starting...")
        else:
            text = (
                f"Epoch {progress.epoch}/{progress.epochs} · step {progress.step}/{progress.steps} · "
                f"train loss {progress.train_loss:.4f} · {progress.seconds:.0f} s elapsed · {progress.eta_words}"
            )
            st.progress(min(progress.fraction, 1.0), text=text)
    if may_stop(job) and st.button("Stop", icon=":material/stop:", key=f"stop:{run_id}"):
        stop_job(run_id)


CURVES_EVERY = 10.0  # seconds between looks at the curves (the progress line moves every 3 s)
TRACE_POINTS = 40  # the running loss is redrawn when it has this many new points (10 s of training)


@st.fragment(run_every=CURVES_EVERY)
def live_curves(run_id: str, published: dict | None = None) -> None:
    """The curves so far and the last epoch's snapshot, rebuilt only when an epoch has ended or
    the running loss has grown: the same figure otherwise, which the browser need not redraw."""
    job = job_queue().get(run_id)
    if job is None:
        return
    history = job.history()
    if not (history or job.trace):
        st.caption("The curve starts with the first steps.")
        return
    version = (run_id, len(history.get("epoch", [])), len(job.trace) // TRACE_POINTS)
    drawn = st.session_state.get(keys.live_figure(run_id))
    if drawn is None or drawn[0] != version:
        trace = job.trace[: (len(job.trace) // TRACE_POINTS) * TRACE_POINTS] or job.trace
        drawn = (version, plots.curves(history, published=published, trace=trace))
        st.session_state[keys.live_figure(run_id)] = drawn
    st.plotly_chart(drawn[1], key=f"live:{run_id}")
    if not history:
        st.caption("The running loss of the first epoch; validation points come at each epoch's end.")
    epoch_snapshot(history, len(history.get("epoch", [])), key=f"live:{run_id}")


def snapshot_reconstructions(packed: str, moment: str) -> None:
    """One test image per class above an autoencoder's reconstructions of them (analysis.pack_images)
    at some `moment` of its training ("after epoch 3")."""
    data = fashion()
    shown = analysis.snapshot_indices(data.test_labels)
    st.markdown(f"**Reconstructions {moment}** (one test image per class)")
    st.image(
        plots.mosaic(
            np.concatenate([data.test_images[shown, 0].numpy(), analysis.unpack_images(packed)]),
            columns=len(shown),
        ),
        clamp=True,
        width="stretch",
    )


def epoch_snapshot(history: dict, epoch: int, key: str) -> None:
    """What a run made of the test set after `epoch` (1-based): an autoencoder's reconstructions of
    one test image per class, a classifier's validation confusion matrix. Nothing for older runs."""
    if epoch < 1:
        return
    if history.get("reconstructions"):
        snapshot_reconstructions(history["reconstructions"][epoch - 1], f"after epoch {epoch}")
    elif history.get("val_confusion"):
        matrix = np.asarray(history["val_confusion"][epoch - 1])
        st.markdown(
            f"**Validation confusion after epoch {epoch}** "
            f"(accuracy {history['val_accuracy'][epoch - 1]:.4f})"
        )
        st.altair_chart(plots.confusion(matrix).properties(height=360), key=f"confusion:{key}:{epoch}")


def epoch_scrubber(history: dict, key: str) -> None:
    """After training: a slider through the epochs, showing each epoch's snapshot."""
    epochs = len(history.get("reconstructions") or history.get("val_confusion") or [])
    if epochs == 0:
        st.caption("This run was trained before the lab kept per-epoch snapshots.")
        return
    epoch = epochs
    if epochs > 1:
        epoch = st.slider("Epoch", 1, epochs, epochs, key=f"scrub:{key}", help="Scrub through training")
    epoch_snapshot(history, epoch, key=f"scrub:{key}")


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
    last failure, so a job is in view whatever page or settings a person is on."""
    queue = job_queue()
    jobs = queue.jobs()
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

    cache, queue = run_cache(), job_queue()
    rows = []
    for starter in starter_set():
        job = queue.get(starter.config.run_id)
        progress, state = 0.0, "not queued"
        if cache.exists(starter.config.run_id):
            progress, state = 1.0, "ready"
        elif job is not None:
            state = job.state if job.state != FAILED else f"failed: {job.error[:80]}"
            progress = job.latest.fraction if job.latest else 0.0
        percent = round(100 * min(progress, 1.0))  # whole percents, as the 100% and 0% beside it
        rows.append(
            {"run": starter.name, "makes useful": starter.serves, "state": state, "progress": percent}
        )
    if all(row["state"] == "ready" for row in rows) or not any(row["state"] != "not queued" for row in rows):
        if not enabled() and not any(row["state"] == "ready" for row in rows):
            st.caption("The starter set is off (FMNIST_STARTER=0): train a model on any page to begin.")
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


def why_panel(run: TrainedRun, image: np.ndarray, key: str) -> None:
    """Why `run` answers as it does for `image`: attribution maps for its answer and its runner-up,
    and the randomised-weights sanity check a click away."""
    from fmnist_core.analysis import explain
    from fmnist_core.data.fashion import CLASS_NAMES

    method = st.segmented_control(
        "Attribution",
        list(explain.METHODS),
        default="occlusion",
        format_func=lambda m: m.replace("_", " "),
        key=f"why:method:{key}",
    )
    if method is None:
        return
    probabilities = views.classify(run, image)
    first, second = (int(c) for c in np.argsort(-probabilities)[:2])
    with st.spinner("Computing the maps..."):
        maps = {
            f"{CLASS_NAMES[c]} ({probabilities[c]:.0%})": explain.attribution(run.model, image, c, method)
            for c in (first, second)
        }
    st.plotly_chart(plots.attributions(image, maps), config={"displayModeBar": False}, key=f"why:{key}")
    st.caption("Red pixels push the model towards the class, blue ones away from it.")
    if st.button("Sanity check: the same map with the weights randomised", key=f"why:sanity:{key}"):
        with st.spinner("Randomising the weights and recomputing..."):
            check = explain.sanity_check(run.model, image, first, method)
        if check.trustworthy:
            st.success(
                f"The map changes when the weights are random (rank correlation {check.similarity:.2f}): "
                "it shows what this model learnt."
            )
        else:
            st.warning(
                f"The map barely changes with random weights (rank correlation {check.similarity:.2f}): "
                "it shows the image more than the model. Do not read much into it."
            )
