"""Confirmation: re-train the search's best candidates and the references with several seeds.

A search ranks candidates by one training seed each, and seed-to-seed noise is often as large
as the differences it ranks by. :func:`confirm` re-trains each structure with ``seeds`` at one
compute, each at its width on the compute-optimal path (the ladder's rule, see
:mod:`structsearch.frontier`), and reports per structure the mean with a 95% t-interval. The
best structure is compared with each reference (dense, BTT) by a paired t-test over seeds (a
seed fixes the initialisation and the data stream, so the pairs share their luck): ``better``
or ``worse`` when the 95% interval of the mean difference excludes zero, else ``tied``.

The statistics (:func:`mean_interval`, :func:`paired_comparison`) are pure functions over
numbers; torch loads only when :func:`confirm` trains.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from structsearch.errors import SizeError, TaskError
from structsearch.frontier import DEFAULT_LADDER, Ladder
from structsearch.spec import Spec, parse_spec

__all__ = [
    "Comparison",
    "Confirmation",
    "ConfirmedStructure",
    "confirm",
    "mean_interval",
    "paired_comparison",
]

LEVEL = 0.95


def mean_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float | None, float | None]:
    """Mean and its ``level`` Student-t interval (None with fewer than 2 values).

    >>> m, lo, hi = mean_interval([1.0, 2.0, 3.0])
    >>> m, round(lo, 4), round(hi, 4)
    (2.0, -0.4841, 4.4841)
    """
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("mean_interval: expected at least one value")
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


class Comparison(BaseModel):
    """The best structure against one reference, paired by seed (difference = best - reference)."""

    model_config = ConfigDict(frozen=True)

    best: str
    reference: str
    n_pairs: int
    mean_difference: float
    relative_difference: float = Field(description="mean difference / the reference's mean")
    ci_low: float | None
    ci_high: float | None
    p_value: float | None = Field(description="two-sided paired t-test")
    verdict: Literal["better", "worse", "tied", "same structure"]

    def sentence(self) -> str:
        if self.verdict == "same structure":
            return f"the best is {self.reference} itself"
        band = f"{self.relative_difference:+.1%}"
        p = f", p = {self.p_value:.2g}" if self.p_value is not None else ""
        word = {"better": "better than", "worse": "worse than", "tied": "tied with"}[self.verdict]
        return f"{self.best} is {word} {self.reference} ({band} loss, {self.n_pairs} paired seeds{p})"


def paired_comparison(
    best: Sequence[float], reference: Sequence[float], best_label: str = "best", reference_label: str = "reference"
) -> Comparison:
    """Paired t-test of ``best`` against ``reference`` (same seeds, same order); lower is better.

    >>> c = paired_comparison([1.0, 1.1, 0.9], [1.2, 1.4, 1.1])
    >>> c.verdict, round(c.mean_difference, 4), round(c.p_value, 4)
    ('better', -0.2333, 0.0198)
    """
    from scipy import stats

    if len(best) != len(reference) or not best:
        raise ValueError(f"paired_comparison: expected equal, non-empty samples, got {len(best)} and {len(reference)}")
    diffs = [b - r for b, r in zip(best, reference, strict=True)]
    mean, low, high = mean_interval(diffs)
    p = None
    if len(diffs) >= 2:
        if any(d != diffs[0] for d in diffs):
            p = float(stats.ttest_rel(best, reference).pvalue)
        else:  # identical differences: no spread, the sign decides
            p = 0.0 if diffs[0] != 0 else 1.0
    verdict = "tied"
    if low is not None and high is not None:
        verdict = "better" if high < 0 else "worse" if low > 0 else "tied"
    ref_mean = math.fsum(reference) / len(reference)
    return Comparison(
        best=best_label,
        reference=reference_label,
        n_pairs=len(diffs),
        mean_difference=mean,
        relative_difference=mean / ref_mean if ref_mean else float("nan"),
        ci_low=low,
        ci_high=high,
        p_value=p,
        verdict=verdict,  # type: ignore[arg-type]
    )


class ConfirmedStructure(BaseModel):
    """One structure re-trained with several seeds at the confirmation compute."""

    model_config = ConfigDict(frozen=True)

    label: str = Field(description="'best', 'top 2', ..., 'dense' or 'btt'")
    spec: str
    structure: str | None
    role: Literal["candidate", "reference"]
    trial: int | None = None
    width: int | None
    losses: list[float | None] = Field(description="final validation loss per seed (None: diverged or failed)")
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    wall_seconds: float
    train_flops: float
    reason: str | None = None


class Confirmation(BaseModel):
    """What :func:`confirm` found; ``to_dict()`` is JSON-safe."""

    model_config = ConfigDict(frozen=True)

    task: str
    metric: str
    compute: float = Field(description="training FLOPs of every confirmation run")
    seeds: list[int]
    label: str = Field(description="what the numbers are, in words")
    structures: list[ConfirmedStructure]
    comparisons: list[Comparison]
    wall_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def lines(self) -> list[str]:
        return [c.sentence() for c in self.comparisons]


def _train_seeds(
    spec: Spec, task_obj: Any, compute: float, width: int, seeds: Sequence[int], **train: Any
) -> list[Any]:
    """One result per seed, from one seed-batched training (docs/evaluation.md: seed batching)."""
    from structsearch.evaluation import evaluate

    return list(evaluate(spec, task_obj, budget=compute, seeds=list(seeds), width=width, **train).runs)


def check_compute_buys_a_step(task: str | Any, compute: float, ladder: Ladder = DEFAULT_LADDER) -> None:
    """Refuse, before a search trains anything, a confirmation compute in which dense buys no step."""
    from structsearch.errors import BudgetError
    from structsearch.evaluation import flops_per_step, steps_for_budget
    from structsearch.tasks import get_task

    task_obj = get_task(task)
    multiple = int(getattr(task_obj, "width_multiple", 8))
    width = ladder.reference_width(float(compute), int(task_obj.default_width), float(task_obj.budget), multiple)
    per_step = flops_per_step("dense", task_obj, width)
    try:
        steps_for_budget(float(compute), per_step)
    except BudgetError:
        raise BudgetError(
            f"confirm_flops {compute:.3g}: dense at width {width} buys no training step "
            f"(one step costs {per_step:.3g}); raise --confirm-flops"
        ) from None


def confirm(
    structures: Mapping[str, str | Spec],
    task: str | Any = "mlp-regression",
    compute: float | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    ladder: Ladder = DEFAULT_LADDER,
    references: Sequence[str] = ("dense", "btt"),
    trials: Mapping[str, int] | None = None,
    task_options: Mapping[str, Any] | None = None,
    device: Any = None,
    threads: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> Confirmation:
    """Re-train ``structures`` (label -> spec; the first is "the best") and ``references`` with ``seeds``.

    Every run spends ``compute`` training FLOPs (default: the task's budget) at the width the
    ladder's rule gives at that compute. Returns means with 95% intervals and the best's
    paired comparison with each reference.
    """
    from structsearch.tasks import get_task

    if not isinstance(structures, Mapping):
        raise TaskError(f"structures: expected a mapping label -> spec, e.g. {{'best': 'btt'}}, got {structures!r}")
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise TaskError(f"seeds: expected at least 2 distinct seeds for an interval, got {list(seeds)!r}")
    task_obj = get_task(task, **dict(task_options or {}))
    compute = float(task_obj.budget) if compute is None else float(compute)
    if not math.isfinite(compute) or compute <= 0:
        raise TaskError(f"compute: expected a positive number of FLOPs, got {compute!r}")
    multiple = int(getattr(task_obj, "width_multiple", 8))
    reference_width = ladder.reference_width(compute, int(task_obj.default_width), float(task_obj.budget), multiple)
    todo: list[tuple[str, Spec, str]] = [(k, parse_spec(v), "candidate") for k, v in structures.items()]
    for name in references:
        spec = parse_spec(name)
        if all(spec != s for _, s, _ in todo):
            todo.append((name, spec, "reference"))
    start = time.perf_counter()
    rows: list[ConfirmedStructure] = []
    for i, (label, spec, role) in enumerate(todo):
        rows.append(_confirm_one(label, spec, role, task_obj, compute, reference_width, ladder, seeds, device, threads))
        rows[-1] = rows[-1].model_copy(update={"trial": (trials or {}).get(label)})
        if progress is not None:
            progress(i + 1, len(todo), label)
    comparisons = _compare(rows, references)
    metric = str(getattr(task_obj, "metric", "loss"))
    return Confirmation(
        task=str(task_obj.name),
        metric=metric,
        compute=compute,
        seeds=list(seeds),
        label=f"measured {metric} at {compute:.3g} FLOPs, mean of {len(seeds)} seeds with 95% interval "
        f"(width on the compute-optimal path: dense-equivalent {reference_width}, {ladder.rule} rule)",
        structures=rows,
        comparisons=comparisons,
        wall_seconds=time.perf_counter() - start,
    )


def _confirm_one(
    label: str,
    spec: Spec,
    role: str,
    task_obj: Any,
    compute: float,
    reference_width: int,
    ladder: Ladder,
    seeds: Sequence[int],
    device: Any,
    threads: int | None,
) -> ConfirmedStructure:
    width = None
    try:
        width = ladder.width_for(spec, task_obj, reference_width)
        results = _train_seeds(spec, task_obj, compute, width, seeds, device=device, threads=threads)
    except SizeError as err:
        results, reason = [], str(err)
    else:
        reason = next((r.reason for r in results if r.status != "ok"), None)
    losses = [r.final_loss if r.status == "ok" else None for r in results]
    finite = [v for v in losses if v is not None]
    mean, low, high = mean_interval(finite) if len(finite) == len(seeds) else (None, None, None)
    return ConfirmedStructure(
        label=label,
        spec=spec.paper,
        structure=spec.name,
        role=role,  # type: ignore[arg-type]
        width=width,
        losses=losses,
        mean=mean,
        ci_low=low,
        ci_high=high,
        wall_seconds=sum(r.wall_seconds for r in results),
        train_flops=sum(r.train_flops for r in results),
        reason=reason,
    )


def _compare(rows: list[ConfirmedStructure], references: Sequence[str]) -> list[Comparison]:
    if not rows or rows[0].mean is None:
        return []
    best = rows[0]
    out = []
    for name in references:
        ref_spec = parse_spec(name).paper
        ref = next((r for r in rows if r.spec == ref_spec), None)
        if ref is None or ref.mean is None:
            continue
        best_label = best.structure or best.spec
        if ref is best:
            out.append(
                Comparison(
                    best=best_label,
                    reference=name,
                    n_pairs=0,
                    mean_difference=0.0,
                    relative_difference=0.0,
                    ci_low=None,
                    ci_high=None,
                    p_value=None,
                    verdict="same structure",
                )
            )
            continue
        out.append(paired_comparison(best.losses, ref.losses, best_label, name))  # type: ignore[arg-type]
    return out
