"""How a search scores a candidate: the named evaluators, and what each trial records of its score.

``frontier`` (the default) is :func:`structsearch.frontier.frontier_score`: a ladder of widths
and budgets, the frontier's fitted loss at the target compute, intermediate values per rung for
an Optuna pruner. ``proxy`` and ``final`` are the fixed-width scores of earlier versions
(docs/evaluation.md), ``toy`` an analytic stand-in; ``module:function`` or a callable plugs
in anything with :func:`structsearch.evaluation.evaluate`'s signature.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

from structsearch.errors import TaskError

__all__ = [
    "EVALUATORS",
    "FRONTIER_EVALUATOR",
    "FrontierScorer",
    "check_budget_buys_a_step",
    "resolve_evaluator",
    "score_attrs",
    "study_slope_rule",
    "study_target_flops",
]

EVALUATORS = ("frontier", "proxy", "final", "toy")
# The scorers that train with a task's own settings (the others may not know the task).
TRAINERS = ("frontier", "proxy", "final")
# The name a frontier-scored study records as its evaluator (study_target_flops, study_slope_rule read it).
FRONTIER_EVALUATOR = "structsearch.frontier:frontier_score"

EvaluateFn = Callable[..., Any]


class FrontierScorer:
    """:func:`~structsearch.frontier.frontier_score` with a study's target compute and ladder.

    ``reports_rungs`` tells the objective to pass ``on_rung``, through which each rung's loss
    reaches Optuna (``trial.report``) and its pruner.
    """

    reports_rungs = True

    def __init__(
        self,
        target_flops: float | None = None,
        ladder: Any = None,
        threads: int | None = None,
        slope_rule: str | None = None,
    ) -> None:
        from structsearch.frontier import DEFAULT_LADDER, DEFAULT_SLOPE_RULE

        self.target_flops = target_flops
        self.ladder = ladder or DEFAULT_LADDER
        self.threads = threads
        self.slope_rule = slope_rule or DEFAULT_SLOPE_RULE

    def __call__(self, spec: Any, **kwargs: Any) -> Any:
        from structsearch.frontier import frontier_score

        return frontier_score(
            spec,
            target_flops=self.target_flops,
            ladder=self.ladder,
            slope_rule=self.slope_rule,
            threads=self.threads,
            **kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"FrontierScorer(target_flops={self.target_flops!r}, ladder={self.ladder.describe()!r}, "
            f"slope_rule={self.slope_rule!r})"
        )


def resolve_evaluator(
    evaluator: str | EvaluateFn | None,
    *,
    target_flops: float | None = None,
    threads: int | None = None,
    slope_rule: str | None = None,
) -> tuple[EvaluateFn, str]:
    """The scoring function and its recorded name.

    ``None`` or ``"frontier"``: :class:`FrontierScorer` (the frontier's loss at ``target_flops``,
    default 10 x the budget; ``slope_rule`` as in :func:`~structsearch.frontier.frontier_score`);
    ``"proxy"``: two runs at the search width, loss extrapolated to 10 x the budget;
    ``"final"``: one run's final validation loss; ``"toy"``: analytic, no training;
    ``"module:function"`` or a callable. A scorer's result is ranked by ``score``
    where it has one, else ``final_loss``. ``threads`` sets torch's CPU threads of the
    built-in trainers (1 is often several times faster for small models on a shared machine).
    """
    from structsearch.evaluation import check_threads

    check_threads(threads)
    if target_flops is not None and not _positive_number(target_flops):
        raise TaskError(f"target_flops: expected a positive, finite number of FLOPs, got {target_flops!r}")
    from structsearch.frontier import check_slope_rule

    if slope_rule is not None:
        check_slope_rule(slope_rule)
    if evaluator is None or evaluator in ("frontier", FRONTIER_EVALUATOR):  # named as a study records it, too
        scorer = FrontierScorer(target_flops, threads=threads, slope_rule=slope_rule)
        return scorer, FRONTIER_EVALUATOR
    if target_flops is not None:
        raise TaskError("target_flops: only the frontier evaluator predicts at a target compute")
    if slope_rule is not None:
        raise TaskError("slope_rule: only the frontier evaluator extrapolates a fitted exponent")
    if evaluator in ("proxy", "final"):
        from functools import partial

        from structsearch.evaluation import evaluate, proxy

        fn = proxy if evaluator == "proxy" else evaluate
        return (partial(fn, threads=threads) if threads else fn), f"structsearch.evaluation:{fn.__name__}"
    if callable(evaluator):
        name = f"{getattr(evaluator, '__module__', '?')}:{getattr(evaluator, '__qualname__', '?')}"
        return _check_signature(evaluator, name), name
    text = str(evaluator)
    if text == "toy":
        from structsearch.engine._objective import toy_evaluate

        return toy_evaluate, "toy"
    module, _, name = text.partition(":")
    if not module or not name:
        raise TaskError(
            f"evaluator: expected one of {', '.join(EVALUATORS)} or 'package.module:function', got {text!r}"
        )
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise TaskError(f"evaluator {text!r}: cannot import ({err})") from None
    if not callable(fn):
        raise TaskError(f"evaluator {text!r}: not callable")
    return _check_signature(fn, text), text


def check_budget_buys_a_step(
    evaluator: str | EvaluateFn | None, fn: EvaluateFn, task: str, budget: float | None, width: int
) -> None:
    """Refuse, before a study is made, a budget in which dense's largest training buys no step.

    Every candidate would then fail; one clear error is better than a study of failed trials.
    Only the built-in trainers are checked (a plug-in scorer spends its budget its own way).
    """
    if not (evaluator is None or evaluator in TRAINERS):
        return
    from structsearch.errors import BudgetError
    from structsearch.evaluation import flops_per_step, steps_for_budget
    from structsearch.tasks import get_task

    task_obj = get_task(task)
    total = float(task_obj.budget) if budget is None else float(budget)
    if isinstance(fn, FrontierScorer):
        width, largest = fn.ladder.plan_for(total, task_obj)[-1]
        where = f"the ladder's largest rung ({largest:.3g} FLOPs, dense at width {width})"
    else:
        largest = 0.75 * total if evaluator == "proxy" else total  # the proxy's larger run is 3/4 of it
        where = f"dense at width {width} ({largest:.3g} FLOPs)"
    try:
        per_step = flops_per_step("dense", task_obj, width)
    except Exception:  # a task that cannot build dense here: its trials will record why, one by one
        return
    try:
        steps_for_budget(largest, per_step)
    except BudgetError:
        raise BudgetError(
            f"budget {total:.3g} FLOPs: {where} buys no training step (one step costs {per_step:.3g}); raise --budget"
        ) from None


def _positive_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def study_target_flops(config: dict[str, Any]) -> float | None:
    """The compute a frontier-scored study predicts at: its ``target_flops``, or the default multiple of its budget.

    ``None`` for other scorers. Studies made before the target was stored resolved keep ``None``
    in their config; this reads them the same way.
    """
    if not _frontier_scored(config):
        return None
    if config.get("target_flops") is not None:
        return float(config["target_flops"])
    from structsearch.frontier import TARGET_MULTIPLE

    budget = config.get("budget")  # search() stores it resolved (the task's when not given)
    return TARGET_MULTIPLE * float(budget) if isinstance(budget, (int, float)) else None


def study_slope_rule(config: dict[str, Any]) -> str | None:
    """How a frontier-scored study carries its fitted exponents past the ladder (``None`` for other scorers).

    Studies made before the rule was recorded used the fitted exponent; they resume with it.
    """
    if not _frontier_scored(config):
        return None
    return str(config.get("slope_rule") or "fitted")


def _frontier_scored(config: dict[str, Any]) -> bool:
    """Whether a stored study config scores by the frontier (its evaluator is recorded as FRONTIER_EVALUATOR)."""
    return str(config.get("evaluator", "")).endswith(":frontier_score")


def _check_signature(fn: EvaluateFn, name: str) -> EvaluateFn:
    """Refuse, before any training, a scorer that cannot be called as ``fn(spec, task=, budget=, seed=, width=)``."""
    import inspect

    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: the first call will tell
        return fn
    try:
        signature.bind(None, task="t", budget=1.0, seed=0, width=1)
    except TypeError as err:
        raise TaskError(
            f"evaluator {name!r}: cannot be called as evaluate(spec, task=, budget=, seed=, width=) ({err})"
        ) from None
    return fn


def score_attrs(result: Any) -> dict[str, Any]:
    """What a trial records about its score beyond the loss: what the score is, its band, the ladder.

    Plain JSON values only (they go into Optuna user attributes).
    """
    out: dict[str, Any] = {}
    label = getattr(result, "score_label", None)
    if label is None:  # the fixed-width scorers: say what their number is
        horizon = getattr(result, "horizon_budget", None)
        width = getattr(result, "width", None)
        if horizon is not None:
            label = f"predicted loss at {horizon:.3g} FLOPs (two-run extrapolation at width {width})"
        elif getattr(result, "budget", None) is not None:
            label = f"measured loss at {result.budget:.3g} FLOPs (width {width})"
    if label is not None:
        out["score_label"] = label
    for key in ("score_kind", "target_flops", "prediction", "prediction_low", "prediction_high"):
        value = getattr(result, key, None)
        if value is not None:
            out[key] = value
    if getattr(result, "warnings", None):
        out["warnings"] = list(result.warnings)
    fit = getattr(result, "fit", None)
    if fit is not None:
        out["fit"] = {"a": fit.a, "b": fit.b, "b_err": fit.b_err, "log_rmse": fit.log_rmse}
        frontier = getattr(result, "frontier", None)
        if getattr(result, "slope_factor", 1.0) != 1.0 and frontier:  # the exponent bends past the last rung
            out["fit"].update(slope_factor=result.slope_factor, largest=frontier[-1][0])
    rungs = getattr(result, "rungs", None)
    if rungs:
        out["ladder"] = [
            {
                "width": r.width,
                "reference_width": r.reference_width,
                "budget": r.budget,
                "train_flops": r.train_flops,
                "loss": r.final_loss,
                "status": r.status,
                "wall_seconds": round(r.wall_seconds, 3),
            }
            for r in rungs
        ]
    return out
