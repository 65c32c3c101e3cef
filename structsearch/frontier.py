"""Compute-optimal scoring: a candidate's loss on its compute-efficient frontier at a target compute.

The paper compares structures by their compute-efficient frontier (taxonomy.md 7): at each
compute the best width, loss ~ a C^-b fitted along it. :func:`frontier_score` does that for
one candidate, cheaply enough for a search:

1. **Ladder.** The budget is split into rungs of increasing compute (``Ladder.fractions``).
   Each rung has a dense reference width on the task's compute-optimal path,
   ``w_ref = default_width * (rung budget / task budget) ** width_exponent`` (the task's
   default width and budget are one point of dense's frontier); with the ``iso-flop`` rule
   the structure trains at its iso-FLOP width there (:func:`~structsearch.evaluation.matched_width`:
   as many FLOPs per step as dense at ``w_ref``, so cheap structures get wider models and every
   candidate takes the same steps), with ``fixed`` at ``w_ref`` itself. muP transfer lets the
   task's one learning rate serve every width.
2. **Fit.** The rungs' (training FLOPs, loss) points form the frontier
   (:func:`~structsearch.scaling.pareto_frontier`); :func:`~structsearch.scaling.fit_power_law`
   fits it and the score is the fit's prediction at ``target_flops``, with a 95% band from the
   log-space regression (defined from three frontier points on).
   With the default ``slope_rule="parameter-growth"``, the fitted exponent is scaled, beyond
   the frontier's largest compute (normally the last rung's), by :func:`parameter_growth`,
   (1 + nu - omega) / (1 + nu): how fast the structure's parameters grow with its compute
   (taxonomy.md 3). A structure that shares parameters (omega > 0) gains less from scale than
   its small rungs show, the paper's finding that omega governs compute-optimal scaling;
   without it the ranking at 33x the budget falls from Spearman 0.82 to 0.63
   (docs/evaluation.md 8). ``"fitted"`` uses the exponent as fitted.
3. **Checks** before the prediction is used: the fit's residual, a validation curve that
   turns up (overfitting), a prediction far outside the trained range or far below the
   measured loss. A failed check falls back to the measured loss of the best rung, with the
   reason in ``warnings``; ``score_kind`` says which one ``score`` is.

``on_rung(step, loss)`` is called after every rung (``step``: percent of the budget spent,
:meth:`Ladder.progress_steps`); the search reports it to Optuna as an intermediate value.
Returning True stops the ladder there (``status="pruned"``), so a pruned candidate pays
only for the rungs it ran.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from structsearch.errors import BudgetError, SizeError, TaskError
from structsearch.scaling import PowerLawFit, fit_power_law, pareto_frontier
from structsearch.spec import Spec

__all__ = [
    "DEFAULT_LADDER",
    "SLOPE_RULES",
    "TARGET_MULTIPLE",
    "FrontierScore",
    "Ladder",
    "Rung",
    "SlopeRule",
    "check_extrapolation",
    "check_slope_rule",
    "extrapolate",
    "frontier_score",
    "lookahead_note",
    "parameter_growth",
    "prediction_band",
    "score_label",
]

# --target-flops defaults to this multiple of the per-candidate budget (the ladder's total): how
# far ahead the default ladder still ranks well (MEASURED_LOOKAHEAD).
TARGET_MULTIPLE = 10.0
# Spearman of the default score's ranking against the ground truths at 3e10 and 1e11 FLOPs, by
# target / budget, averaged over training seeds 0-2 (frontier_fidelity_3e10.md, frontier_fidelity.md).
MEASURED_LOOKAHEAD = {10: (0.74, 0.86), 30: (0.47, 0.82)}
# ... and of the score with its fitted exponent carried unchanged (slope_rule="fitted"), same files.
MEASURED_LOOKAHEAD_FITTED = {10: (0.69, 0.74), 30: (0.20, 0.63)}
# A check fails when the fit's RMS log-residual exceeds this (about 8% off the fitted line) ...
MAX_LOG_RESIDUAL = 0.08
# ... when a rung's final validation loss is this much above the minimum of its own curve ...
OVERFIT_RISE = 0.03
# ... when the target lies more than this factor beyond the largest rung's compute ...
MAX_EXTRAPOLATION = 1000.0
# ... or when the prediction is below the best measured loss by more than this factor.
MAX_PREDICTED_DROP = 4.0

RungStatus = Literal["ok", "diverged", "failed", "skipped"]
# How the fitted exponent is carried beyond the frontier's largest compute (module docstring, item 2).
SlopeRule = Literal["parameter-growth", "fitted"]
SLOPE_RULES: tuple[str, ...] = get_args(SlopeRule)
DEFAULT_SLOPE_RULE: SlopeRule = "parameter-growth"


def check_slope_rule(value: Any) -> None:
    """Refuse anything but one of :data:`SLOPE_RULES` (``frontier_score`` and the search check alike)."""
    if value not in SLOPE_RULES:
        raise TaskError(f"slope_rule: expected one of {', '.join(SLOPE_RULES)}, got {value!r}")


class Ladder(BaseModel):
    """How one candidate's budget is spent: rungs of increasing compute, widths on dense's path.

    >>> Ladder().plan(1e10, default_width=128, task_budget=3e10, width_multiple=8)
    [(48, 1000000000.0), (64, 3000000000.0), (80, 6000000000.0)]
    """

    model_config = ConfigDict(frozen=True)

    rule: Literal["iso-flop", "fixed"] = Field(
        default="iso-flop",
        description="iso-flop: the structure's width costs as many FLOPs per step as dense at the reference "
        "width; fixed: every structure at the reference width",
    )
    fractions: tuple[float, ...] = Field(default=(0.1, 0.3, 0.6), description="each rung's share of the budget")
    width_exponent: float = Field(default=0.3, description="reference width grows as (rung budget)^this")
    # The score reads a rung's final loss and, for the overfitting check, its curve's minimum: 5
    # marks (20% apart) made the same decisions as 10 on 5,279 recorded curves, and a 3e9 ladder
    # runs 1.10-1.15x faster with the same scores (benchmarks/results/throughput.md, ladder).
    eval_points: int = Field(default=5, ge=1, description="validations per rung (its curve's marks)")

    @field_validator("fractions")
    @classmethod
    def _check_fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) < 2 or any(not (0 < f <= 1) for f in value) or sum(value) > 1 + 1e-9:
            raise ValueError(f"expected at least 2 fractions in (0, 1] summing to at most 1, got {value}")
        if list(value) != sorted(value):
            raise ValueError(f"expected increasing fractions (cheap rungs first), got {value}")
        return value

    def reference_width(self, compute: float, default_width: int, task_budget: float, width_multiple: int) -> int:
        """Dense's width on the task's compute-optimal path at ``compute`` training FLOPs."""
        raw = default_width * (compute / task_budget) ** self.width_exponent
        return max(width_multiple, round(raw / width_multiple) * width_multiple)

    def plan(
        self, budget: float, *, default_width: int, task_budget: float, width_multiple: int
    ) -> list[tuple[int, float]]:
        """(reference width, rung budget) of each rung, cheapest first."""
        return [
            (self.reference_width(f * budget, default_width, task_budget, width_multiple), f * budget)
            for f in self.fractions
        ]

    def plan_for(self, budget: float, task_obj: Any) -> list[tuple[int, float]]:
        """:meth:`plan` on ``task_obj``'s compute-optimal path (its default width, budget and width multiple)."""
        return self.plan(
            budget,
            default_width=int(task_obj.default_width),
            task_budget=float(task_obj.budget),
            width_multiple=int(getattr(task_obj, "width_multiple", 8)),
        )

    def progress_steps(self) -> list[int]:
        """Percent of the budget spent after each rung: the step a rung's loss is reported at.

        >>> Ladder().progress_steps()
        [10, 40, 100]
        """
        total = sum(self.fractions)
        spent = [sum(self.fractions[: i + 1]) / total for i in range(len(self.fractions))]
        return [max(1, round(100 * s)) for s in spent]

    def width_for(self, spec: Spec, task_obj: Any, reference_width: int) -> int:
        """The structure's width at a rung: its iso-FLOP width there, or ``reference_width`` (``fixed``).

        A structure that costs more than dense even at the narrowest width the task allows (a
        near-dense one at a tiny rung, e.g. char-lm's width multiple of 32) trains at
        ``reference_width``, as with the ``fixed`` rule, rather than not at all.
        """
        from structsearch.evaluation import matched_width

        if self.rule == "fixed":
            return reference_width
        try:
            return matched_width(spec, task_obj, reference_width)
        except SizeError:
            return reference_width

    def describe(self) -> str:
        shares = ", ".join(f"{f:g}" for f in self.fractions)
        return f"{self.rule} widths, rungs at {shares} of the budget, width ~ C^{self.width_exponent:g}"


DEFAULT_LADDER = Ladder()


class Rung(BaseModel):
    """One training of a candidate's ladder."""

    model_config = ConfigDict(frozen=True)

    reference_width: int
    width: int | None
    budget: float
    status: RungStatus
    train_flops: float = 0.0
    final_loss: float | None = None
    best_loss: float | None = Field(default=None, description="the lowest validation loss along its curve")
    steps: int = 0
    wall_seconds: float = 0.0
    params: int = 0
    macs: int = 0
    flops_per_second: float = Field(default=0.0, description="achieved training FLOP/s (model time)")
    reason: str | None = None

    @property
    def turns_up(self) -> bool:
        """Its validation curve ends clearly above its own minimum: more steps made it worse."""
        if self.final_loss is None or self.best_loss is None:
            return False
        return self.final_loss > (1 + OVERFIT_RISE) * self.best_loss


class FrontierScore(BaseModel):
    """A candidate scored on its frontier; ``score`` is what to rank by, ``score_label`` what it is."""

    model_config = ConfigDict(frozen=True)

    spec: str
    structure: str | None
    task: str
    metric: str
    status: Literal["ok", "diverged", "failed", "pruned"]
    score: float | None
    score_kind: Literal["predicted", "measured"] | None
    score_label: str
    target_flops: float
    prediction: float | None = Field(description="the fit's loss at target_flops (None without a fit)")
    prediction_low: float | None = Field(default=None, description="95% band of the prediction (3+ points)")
    prediction_high: float | None = None
    fit: PowerLawFit | None
    slope_rule: SlopeRule = "fitted"
    slope_factor: float = Field(
        default=1.0, description="the fitted exponent's multiplier beyond the frontier's largest compute"
    )
    frontier: list[tuple[float, float]]
    rungs: list[Rung]
    ladder: Ladder
    warnings: list[str]
    final_loss: float | None = Field(description="best measured loss over the rungs")
    diverged: bool
    reason: str | None
    budget: float
    train_flops: float = Field(description="FLOPs spent, over the rungs run")
    steps: int
    wall_seconds: float
    flops_per_second: float = Field(default=0.0, description="achieved training FLOP/s over the rungs")
    params: int
    macs: int
    width: int
    seed: int

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def lookahead_note(budget: float, target_flops: float, slope_rule: str = DEFAULT_SLOPE_RULE) -> str | None:
    """A caution when ``target_flops`` lies further ahead of ``budget`` than the default multiple.

    It quotes how well the score with ``slope_rule`` was measured to rank that far ahead.

    >>> lookahead_note(3e9, 3e10) is None
    True
    >>> lookahead_note(1e9, 1e11).split(";")[0]
    'the target is 100x the per-candidate budget'
    """
    ratio = target_flops / budget
    if ratio <= 1.05 * TARGET_MULTIPLE:
        return None
    table = MEASURED_LOOKAHEAD_FITTED if slope_rule == "fitted" else MEASURED_LOOKAHEAD
    measured = ", ".join(f"{low:.2f}-{high:.2f} at {r}x" for r, (low, high) in sorted(table.items()))
    return (
        f"the target is {ratio:.0f}x the per-candidate budget; the default ladder's ranking was measured at "
        f"Spearman {measured} against ground truths (docs/evaluation.md 8): treat it as rough, or raise --budget"
    )


def score_label(
    kind: str | None, target_flops: float, widths: Sequence[int], metric: str = "loss", slope_factor: float = 1.0
) -> str:
    """What a score is, in words: for table headers, ``--json`` and provenance.

    >>> score_label("predicted", 3e11, [48, 64, 80])
    'predicted loss at 3e+11 FLOPs (frontier fit over widths 48-80)'
    >>> score_label("predicted", 3e11, [48, 64, 80], slope_factor=2 / 3)
    'predicted loss at 3e+11 FLOPs (frontier fit over widths 48-80, exponent x0.667 for parameter sharing)'
    """
    span = f"{min(widths)}-{max(widths)}" if widths else "-"
    if kind == "predicted":
        sharing = f", exponent x{slope_factor:.3g} for parameter sharing" if slope_factor != 1.0 else ""
        return f"predicted {metric} at {target_flops:.3g} FLOPs (frontier fit over widths {span}{sharing})"
    if kind == "measured":
        return (
            f"measured {metric} of the best rung (widths {span}); the prediction at {target_flops:.3g} failed a check"
        )
    return f"no score ({metric} at {target_flops:.3g} FLOPs could not be estimated)"


def parameter_growth(spec: Spec) -> float:
    """How fast a structure's parameters grow with its compute: (1 + nu - omega) / (1 + nu).

    Params ~ d^(1+nu-omega) and FLOPs ~ d^(1+nu) (taxonomy.md 3), so this is 1 for every
    structure without parameter sharing (dense, low rank, BTT) and below 1 with it.

    >>> parameter_growth(Spec.parse("kronecker")), parameter_growth(Spec.parse("btt"))
    (0.6666666666666666, 1.0)
    """
    from structsearch.taxonomy import exponents

    found = exponents(spec)
    nu, omega = float(found.nu), float(found.omega)
    return (1 + nu - omega) / (1 + nu) if 1 + nu > 0 else 1.0


def extrapolate(fit: PowerLawFit, largest: float, compute: float, slope_factor: float = 1.0) -> float:
    """The fit's loss at ``compute``, its exponent scaled by ``slope_factor`` beyond ``largest`` (the frontier's end).

    >>> fit = PowerLawFit(a=1.0, b=0.5, n_points=2, log_rmse=0.0)
    >>> extrapolate(fit, 1e4, 1e6), extrapolate(fit, 1e4, 1e6, slope_factor=0.5)
    (0.001, 0.0031622776601683794)
    """
    if compute <= largest or slope_factor == 1.0:
        return fit.predict(compute)
    return fit.predict(largest) * (compute / largest) ** (-fit.b * slope_factor)


def prediction_band(
    frontier: Sequence[tuple[float, float]], compute: float, level: float = 0.95
) -> tuple[float, float] | None:
    """The ``level`` band of a log-log least-squares line's prediction at ``compute`` (3+ points).

    The standard regression band, s * t * sqrt(1/n + (x0 - mean x)^2 / Sxx) in log loss.

    >>> low, high = prediction_band([(1e9, 1.0), (1e10, 0.5), (1e11, 0.25)], 1e12)
    >>> round(low, 6) == round(high, 6) == 0.125
    True
    """
    import numpy as np
    from scipy import stats

    if len(frontier) < 3:
        return None
    x = np.log([c for c, _ in frontier])
    y = np.log([v for _, v in frontier])
    slope, intercept = np.polyfit(x, y, 1)
    n = len(x)
    s = math.sqrt(float(np.sum((y - (intercept + slope * x)) ** 2)) / (n - 2))
    x0 = math.log(compute)
    half = (
        float(stats.t.ppf(0.5 + level / 2, n - 2))
        * s
        * math.sqrt(1 / n + (x0 - x.mean()) ** 2 / np.sum((x - x.mean()) ** 2))
    )
    centre = intercept + slope * x0
    return math.exp(centre - half), math.exp(centre + half)


def check_extrapolation(
    rungs: Sequence[Rung], fit: PowerLawFit | None, target_flops: float, prediction: float | None = None
) -> list[str]:
    """Reasons not to trust the fit's prediction at ``target_flops`` (empty: use it).

    ``prediction`` is the score's (default: the fit's own) loss at ``target_flops``.

    >>> check_extrapolation([], None, 1e12)
    ['fewer than 2 frontier points: more compute did not lower the loss']
    """
    problems = []
    if fit is None:
        return ["fewer than 2 frontier points: more compute did not lower the loss"]
    if fit.log_rmse > MAX_LOG_RESIDUAL:
        problems.append(f"the power law fits the rungs poorly (log residual {fit.log_rmse:.3f} > {MAX_LOG_RESIDUAL})")
    if fit.b <= 0:
        problems.append(f"fitted exponent b = {fit.b:.3g}: loss does not fall with compute")
    up = [r for r in rungs if r.turns_up]
    if up:
        widths = ", ".join(str(r.width) for r in up)
        problems.append(f"validation loss turns up at width {widths} (overfitting): the power law would not hold")
    largest = max((r.train_flops for r in rungs if r.status == "ok"), default=0.0)
    if largest and target_flops / largest > MAX_EXTRAPOLATION:
        problems.append(
            f"target {target_flops:.3g} is {target_flops / largest:.0f}x the largest rung (> {MAX_EXTRAPOLATION:g}x)"
        )
    measured = min((r.final_loss for r in rungs if r.final_loss is not None), default=None)
    predicted = fit.predict(target_flops) if prediction is None else prediction
    if measured is not None and predicted * MAX_PREDICTED_DROP < measured:
        problems.append(
            f"prediction {predicted:.3g} is more than {MAX_PREDICTED_DROP:g}x below the measured {measured:.3g}"
        )
    return problems


def _rung(
    spec: Spec, task_obj: Any, ladder: Ladder, reference_width: int, budget: float, seed: int, **train: Any
) -> Rung:
    from structsearch.evaluation import evaluate

    try:
        width = ladder.width_for(spec, task_obj, reference_width)
        result = evaluate(
            spec, task_obj, budget=budget, seed=seed, width=width, eval_points=ladder.eval_points, **train
        )
    except (SizeError, BudgetError) as err:  # too much padding, or a rung that buys no training step
        return Rung(reference_width=reference_width, width=None, budget=budget, status="skipped", reason=str(err))
    losses = [p.val_loss for p in result.curve[1:] if p.val_loss is not None]
    return Rung(
        reference_width=reference_width,
        width=result.width,
        budget=budget,
        status=result.status,
        train_flops=result.train_flops,
        final_loss=result.final_loss,
        best_loss=min(losses) if losses else None,
        steps=result.steps,
        wall_seconds=result.wall_seconds,
        params=result.params,
        macs=result.macs,
        flops_per_second=float(getattr(result, "flops_per_second", 0.0) or 0.0),
        reason=result.reason,
    )


def frontier_score(
    spec: str | Mapping[str, Any] | Spec | os.PathLike,
    task: str | Any = "mlp-regression",
    budget: float | None = None,
    seed: int = 0,
    device: Any = None,
    width: int | None = None,
    lr: float | None = None,
    *,
    target_flops: float | None = None,
    ladder: Ladder = DEFAULT_LADDER,
    slope_rule: SlopeRule = DEFAULT_SLOPE_RULE,
    on_rung: Callable[[int, float], bool] | None = None,
    task_options: Mapping[str, Any] | None = None,
    threads: int | None = None,
) -> FrontierScore:
    """Score ``spec`` by its compute-efficient frontier's loss at ``target_flops`` (module docstring).

    ``budget`` (default: the task's) is what the whole ladder costs; ``target_flops`` defaults
    to ``TARGET_MULTIPLE`` x ``budget``; ``slope_rule`` says how the fitted exponent is carried
    past the largest rung. ``width`` is accepted for the search's evaluator signature and
    ignored: the ladder allocates widths. Never raises for divergence.
    """
    from structsearch.layers import load_spec
    from structsearch.tasks import get_task

    del width  # the ladder allocates widths
    spec = load_spec(spec)  # a name, a theta or an exported spec file, as evaluate() takes them
    task_obj = get_task(task, **dict(task_options or {}))
    budget = float(task_obj.budget) if budget is None else budget
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise TaskError(f"budget: expected a positive number of FLOPs, got {budget!r}")
    target = TARGET_MULTIPLE * budget if target_flops is None else target_flops
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target) or target <= 0:
        raise TaskError(f"target_flops: expected a positive number of FLOPs, got {target_flops!r}")
    check_slope_rule(slope_rule)
    plan = ladder.plan_for(budget, task_obj)
    rungs: list[Rung] = []
    pruned = False
    steps = ladder.progress_steps()
    for index, (reference_width, rung_budget) in enumerate(plan):
        rung = _rung(spec, task_obj, ladder, reference_width, rung_budget, seed, device=device, lr=lr, threads=threads)
        rungs.append(rung)
        if rung.status in ("diverged", "failed"):
            break
        if rung.final_loss is not None and on_rung is not None and on_rung(steps[index], rung.final_loss):
            pruned = index < len(plan) - 1
            if pruned:
                break
    return _summarise(spec, task_obj, rungs, ladder, budget, float(target), seed, pruned, slope_rule)


def _achieved(rungs: Sequence[Rung]) -> float:
    """Training FLOPs over model time, summed over the rungs that recorded a rate."""
    timed = [r for r in rungs if r.flops_per_second > 0]
    seconds = sum(r.train_flops / r.flops_per_second for r in timed)
    return sum(r.train_flops for r in timed) / seconds if seconds else 0.0


def _untrained(status: str, warnings: list[str]) -> str | None:
    """Why no rung trained (every rung skipped: too small a budget, too much padding), for the trial's reason."""
    return warnings[0] if status == "failed" and warnings else None


def _summarise(
    spec: Spec,
    task_obj: Any,
    rungs: list[Rung],
    ladder: Ladder,
    budget: float,
    target: float,
    seed: int,
    pruned: bool,
    slope_rule: SlopeRule,
) -> FrontierScore:
    metric = str(getattr(task_obj, "metric", "loss"))
    slope_factor = parameter_growth(spec) if slope_rule == "parameter-growth" else 1.0
    trained = [r for r in rungs if r.status != "skipped"]
    bad = next((r for r in trained if r.status in ("diverged", "failed")), None)
    frontier = pareto_frontier([(r.train_flops, r.final_loss) for r in trained if r.status == "ok" and r.final_loss])
    fit = fit_power_law(*zip(*frontier, strict=True)) if len(frontier) >= 2 else None
    measured = min((v for _, v in frontier), default=None)
    prediction, band = None, None
    bent = fit is not None and target > frontier[-1][0]  # the slope factor applies past the frontier only
    if fit is not None:
        largest = frontier[-1][0]
        prediction = extrapolate(fit, largest, target, slope_factor)
        plain = prediction_band(frontier, target)  # the regression's band, moved with the prediction
        shift = prediction / fit.predict(target)
        band = (plain[0] * shift, plain[1] * shift) if plain else None
    warnings: list[str] = []
    status: str = "ok"
    score, kind = None, None
    if bad is not None:
        status = bad.status
    elif pruned:
        status = "pruned"
    elif not frontier:
        status, warnings = "failed", ["no rung trained: " + "; ".join(r.reason or r.status for r in rungs)]
    else:
        warnings = check_extrapolation(trained, fit, target, prediction)
        score, kind = (measured, "measured") if warnings else (prediction, "predicted")
    widths = [r.width for r in trained if r.width]
    last = trained[-1] if trained else None
    return FrontierScore(
        spec=spec.paper,
        structure=spec.name,
        task=str(task_obj.name),
        metric=metric,
        status=status,  # type: ignore[arg-type]
        score=score,
        score_kind=kind,  # type: ignore[arg-type]
        score_label=score_label(kind, target, widths, metric, slope_factor if bent else 1.0),
        target_flops=target,
        prediction=prediction,
        prediction_low=band[0] if band else None,
        prediction_high=band[1] if band else None,
        fit=fit,
        slope_rule=slope_rule,
        slope_factor=slope_factor,
        frontier=frontier,
        rungs=rungs,
        ladder=ladder,
        warnings=warnings,
        final_loss=measured,
        diverged=status == "diverged",
        reason=bad.reason
        if bad is not None
        else (f"pruned after rung {len(rungs)}" if pruned else _untrained(status, warnings)),
        budget=budget,
        train_flops=sum(r.train_flops for r in rungs),
        steps=sum(r.steps for r in rungs),
        wall_seconds=sum(r.wall_seconds for r in rungs),
        flops_per_second=_achieved(rungs),
        params=last.params if last else 0,
        macs=last.macs if last else 0,
        width=(last.width or 0) if last else 0,
        seed=seed,
    )
