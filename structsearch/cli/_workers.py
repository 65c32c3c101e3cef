"""``search --workers N``: N local worker processes on one study, started and stopped together.

This process is worker 1 (with the progress display); it starts N-1 more with the same
command line (their ``--workers`` ignored, ``--no-progress --json``). They share the study
through its storage like workers on several machines do. On Ctrl-C every worker gets the
signal from the terminal, marks its trial interrupted and re-queues it; a worker that has not
stopped 2 s later gets SIGTERM (the same clean stop), and one still running 15 s after that,
SIGKILL (its trial is then re-queued by the heartbeat, see ``structsearch.engine._heartbeat``). On Linux a worker
also gets SIGTERM if this process dies. The summary adds up the workers' sessions.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from structsearch.errors import StudyError

__all__ = ["CHILD_ENV", "Team", "gather", "with_workers"]

CHILD_ENV = "STRUCTSEARCH_WORKER_OF"
_GRACE_S = 2.0
_TERM_S = 15.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a parent started in the background ignores it
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Team:
    """The other workers of a ``--workers N`` session."""

    procs: list[subprocess.Popen] = field(default_factory=list)
    outputs: list[tuple[IO[bytes], IO[bytes]]] = field(default_factory=list)

    @classmethod
    def start(cls, argv: Sequence[str], others: int) -> Team:
        team = cls()
        env = {**os.environ, CHILD_ENV: str(os.getpid())}
        command = [sys.executable, "-m", "structsearch", *argv, "--no-progress", "--json"]
        for _ in range(others):
            out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
            team.outputs.append((out, err))
            team.procs.append(subprocess.Popen(command, stdout=out, stderr=err, env=env, preexec_fn=_die_with_parent))
        return team

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
            if code != 0:
                lines = err.read().decode("utf-8", "replace").strip().splitlines()
                last = lines[-1] if lines else f"exit code {code}"
                raise StudyError(f"worker {k} (pid {p.pid}) stopped with exit code {code}: {last}")
            try:
                found.append(json.loads(text.splitlines()[-1]))
            except (ValueError, IndexError):
                raise StudyError(f"worker {k} (pid {p.pid}) printed no result") from None
        return found

    def close(self) -> None:
        for out, err in self.outputs:
            out.close()
            err.close()


def with_workers(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command so that ``--workers N`` runs it in N processes (this one included)."""

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        n = getattr(args, "workers", 1) or 1
        if n <= 1 or os.environ.get(CHILD_ENV):
            return run(args)
        argv = getattr(args, "argv", None) or sys.argv[1:]
        args.team = Team.start(argv, n - 1)
        try:
            return run(args)
        finally:
            args.team.stop()
            args.team.close()

    return wrapped


def gather(args: argparse.Namespace, result: Any) -> Any:
    """This worker's result with the other workers' sessions added (after they have all finished)."""
    team: Team | None = getattr(args, "team", None)
    if team is None:
        return result
    others = team.results()
    if not others:
        return result
    merged = result.to_dict()
    latest = max([merged, *others], key=lambda r: (r["trials"], r["evaluated"]))
    for key in ("trials", "evaluated", "statuses", "best"):
        merged[key] = latest[key]
    merged["new_trials"] = sum(r["new_trials"] for r in [result.to_dict(), *others])
    merged["stale_recovered"] = sum(r.get("stale_recovered", 0) for r in [result.to_dict(), *others])
    return type(result)(**merged)
