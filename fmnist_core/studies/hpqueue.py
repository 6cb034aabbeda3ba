"""A sweep driven through a JobQueue (the app's): Optuna asks for a trial, its run queues as an
ordinary job (listed, stoppable, shared with anyone who asks for the same config), each finished
epoch goes to the pruner as it arrives, and the job is stopped when the pruner says so. One thread
per sweep asks and tells; the queue's trainer does the work."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from fmnist_core.runs.jobs import DONE, LAB, JobQueue
from fmnist_core.store.entries import MissingRunError
from fmnist_core.studies.hpsearch import SweepPlan, as_epochs, complete, finished, load_study, report_epochs

log = logging.getLogger("fmnist_core")
POLL_SECONDS = 0.2


class QueuedSweep:
    """The plan's trials still to run, one after another through `queue`, until the plan's count
    is reached, `minutes` have passed since start, or stop() is called."""

    def __init__(self, plan: SweepPlan, queue: JobQueue, minutes: float | None = None, owner: str = LAB):
        if minutes is not None and not minutes > 0:
            raise ValueError(f"minutes: {minutes} must be above 0")
        self.plan, self.queue, self.minutes = plan, queue, minutes
        self.owner = owner  # whose jobs the trials are (a pruned trial's job stops only for them)
        self.events: list[str] = []  # one line per trial, newest last
        self.current: str | None = None  # the run id of the trial training now
        self.error = ""
        self._stop = threading.Event()
        self._study = None
        self._thread = threading.Thread(target=self._drive, name=f"fmnist-sweep-{plan.name}", daemon=True)

    def start(self) -> QueuedSweep:
        """The sweep's journal opened (made) here, so that it is listed when this returns; its
        trials then run in the background. A journal that cannot be read raises here, in one line."""
        self._study = load_study(self.plan, self.queue.cache)
        self._thread.start()
        return self

    @property
    def active(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """No further trial; the one training is stopped (and kept, as any stopped run)."""
        self._stop.set()
        if self.current:
            self._drop(self.current)

    def _drop(self, run_id: str) -> None:
        """The sweep no longer wants this job (it stops unless someone else asked for it too)."""
        with contextlib.suppress(PermissionError):  # already dropped
            self.queue.stop(run_id, self.owner)

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _say(self, message: str) -> None:
        self.events.append(message)

    def _drive(self) -> None:
        deadline = None if self.minutes is None else time.monotonic() + 60 * self.minutes
        try:
            study = self._study
            while not self._stop.is_set() and finished(study) < self.plan.trials:
                if deadline is not None and time.monotonic() > deadline:
                    self._say(f"the budget of {self.minutes:g} minutes is spent: no further trial")
                    break
                self._trial(study, study.ask())
        except Exception as error:  # the sweep ends with a message; the queue and the server go on
            log.exception("sweep %s failed", self.plan.name)
            self.error = f"{type(error).__name__}: {error}"
        finally:
            self.current = None

    def _trial(self, study, trial) -> None:
        import optuna

        values = {p.name: p.suggest(trial) for p in self.plan.params}
        config = self.plan.config(values)
        trial.set_user_attr("run_id", config.run_id)
        try:  # a config already in the cache costs nothing: its record is the trial
            history, metrics = self.queue.cache.load_record(config.run_id)
        except (MissingRunError, ValueError):
            history = None
        if history is not None:
            report_epochs(self.plan, trial, as_epochs(history), 0)
            value = complete(self.plan, trial, history, metrics)
            study.tell(trial, value)
            self._say(f"trial {trial.number}: {self.plan.metric} {value:.4f}, from the cache ({values})")
            return
        try:
            job = self.queue.submit(config, owner=self.owner)
        except ValueError as error:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self._say(f"trial {trial.number}: cannot train here: {error}")
            return
        self.current = job.run_id
        reported, pruned_at = 0, None
        while True:
            job = self.queue.get(job.run_id) or job  # as the queue has it now (a shared one's is a copy)
            ended = not job.active  # read before the epochs: the last epoch is in before the state moves
            reported, prune = report_epochs(self.plan, trial, list(job.epochs), reported)
            if prune and pruned_at is None:
                pruned_at = reported
                self._drop(job.run_id)
            if ended:
                break
            time.sleep(POLL_SECONDS)
        self.current = None
        if job.state == DONE:  # finished (a stop the pruner asked for can land after the last epoch)
            value = complete(self.plan, trial, job.result.history, job.result.metrics)
            study.tell(trial, value)
            self._say(f"trial {trial.number}: {self.plan.metric} {value:.4f} ({values})")
        elif pruned_at is not None:
            trial.set_user_attr("pruned_at_epoch", pruned_at)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            self._say(f"trial {trial.number}: pruned after epoch {pruned_at} ({values})")
        else:  # stopped by a person, or failed: the sweep goes on with the next trial
            trial.set_user_attr("ended", job.error or job.state)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self._say(f"trial {trial.number}: {job.state} {job.error} ({values})".replace("  ", " "))
