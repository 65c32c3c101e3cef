"""Dead workers: heartbeats, stale trials, re-queueing, and when a worker may stop.

Every running trial beats every ``interval`` seconds: on an SQLAlchemy storage with Optuna's
own heartbeat (``RDBStorage(heartbeat_interval=, grace_period=)``); on a journal, which has no
heartbeat in Optuna, with the same period through a ``heartbeat`` user attribute. A trial whose
last beat is older than the grace period belongs to a dead worker (``kill -9``, a lost machine):
any live worker fails it and re-queues its parameters with Optuna's
``RetryHeartbeatStaleTrialCallback`` (``RetryFailedTrialCallback`` before Optuna 4.9). Workers
look before every trial and while they wait for other workers' trials to finish the study, so
the survivors complete it with no rerun. Whether a process is alive is never asked (a PID may
be a zombie or reused, and another host's PIDs mean nothing here).

Intervals: ``STRUCTSEARCH_HEARTBEAT_S`` (default 10) and ``STRUCTSEARCH_GRACE_S`` (default 60),
whole seconds.
"""

from __future__ import annotations

import copy
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from structsearch.errors import StudyError

__all__ = ["DEFAULT_GRACE_S", "DEFAULT_HEARTBEAT_S", "RequeueStale", "Watch", "heartbeat_settings"]

DEFAULT_HEARTBEAT_S = 10
DEFAULT_GRACE_S = 60
_DONE = (TrialState.COMPLETE, TrialState.PRUNED)
# what a re-queued trial must not inherit from the dead one
_VOLATILE = ("worker", "heartbeat", "training", "claim_checked", "status", "reason", "retry_of")


def _env_seconds(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise StudyError(f"{name}: expected a positive whole number of seconds, got {text!r}")
    return int(text)


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds, from the environment or the defaults.

    >>> heartbeat_settings()
    (10, 60)
    """
    interval = _env_seconds("STRUCTSEARCH_HEARTBEAT_S", DEFAULT_HEARTBEAT_S)
    grace = _env_seconds("STRUCTSEARCH_GRACE_S", max(DEFAULT_GRACE_S, 3 * interval))
    if grace <= interval:
        raise StudyError(f"STRUCTSEARCH_GRACE_S: must exceed the heartbeat interval {interval} s, got {grace}")
    return interval, grace


def _retry_callback() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        try:
            from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
        except ImportError:  # Optuna < 4.9
            from optuna.storages import RetryFailedTrialCallback as Retry
        return Retry(max_retry=3)


class RequeueStale:
    """The stale-trial callback: re-queue a dead worker's trial with its parameters.

    The new WAITING trial carries ``retry_of`` (the dead trial's number) and none of the dead
    worker's bookkeeping. A trial that was killed before it proposed anything is only failed.
    """

    def __init__(self) -> None:
        self.count = 0
        self._retry = _retry_callback()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.count += 1
        if not trial.params:
            return
        clean = copy.copy(trial)
        attrs = {k: v for k, v in trial.user_attrs.items() if k not in _VOLATILE}
        clean.user_attrs = {**attrs, "retry_of": trial.number}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry(study, clean)


def _rdb_heartbeat(storage: Any) -> bool:
    return hasattr(storage, "record_heartbeat") and getattr(storage, "heartbeat_interval", None) is not None


class Watch:
    """One worker's view of the others: beats for its own trial, fails and re-queues dead ones' trials."""

    def __init__(self, study: optuna.Study, me: str) -> None:
        self.study = study
        self.me = me
        storage = study._storage
        self.rdb = _rdb_heartbeat(storage)
        if self.rdb:
            self.interval, self.grace = int(storage.heartbeat_interval), int(storage.grace_period)
            callback = storage.get_heartbeat_stale_trial_callback()
            self.requeue = callback if isinstance(callback, RequeueStale) else RequeueStale()
        else:
            self.interval, self.grace = heartbeat_settings()
            self.requeue = RequeueStale()
        self._start = self.requeue.count
        self.poll = max(0.2, min(self.interval / 2, 5.0))

    @property
    def recovered(self) -> int:
        """Dead workers' trials this worker failed (and re-queued where they had parameters)."""
        return self.requeue.count - self._start

    def _fail(self, trial: FrozenTrial, reason: str) -> None:
        storage = self.study._storage
        try:
            storage.set_trial_user_attr(trial._trial_id, "status", "interrupted")
            storage.set_trial_user_attr(trial._trial_id, "reason", reason)
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                return
        except (UpdateFinishedTrialError, RuntimeError, ValueError, KeyError):
            return  # another worker failed it first, or it finished meanwhile
        self.requeue(self.study, storage.get_trial(trial._trial_id))

    def fail_stale(self, running: list[FrozenTrial] | None = None) -> int:
        """Fail and re-queue the running trials of dead workers; how many were failed."""
        before = self.requeue.count
        if self.rdb:
            optuna.storages.fail_stale_trials(self.study)
        if running is None:
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        now = time.time()
        for t in running:
            worker = t.user_attrs.get("worker")
            if worker == self.me:
                continue
            started = t.datetime_start.timestamp() if t.datetime_start is not None else now
            if worker is None and now - started > self.grace:  # died before its first heartbeat
                self._fail(t, f"its worker stopped before starting it (nothing for {self.grace} s)")
            elif not self.rdb:
                last = max(started, float(t.user_attrs.get("heartbeat", 0.0) or 0.0))
                if now - last > self.grace:
                    self._fail(t, f"worker {worker} sent no heartbeat for {now - last:.0f} s (grace {self.grace} s)")
        return self.requeue.count - before

    def ask(self) -> optuna.Trial:
        """``study.ask()`` (Optuna warns that its heartbeat is meant for ``optimize``; here the watch beats)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            return self.study.ask()

    @contextmanager
    def beating(self, trial: optuna.Trial) -> Iterator[None]:
        """Beat for ``trial`` while the block runs (the first beat at once)."""
        storage = self.study._storage
        if self.rdb:

            def beat() -> None:
                storage.record_heartbeat(trial._trial_id)

        else:

            def beat() -> None:
                storage.set_trial_user_attr(trial._trial_id, "heartbeat", time.time())

        beat()
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.interval):
                try:
                    beat()
                except Exception:  # finished meanwhile, or a storage hiccup: the next beat retries
                    if stop.is_set():
                        return

        thread = threading.Thread(target=loop, name=f"structsearch-heartbeat-{trial.number}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def others_finish(self, trials: int, on_wait: Callable[[int], None] = lambda done: None) -> bool:
        """Whether this worker should stop: the study holds ``trials`` finished trials.

        While other workers' running trials could still fill the study, wait for them; one
        that goes stale meanwhile is failed and re-queued, and this worker takes it (False).
        """
        while True:
            current = self.study.get_trials(deepcopy=False, states=(*_DONE, TrialState.RUNNING))
            running = [t for t in current if t.state == TrialState.RUNNING]
            if self.fail_stale(running):
                continue  # a dead worker's trial was re-queued: look again
            done = len(current) - len(running)
            if done >= trials:
                return True
            if done + sum(t.user_attrs.get("worker") != self.me for t in running) < trials:
                return False
            on_wait(done)
            time.sleep(self.poll)
