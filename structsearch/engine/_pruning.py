"""Multi-fidelity: Optuna pruners over the frontier ladder's rungs.

The frontier scorer reports each rung's measured loss as an intermediate value at step
``round(100 * share of the budget spent so far)`` (10, 40, 100 for the default ladder;
:meth:`structsearch.frontier.Ladder.progress_steps`), so
the pruners' resource is the compute spent. A pruned candidate stops after its cheap rungs
and pays only for those; it is recorded with status ``pruned``. Every rung of every
candidate spends the same FLOPs, so rung losses are comparable across candidates.
"""

from __future__ import annotations

import optuna

from structsearch.errors import StudyError

__all__ = ["DEFAULT_PRUNER", "PRUNERS", "make_pruner"]

PRUNERS = ("none", "median", "successive-halving", "hyperband")
# chosen by benchmarks/pruner_replay.py (benchmarks/results/pruners.md)
DEFAULT_PRUNER = "median"


def make_pruner(name: str | None) -> optuna.pruners.BasePruner:
    """The Optuna pruner called ``name`` (one of :data:`PRUNERS`; ``None``: the default)."""
    name = DEFAULT_PRUNER if name is None else name
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        # two finished ladders first, so that one lucky early candidate does not set the bar alone
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=10, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=10, max_resource=100, reduction_factor=3)
    raise StudyError(f"pruner: expected one of {', '.join(PRUNERS)}, got {name!r}")
