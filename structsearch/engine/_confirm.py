"""The search's confirmation stage: the top candidates and the references, re-trained with seeds.

:func:`confirm_study` picks the study's top ``top`` trained candidates by score, hands them
with dense and BTT to :func:`structsearch.confirmation.confirm`, and stores the result in the
study's user attribute ``confirmation`` (``report`` and ``export`` read it from there). A
worker claims the stage first (``confirmation_claim``) so that concurrent workers finishing
together do not all run it. An interrupted worker releases its claim; a claim whose worker
process is gone from this host, or older than :data:`CLAIM_TIMEOUT_S` without a result, is
treated as abandoned, so rerunning the search finishes the stage. A stored confirmation is
replaced when it no longer describes the study (:func:`confirms`): the top trials changed (the
study was extended and found a new best) or the confirmation's compute or seeds did.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from structsearch.engine._objective import worker_id
from structsearch.engine._progress import stage_bar

__all__ = ["CLAIM_TIMEOUT_S", "claim_held", "confirm_study", "confirms", "top_trials"]

CLAIM_TIMEOUT_S = 6 * 3600.0


def top_trials(study: optuna.Study, top: int) -> list[Any]:
    """The ``top`` trained trials with the lowest score (references excluded), best first."""
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("status") == "evaluated" and t.user_attrs.get("loss") is not None
    ]
    done.sort(key=lambda t: (t.user_attrs["loss"], t.number))
    seen, out = set(), []
    for t in done:
        if t.user_attrs.get("sizes") not in seen:
            seen.add(t.user_attrs.get("sizes"))
            out.append(t)
    return out[:top]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def claim_held(claim: dict[str, Any] | None) -> bool:
    """Whether another, still running worker holds the confirmation stage."""
    if not claim or claim.get("worker") == worker_id():
        return False
    if time.time() - float(claim.get("time", 0)) >= CLAIM_TIMEOUT_S:
        return False
    host, _, pid = str(claim.get("worker")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return _pid_alive(int(pid))  # a killed worker on this machine left it: take it over
    return True  # another machine's worker: trust the claim until it times out


def confirms(stored: dict[str, Any], trials: list[Any], compute: float, seeds: Sequence[int]) -> bool:
    """Whether a stored confirmation is of these top trials, at this compute, with these seeds.

    A study that gained trials since (a new best), or a rerun with other confirmation settings,
    makes it stale: the stage runs again and replaces it.
    """
    confirmed = [(row["trial"], row["spec"]) for row in stored.get("structures", []) if row.get("role") == "candidate"]
    current = [(t.number, t.user_attrs.get("paper")) for t in trials]
    same_compute = math.isclose(float(stored.get("compute", math.nan)), float(compute), rel_tol=1e-9)
    return confirmed == current and same_compute and list(stored.get("seeds", [])) == list(seeds)


def confirm_study(
    study: optuna.Study,
    *,
    task: str,
    compute: float,
    seeds: Sequence[int],
    top: int,
    threads: int | None = None,
    force: bool = False,
    progress: bool = False,
) -> dict[str, Any] | None:
    """Run (or skip, if another worker holds it or it is done) the confirmation; returns what is stored.

    ``progress``: a bar on stderr, one step per structure (its seeds train together).
    """
    from structsearch.confirmation import confirm

    attrs = study.user_attrs
    trials = top_trials(study, top)
    stored = attrs.get("confirmation")
    if not force and stored is not None and confirms(stored, trials, compute, seeds):
        return stored
    if not force and claim_held(attrs.get("confirmation_claim")):
        return None
    if not trials:
        return None
    study.set_user_attr("confirmation_claim", {"worker": worker_id(), "time": time.time()})
    labels = ["best"] + [f"top {i + 2}" for i in range(len(trials) - 1)]
    structures = {label: t.user_attrs["paper"] for label, t in zip(labels, trials, strict=True)}
    numbers = {label: t.number for label, t in zip(labels, trials, strict=True)}
    try:
        # total: the candidates for now; confirm() adds the references that are not among them
        with stage_bar(progress, f"confirmation, {len(seeds)} seeds each", len(structures)) as bar:
            bar(0, f"training {labels[0]} with its seeds")
            result = confirm(
                structures,
                task,
                compute,
                seeds,
                trials=numbers,
                threads=threads,
                progress=lambda done, total, label: bar(done, f"{label} done; training the next", total),
            ).to_dict()
    except BaseException:  # interrupted or failed: let the next run (or another worker) do it
        study.set_user_attr("confirmation_claim", None)
        raise
    study.set_user_attr("confirmation", result)
    study.set_user_attr("confirmation_claim", None)  # done: a later, stale-making session may claim it again
    return result
