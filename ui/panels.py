"""The training panel: cached result, or a Train button, or live progress of a background job."""

from __future__ import annotations

import numpy as np
import streamlit as st

from fmnist_core import analysis, views
from fmnist_core.models import describe
from fmnist_core.runs.jobs import DONE, FAILED, QUEUED, STOPPED
from fmnist_core.runs.trained import TrainedRun
from fmnist_core.training.config import RunConfig
from ui import keys, plots
from ui.jobs import expected_time, job_queue
from ui.people import enqueue, may_stop, stop_job
from ui.queue_panels import describe_job, until_ready, waiting_for
from ui.resources import fashion, load_run, run_cache


def trained_by(job) -> bool:
    """Whether `job` trained its run (not found it cached): it finished epochs, or (the in-process
    queue) handed back a run it trained. A shared queue's job loads its run from the cache, so its
    run always reads as cached: before, a run a trainer had just trained was 'not retrained'."""
    if job is None or job.state != DONE:
        return False
    return bool(job.epochs) or (job.result is not None and not job.result.cached)


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
        if trained_by(job):
            note = job.result.note if job.result is not None else ""  # e.g. continued from epoch N
            st.success(
                f"Trained run `{config.run_id}`: {done}. Saved to the cache{f'; {note}' if note else ''}.",
                icon=":material/check_circle:",
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
        f"{'To continue' if stopped else 'Not trained yet'}: {left} epoch{'s' if left != 1 else ''} over {images:,} images{expected}. "
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
