"""Scaling mode: train a ladder of widths and budgets, keep the compute-efficient frontier,
fit a power law and compare structures with dense by the compute they need for a loss.

Method (taxonomy.md section 7): for each structure every (width, budget) pair is trained
once; the frontier keeps, at each budget, the best width, and of those the points no cheaper
point beats (lower loss at less or equal training FLOPs); ``loss = a * C^(-b)`` (``+ c``
with ``offset=True``) is fitted to the frontier with ``scipy.optimize.curve_fit``, whose
covariance gives the standard errors. The compute
multiplier of a structure against dense at a loss L is C_dense(L) / C_structure(L): above 1
the structure needs less compute. It is reported twice: from the fits, and from the measured
frontiers (log-log interpolation, only where both frontiers reach L).

The pure functions (:func:`pareto_frontier`, :func:`fit_power_law`, :func:`compute_at_loss`)
take plain numbers; torch loads only in :func:`scale`, through :func:`structsearch.evaluate`.
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from structsearch._safe_paths import check_output
from structsearch.errors import BudgetError, SizeError, TaskError
from structsearch.spec import Spec, parse_spec

__all__ = [
    "PowerLawFit",
    "ScalePoint",
    "ScaleResult",
    "StructureScaling",
    "compute_at_loss",
    "fit_power_law",
    "ladder_frontier",
    "pareto_frontier",
    "plot_formats",
    "plot_frontiers",
    "resummarise",
    "scale",
]


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The compute-efficient frontier of (compute, loss) points, sorted by compute.

    A point stays if every cheaper-or-equal point has a higher loss.

    >>> pareto_frontier([(1, 5.0), (2, 3.0), (3, 4.0), (4, 2.0), (4, 2.5)])
    [(1, 5.0), (2, 3.0), (4, 2.0)]
    """
    best = math.inf
    frontier: list[tuple[float, float]] = []
    for c, loss in sorted(points, key=lambda p: (p[0], p[1])):
        if not (math.isfinite(c) and math.isfinite(loss)):
            continue
        if loss < best:
            frontier.append((c, loss))
            best = loss
    return frontier


class PowerLawFit(BaseModel):
    """loss = a * C^(-b) + c with standard errors (c = 0 when fitted without offset)."""

    model_config = ConfigDict(frozen=True)

    a: float
    b: float
    c: float = 0.0
    a_err: float | None = Field(default=None, description="standard error of a (delta method)")
    b_err: float | None = None
    c_err: float | None = None
    offset: bool = False
    n_points: int
    log_rmse: float = Field(description="RMS of log(loss) residuals on the fitted points")

    def predict(self, compute: float) -> float:
        return self.a * compute ** (-self.b) + self.c

    def compute_for(self, loss: float) -> float | None:
        """The compute at which the fit reaches ``loss`` (None if it never does)."""
        gap = loss - self.c
        if gap <= 0 or self.b <= 0:
            return None
        return (self.a / gap) ** (1.0 / self.b)


def _err(cov: Any, i: int) -> float | None:
    value = float(cov[i][i])
    return math.sqrt(value) if math.isfinite(value) and value >= 0 else None


def fit_power_law(compute: Sequence[float], loss: Sequence[float], offset: bool = False) -> PowerLawFit:
    """Fit loss = a * C^(-b) (+ c) by least squares in log(loss); errors from the covariance.

    Compute is normalised by its geometric mean for conditioning; a and its error are
    reported in the original units. Without offset it needs 2 points (errors from 3),
    with offset 4.

    >>> fit = fit_power_law([1e9, 1e10, 1e11], [2.0, 1.0, 0.5])
    >>> round(fit.b, 4), round(fit.a * 1e9 ** -fit.b, 4)
    (0.301, 2.0)
    """
    import numpy as np
    from scipy.optimize import curve_fit

    x = np.asarray(compute, dtype=float)
    y = np.asarray(loss, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"compute and loss: expected equal-length 1-d sequences, got {x.shape} and {y.shape}")
    if not (np.all(x > 0) and np.all(y > 0)):
        raise ValueError("compute and loss: expected positive values")
    need = 4 if offset else 2
    if len(x) < need:
        kind = "with" if offset else "without"
        raise ValueError(f"fit_power_law: needs at least {need} points ({kind} offset), got {len(x)}")
    c0 = float(np.exp(np.mean(np.log(x))))
    u = np.log(x / c0)
    logy = np.log(y)
    if not offset:

        def model(u: Any, log_a: float, b: float) -> Any:
            return log_a - b * u

        slope, intercept = np.polyfit(u, logy, 1)
        p0 = [intercept, -slope]
    else:

        def model(u: Any, log_a: float, b: float, log_c: float) -> Any:  # type: ignore[misc]
            return np.log(np.exp(log_a - b * u) + np.exp(log_c))

        slope, intercept = np.polyfit(u, logy, 1)
        p0 = [intercept, max(1e-3, -slope), float(np.log(0.5 * y.min()))]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OptimizeWarning when the covariance is undetermined
        popt, pcov = curve_fit(model, u, logy, p0=p0, maxfev=20000)
    if len(x) <= len(popt):
        pcov = np.full((len(popt), len(popt)), np.inf)
    log_a, b = float(popt[0]), float(popt[1])
    residual = logy - model(u, *popt)
    # back to original units: a = exp(log_a) * c0^b, var(log a) by the delta method
    log_c0 = math.log(c0)
    a = math.exp(log_a + b * log_c0)
    var_log_a = pcov[0][0] + log_c0**2 * pcov[1][1] + 2 * log_c0 * pcov[0][1]
    a_err = a * math.sqrt(var_log_a) if math.isfinite(var_log_a) and var_log_a >= 0 else None
    c = c_err = None
    if offset:
        c = math.exp(float(popt[2]))
        err = _err(pcov, 2)
        c_err = c * err if err is not None else None
    return PowerLawFit(
        a=a,
        b=b,
        c=c or 0.0,
        a_err=a_err,
        b_err=_err(pcov, 1),
        c_err=c_err,
        offset=offset,
        n_points=len(x),
        log_rmse=float(np.sqrt(np.mean(residual**2))),
    )


def compute_at_loss(frontier: Sequence[tuple[float, float]], loss: float) -> float | None:
    """The compute a measured frontier needs for ``loss`` (log-log interpolation), None if out of range.

    >>> f"{compute_at_loss([(1e9, 2.0), (1e11, 0.5)], 1.0):.4g}"
    '1e+10'
    """
    pts = sorted(frontier)
    if not pts:
        return None
    if loss == pts[0][1]:
        return pts[0][0]
    for (c1, l1), (c2, l2) in itertools.pairwise(pts):
        if l2 <= loss <= l1:
            if l1 == l2:
                return c1
            w = (math.log(loss) - math.log(l1)) / (math.log(l2) - math.log(l1))
            return math.exp(math.log(c1) + w * (math.log(c2) - math.log(c1)))
    return None


class ScalePoint(BaseModel):
    """One training of the ladder."""

    model_config = ConfigDict(frozen=True)

    width: int
    budget: float
    status: str = Field(description="ok, diverged, failed or skipped (size error)")
    train_flops: float | None = None
    final_loss: float | None = None
    params: int | None = None
    steps: int | None = None
    wall_seconds: float | None = None
    reason: str | None = None
    on_frontier: bool = False


class StructureScaling(BaseModel):
    """The ladder, frontier, fit and compute multiplier of one structure."""

    model_config = ConfigDict(frozen=True)

    spec: str
    structure: str | None
    points: list[ScalePoint]
    frontier: list[tuple[float, float]]
    fit: PowerLawFit | None
    multiplier: float | None = Field(default=None, description="fitted C_dense(L*) / C_this(L*)")
    multiplier_measured: float | None = Field(default=None, description="same from the measured frontiers")
    reaches_target: bool | None = Field(default=None, description="its frontier reaches the target loss L*")
    measured_is_lower_bound: bool = Field(
        default=False,
        description="its cheapest run already beats L*: the measured multiplier is a lower bound",
    )

    @property
    def label(self) -> str:
        return self.structure or self.spec


class ScaleResult(BaseModel):
    """Everything ``structsearch scale`` reports; ``to_dict()`` is JSON-safe."""

    model_config = ConfigDict(frozen=True)

    task: str
    metric: str
    widths: list[int]
    budgets: list[float]
    seed: int
    baseline: str
    target_loss: float | None = Field(description="L*: the baseline's best frontier loss")
    structures: list[StructureScaling]
    plot: str | None = None
    plot_error: str | None = Field(default=None, description="why the plot was not written (the results stand)")
    total_wall_seconds: float
    device: str

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def ladder_frontier(points: Sequence[ScalePoint]) -> list[tuple[float, float]]:
    """The frontier of a ladder: at each budget the best width, then :func:`pareto_frontier`.

    Taking the best width per budget first matters: ``train_flops`` is floor(budget / step cost)
    steps, a little under the budget, and a too-wide model that trained only a few steps would
    otherwise sit on the frontier just for being marginally the cheapest.
    """
    best: dict[float, ScalePoint] = {}
    for p in points:
        if p.status != "ok" or not p.train_flops or p.final_loss is None:
            continue
        if p.budget not in best or p.final_loss < best[p.budget].final_loss:  # type: ignore[operator]
            best[p.budget] = p
    return pareto_frontier([(p.train_flops, p.final_loss) for p in best.values()])  # type: ignore[misc]


def _summarise(spec: Spec, points: list[ScalePoint], offset: bool) -> StructureScaling:
    frontier = ladder_frontier(points)
    on = set(frontier)
    marked = [p.model_copy(update={"on_frontier": (p.train_flops, p.final_loss) in on}) for p in points]
    fit = None
    if len(frontier) >= (4 if offset else 2):
        fit = fit_power_law([c for c, _ in frontier], [v for _, v in frontier], offset=offset)
    return StructureScaling(spec=spec.paper, structure=spec.name, points=marked, frontier=frontier, fit=fit)


def _with_multipliers(
    rows: list[StructureScaling], base: StructureScaling
) -> tuple[list[StructureScaling], float | None]:
    target = min((v for _, v in base.frontier), default=None)
    if target is None:
        return rows, None
    c_base_measured = compute_at_loss(base.frontier, target)
    c_base_fit = base.fit.compute_for(target) if base.fit else None
    out = []
    for row in rows:
        c_fit = row.fit.compute_for(target) if row.fit else None
        c_measured = compute_at_loss(row.frontier, target)
        bound = bool(row.frontier) and c_measured is None and row.frontier[0][1] < target
        if bound:  # reaches L* somewhere below its cheapest run: at most that much compute
            c_measured = row.frontier[0][0]
        out.append(
            row.model_copy(
                update={
                    "multiplier": c_base_fit / c_fit if c_base_fit and c_fit else None,
                    "multiplier_measured": c_base_measured / c_measured if c_base_measured and c_measured else None,
                    "reaches_target": c_measured is not None,
                    "measured_is_lower_bound": bound,
                }
            )
        )
    return out, target


def resummarise(result: ScaleResult, offset: bool | None = None) -> ScaleResult:
    """Recompute frontiers, fits and multipliers from a result's recorded points (no training)."""
    if offset is None:
        offset = any(row.fit.offset for row in result.structures if row.fit)
    rows = [_summarise(parse_spec(row.spec), list(row.points), offset) for row in result.structures]
    target = None
    if result.baseline:
        rows, target = _with_multipliers(rows, rows[0])
    return result.model_copy(update={"structures": rows, "target_loss": target})


def plot_formats() -> tuple[str, ...]:
    """File types matplotlib can write (``png``, ``pdf``, ``svg``, ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(sorted(FigureCanvasBase.get_supported_filetypes()))


def plot_frontiers(result: ScaleResult, path: str) -> str:
    """Loss versus training FLOPs (log-log): every run, the frontier and the fit per structure."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, row in enumerate(result.structures):
        color = f"C{i % 10}"
        pts = [(p.train_flops, p.final_loss) for p in row.points if p.status == "ok" and p.final_loss]
        if pts:
            ax.scatter(*zip(*pts, strict=True), color=color, alpha=0.35, s=14)
        if row.frontier:
            label = row.label
            if row.fit and row.fit.b_err is not None:
                label += f"  b={row.fit.b:.3f}±{row.fit.b_err:.3f}"
            ax.plot(*zip(*row.frontier, strict=True), "o-", color=color, label=label, ms=4)
        if row.fit and row.frontier:
            c = np.geomspace(row.frontier[0][0], row.frontier[-1][0], 50)
            ax.plot(c, [row.fit.predict(v) for v in c], "--", color=color, lw=1)
    if result.target_loss is not None:
        ax.axhline(result.target_loss, color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel(f"validation {result.metric}")
    ax.set_title(f"{result.task}: compute-efficient frontiers (widths {', '.join(map(str, result.widths))})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _ladder(widths: Any, budgets: Any, task_budget: float) -> tuple[list[int], list[float]]:
    """The widths and budgets to train, checked (types included) and each given once, else a TaskError."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Iterable):
        raise TaskError(f"widths: expected a list of positive integers, got {widths!r}")
    widths = list(widths)
    whole = [
        isinstance(w, numbers.Real) and not isinstance(w, bool) and math.isfinite(w) and w == int(w) for w in widths
    ]
    if not widths or not all(whole) or any(w < 1 for w in widths):
        raise TaskError(f"widths: expected positive integers, got {widths!r}")
    if budgets is None:
        budgets = [task_budget * k for k in (1, 3, 10)]
    elif isinstance(budgets, (str, bytes)) or not isinstance(budgets, Iterable):
        raise TaskError(f"budgets: expected a list of positive FLOP counts, got {budgets!r}")
    budgets = list(budgets)
    if any(isinstance(b, bool) or not isinstance(b, numbers.Real) for b in budgets):
        raise TaskError(f"budgets: expected positive FLOP counts, got {budgets!r}")
    budgets = list(dict.fromkeys(float(b) for b in budgets))
    if not budgets or any(not math.isfinite(b) or b <= 0 for b in budgets):
        raise TaskError(f"budgets: expected positive FLOP counts, got {budgets!r}")
    return list(dict.fromkeys(int(w) for w in widths)), budgets  # a width or budget given twice is trained once


def scale(
    specs: str | Spec | os.PathLike | Sequence[str | Spec | os.PathLike],
    task: str | Any = "mlp-regression",
    widths: Sequence[int] = (64, 128, 256),
    budgets: Sequence[float] | None = None,
    seed: int = 0,
    device: Any = None,
    *,
    baseline: str | Spec | None = "dense",
    offset: bool = False,
    lr: float | None = None,
    plot: str | None = None,
    task_options: Mapping[str, Any] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    threads: int | None = None,
) -> ScaleResult:
    """Train every (structure, width, budget), fit the frontiers and compare with ``baseline``.

    ``budgets=None`` uses the task's default budget times 1, 3 and 10. The baseline (dense
    by default) is trained on the same ladder and listed first. ``progress(done, total,
    label)`` is called after every training. A width at which a structure's class sizes
    need too much padding is recorded as skipped.
    """
    import time

    from structsearch.evaluation import check_threads, evaluate, resolve_device
    from structsearch.layers import load_spec
    from structsearch.tasks import get_task

    if isinstance(specs, (str, Spec, os.PathLike)):
        specs = [specs]
    if plot is not None and not str(plot).strip():
        raise TaskError("plot: expected a file name such as frontier.png, got an empty one")
    if plot:  # before any training: a bad path is an error now, not after the ladder
        check_output(plot, "plot", TaskError, plot_formats())
    parsed = [load_spec(s) for s in specs]  # names, theta or exported spec files, as the CLI takes them
    base = load_spec(baseline) if baseline is not None else None
    if base is not None:
        parsed = [base] + [s for s in parsed if s != base]
    if not parsed:
        raise TaskError("scale: expected at least one structure")
    task_obj = get_task(task, **dict(task_options or {}))
    resolve_device(device)  # before a progress display starts: a bad device or thread count is one line
    check_threads(threads)
    widths, budgets = _ladder(widths, budgets, float(task_obj.budget))
    total = len(parsed) * len(widths) * len(budgets)
    done = 0
    if progress is not None:  # the arguments are good: a progress display may start now
        progress(0, total, "first training")
    start = time.perf_counter()
    rows = []
    device_used = "cpu"
    for spec in parsed:
        points: list[ScalePoint] = []
        for width in widths:
            for budget in budgets:
                try:
                    r = evaluate(
                        spec, task_obj, budget=budget, seed=seed, device=device, width=width, lr=lr, threads=threads
                    )
                except (SizeError, BudgetError) as err:
                    points.append(ScalePoint(width=width, budget=budget, status="skipped", reason=str(err)))
                else:
                    device_used = r.device
                    points.append(
                        ScalePoint(
                            width=width,
                            budget=budget,
                            status=r.status,
                            train_flops=r.train_flops,
                            final_loss=r.final_loss,
                            params=r.params,
                            steps=r.steps,
                            wall_seconds=r.wall_seconds,
                            reason=r.reason,
                        )
                    )
                done += 1
                if progress is not None:
                    progress(done, total, f"{spec.name or spec.paper} w={width} C={budget:.2g}")
        rows.append(_summarise(spec, points, offset))
    target = None
    if base is not None:
        rows, target = _with_multipliers(rows, rows[0])
    result = ScaleResult(
        task=str(task_obj.name),
        metric=str(getattr(task_obj, "metric", "loss")),
        widths=widths,
        budgets=budgets,
        seed=seed,
        baseline=base.paper if base is not None else "",
        target_loss=target,
        structures=rows,
        total_wall_seconds=time.perf_counter() - start,
        device=device_used,
    )
    if plot:  # the results stand even when the plot cannot be written
        try:
            plot_frontiers(result, plot)
            result = result.model_copy(update={"plot": plot})
        except (OSError, ValueError) as err:
            result = result.model_copy(update={"plot_error": f"{plot}: cannot write the plot ({_short(err)})"})
    return result


def _short(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err).strip().splitlines()[0][:200]
