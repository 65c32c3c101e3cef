"""Local worker processes on one study: ``search(..., workers=N)`` and ``structsearch search --workers N``.

The calling process is worker 1; it starts N-1 more as ``python -m structsearch search ...
--no-progress --json`` with the same settings. They share the study through its storage, as
workers on several machines do. On Ctrl-C every worker gets the signal from the terminal, marks
its trial interrupted and re-queues it; a worker that has not stopped 2 s later gets SIGTERM
(the same clean stop), and one still running 15 s after that, SIGKILL (its trial is then
re-queued by the heartbeat, see ``structsearch.engine._heartbeat``). On Linux a worker also gets
SIGTERM if the calling process dies. The result adds up the workers' sessions.

From Python, the other workers are started from a command line, so every setting must have a
``structsearch search`` flag: a space name or file, a built-in task name or ``module:function``,
an evaluator name or ``module:function``, confirmation seeds ``0..k-1``, and no callbacks.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import numbers
import os
import signal
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from structsearch.errors import StudyError

__all__ = ["CHILD_ENV", "Team", "become_worker", "local_workers", "merge_sessions", "search_argv"]

CHILD_ENV = "STRUCTSEARCH_WORKER_OF"
_GRACE_S = 2.0
_TERM_S = 15.0


def become_worker() -> None:
    """First thing in a worker this module started (``python -m structsearch`` calls it).

    It takes Ctrl-C again (a parent started in the background ignores it) and, on Linux, gets
    SIGTERM when the parent dies. Done here rather than in a ``preexec_fn``, which is unsafe
    in a parent with threads (a notebook, torch's pools).
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != os.environ.get(CHILD_ENV):  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Team:
    """The other workers of an N-worker session."""

    procs: list[subprocess.Popen] = field(default_factory=list)
    outputs: list[tuple[IO[bytes], IO[bytes]]] = field(default_factory=list)

    def start(self, argv: Sequence[str], others: int) -> Team:
        """Start ``others`` workers running ``structsearch <argv>``; they import what this process can."""
        path = [p for p in (os.environ.get("PYTHONPATH", ""), *sys.path) if p]  # e.g. a module:function evaluator
        env = {**os.environ, CHILD_ENV: str(os.getpid()), "PYTHONPATH": os.pathsep.join(dict.fromkeys(path))}
        command = [sys.executable, "-m", "structsearch", *argv, "--no-progress", "--json"]
        for _ in range(others):
            out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
            self.outputs.append((out, err))
            self.procs.append(subprocess.Popen(command, stdout=out, stderr=err, env=env))
        return self

    def failed(self) -> bool:
        """Whether a worker has already stopped with an error (the session should end and say so).

        A worker killed from outside (SIGKILL: ``kill -9``, the OOM killer) is not one: the others
        notice its silent trial by its heartbeat and re-run it, as they would a worker on another
        host. A worker that crashed (SIGSEGV, SIGABRT, ...) is one: its trial would crash them too.
        """
        return any(_failed(p.poll()) for p in self.procs)

    def callbacks(self) -> tuple[Callable[..., bool], ...]:
        """``search`` callbacks: end this worker's session after a trial once another has failed
        (``results()`` then raises with its error)."""
        return (lambda study, trial: self.failed(),)

    def stop(self) -> None:
        """Stop every worker still running: wait for the terminal's Ctrl-C to land, then SIGTERM, then SIGKILL."""
        for timeout, sig in ((_GRACE_S, signal.SIGTERM), (_TERM_S, signal.SIGKILL)):
            alive = [p for p in self.procs if p.poll() is None]
            for p in alive:
                try:
                    p.wait(timeout=timeout)
                    timeout = 0.05
                except subprocess.TimeoutExpired:
                    p.send_signal(sig)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=_TERM_S)

    def results(self) -> list[dict[str, Any]]:
        """Wait for every worker; their results, or a one-line error naming the first that failed."""
        found = []
        for k, (p, (out, err)) in enumerate(zip(self.procs, self.outputs, strict=True), start=2):
            code = p.wait()
            out.seek(0)
            err.seek(0)
            text = out.read().decode("utf-8", "replace").strip()
            if code in _KILLED:  # killed: its session's trials are in the study, its running one was re-run
                how = "interrupted" if code > 0 else f"killed by {_signal_name(-code)}"
                warnings.warn(
                    f"worker {k} (pid {p.pid}) was {how}; the other workers re-ran its unfinished trial",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            if code != 0:
                lines = err.read().decode("utf-8", "replace").strip().splitlines()
                last = f": {lines[-1]}" if lines else ""
                how = f"was stopped by {_signal_name(-code)}" if code < 0 else f"stopped with exit code {code}"
                raise StudyError(f"worker {k} (pid {p.pid}) {how}{last}")
            try:
                found.append(json.loads(text.splitlines()[-1]))
            except (ValueError, IndexError):
                raise StudyError(f"worker {k} (pid {p.pid}) printed no result") from None
        return found

    def close(self) -> None:
        for out, err in self.outputs:
            out.close()
            err.close()


# exit codes of a worker stopped from outside, whose trial the others re-run: SIGKILL, an unhandled
# SIGTERM (Popen gives -signal), or 130, the CLI's exit after SIGTERM or Ctrl-C re-queued its trial
_KILLED = {-signal.SIGKILL, -signal.SIGTERM, 130}


def _failed(code: int | None) -> bool:
    return code is not None and code != 0 and code not in _KILLED


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def merge_sessions(result: Any, others: list[dict[str, Any]]) -> Any:
    """This worker's ``SearchResult`` with the other workers' sessions (their JSON results) added."""
    if not others:
        return result
    mine = result.to_dict()
    merged = dict(mine)
    latest = max([mine, *others], key=lambda r: (r["trials"], r["evaluated"]))
    for key in ("trials", "evaluated", "statuses", "best"):
        merged[key] = latest[key]
    merged["new_trials"] = sum(r["new_trials"] for r in [mine, *others])
    merged["stale_recovered"] = sum(r.get("stale_recovered", 0) for r in [mine, *others])
    return type(result)(**merged)


# search() keyword -> its `structsearch search` flag (booleans: the flag that turns the default off)
_FLAGS = {
    "task": "--task",
    "budget": "--budget",
    "trials": "--trials",
    "study": "--study",
    "storage": "--storage",
    "sampler": "--sampler",
    "objective": "--objective",
    "seed": "--seed",
    "width": "--width",
    "evaluate_fn": "--evaluator",
    "target_flops": "--target-flops",
    "slope_rule": "--slope-rule",
    "pruner": "--pruner",
    "confirm_top": "--confirm-top",
    "confirm_flops": "--confirm-flops",
    "threads": "--threads",
    "max_trainings": "--max-trainings",
    "runs_dir": "--runs-dir",
}
_SWITCHES = {"steer": "--no-steer", "references": "--no-references", "confirm": "--no-confirm"}


def search_argv(arguments: dict[str, Any]) -> list[str]:
    """The ``structsearch search`` command line of a ``search()`` call's bound arguments.

    >>> search_argv({"space": "btt", "trials": 8, "steer": False, "confirm_seeds": (0, 1), "callbacks": ()})
    ['search', '--space', 'btt', '--trials', '8', '--no-steer', '--confirm-seeds', '2']
    """
    space = arguments.get("space", "steered-default")
    if not isinstance(space, (str, os.PathLike)):
        raise StudyError("workers > 1: space must be a shipped space name or a YAML file (the other workers read it)")
    argv = ["search", "--space", str(Path(space)) if isinstance(space, os.PathLike) else space]
    for name, flag in _FLAGS.items():
        value = arguments.get(name)
        if value is None:
            continue
        argv += [flag, _as_flag_value(name, value)]
    argv += [flag for name, flag in _SWITCHES.items() if not arguments.get(name, True)]
    try:
        seeds = tuple(int(s) for s in arguments.get("confirm_seeds", (0, 1, 2)))
    except (TypeError, ValueError):
        raise StudyError(f"confirm_seeds: expected a sequence of seeds, got {arguments['confirm_seeds']!r}") from None
    if seeds != tuple(range(len(seeds))):
        raise StudyError(
            f"workers > 1: confirm_seeds must be 0..k-1 (the command line's --confirm-seeds k), got {seeds}"
        )
    argv += ["--confirm-seeds", str(len(seeds))]
    if arguments.get("callbacks"):
        raise StudyError("workers > 1: callbacks would run in this process only; run the workers yourself to use them")
    return argv


def _as_flag_value(name: str, value: Any) -> str:
    """A setting as the other workers' command line takes it (numpy numbers included)."""
    if isinstance(value, (str, os.PathLike)):
        if name == "task" and _registered_here(value):
            raise StudyError(
                f"workers > 1: task {value!r} was registered in this process, where the other workers "
                "cannot see it; give it as module:function"
            )
        return str(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return repr(float(value))
    raise StudyError(f"workers > 1: {name} must be a name or a number the other workers can be given, got {value!r}")


def _registered_here(task: Any) -> bool:
    """Whether ``task`` names a task this process's own code registered (a fresh process would not know it)."""
    from structsearch.tasks._protocol import _REGISTRY, task_names

    if not isinstance(task, str) or ":" in task or task not in task_names():
        return False
    return not str(getattr(_REGISTRY[task], "__module__", "")).startswith("structsearch.")


def local_workers(search: Callable[..., Any]) -> Callable[..., Any]:
    """``search`` with a ``workers=N`` keyword: N processes (this one included) on one study."""
    signature = inspect.signature(search)

    @functools.wraps(search)
    def with_workers(*args: Any, workers: int = 1, **kwargs: Any) -> Any:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise StudyError(f"workers: expected a positive integer, got {workers!r}")
        if workers == 1 or os.environ.get(CHILD_ENV):
            return search(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        argv = search_argv(bound.arguments)  # refuses what the other workers cannot be given, before any starts
        team = Team()
        try:
            team.start(argv, workers - 1)
            # search_argv refused the caller's own callbacks: these are the team's only
            return merge_sessions(search(*args, **{**kwargs, "callbacks": team.callbacks()}), team.results())
        finally:
            team.stop()
            team.close()

    workers_param = inspect.Parameter("workers", inspect.Parameter.KEYWORD_ONLY, default=1, annotation="int")
    with_workers.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), workers_param]
    )
    return with_workers
