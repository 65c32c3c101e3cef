"""``search --workers N``: N local worker processes on one study, started and stopped together.

This process is worker 1 (with the progress display); it starts N-1 more with the same
command line (their ``--workers`` ignored, ``--no-progress --json``). How they share the study
and stop together: :mod:`structsearch.engine._team`, which ``search(..., workers=N)`` uses too.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from structsearch.engine._team import CHILD_ENV, Team, merge_sessions

__all__ = ["CHILD_ENV", "Team", "gather", "stop_if_a_worker_failed", "with_workers"]


def with_workers(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command so that ``--workers N`` runs it in N processes (this one included)."""

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        n = getattr(args, "workers", 1) or 1
        if n <= 1 or os.environ.get(CHILD_ENV):
            return run(args)
        argv = getattr(args, "argv", None) or sys.argv[1:]
        args.team = Team()
        try:
            args.team.start(argv, n - 1)
            return run(args)
        finally:
            args.team.stop()
            args.team.close()

    return wrapped


def stop_if_a_worker_failed(args: argparse.Namespace) -> tuple[Callable[..., bool], ...]:
    """``search`` callbacks: with ``--workers N``, the team's (``gather`` then reports a failed worker's error)."""
    team: Team | None = getattr(args, "team", None)
    return () if team is None else team.callbacks()


def gather(args: argparse.Namespace, result: Any) -> Any:
    """This worker's result with the other workers' sessions added (after they have all finished)."""
    team: Team | None = getattr(args, "team", None)
    if team is None:
        return result
    return merge_sessions(result, team.results())
