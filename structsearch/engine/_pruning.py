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
# chosen by benchmarks/pruner_replay.py (benchmarks/results/pruners.md): the first rung (10% of the
# budget) ranks candidates poorly, so every pruner here decides at the second rung (40%) or later;
# successive halving keeping the better half there spent 70% of the compute and kept the best
# candidate in 76% of 200 arrival orders (mean regret 0.5%).
DEFAULT_PRUNER = "successive-halving"


def make_pruner(name: str | None) -> optuna.pruners.BasePruner:
    """The Optuna pruner called ``name`` (one of :data:`PRUNERS`; ``None``: the default)."""
    name = DEFAULT_PRUNER if name is None else name
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":  # four finished ladders first; never at the first rung
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=20)
    if name == "successive-halving":  # at 40% of the budget, keep the better half
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=40, reduction_factor=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=10, max_resource=100, reduction_factor=2)
    raise StudyError(f"pruner: expected one of {', '.join(PRUNERS)}, got {name!r}")
