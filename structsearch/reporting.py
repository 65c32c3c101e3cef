"""What a study found: the best trials, how the taxonomy exponents track the loss, and two plots.

Everything is read from what the search stored in the study (trial user attributes); nothing
is recomputed. Plots go to ``runs/<study>/``: ``loss_vs_flops.png`` (loss against training
FLOPs and against MACs per vector, with their Pareto fronts) and ``omega_psi.png`` (the
omega-psi plane coloured by loss).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["StudyReport", "pareto_front", "report", "trial_rows"]

_ROW_KEYS = (
    "theta",
    "paper",
    "name",
    "omega",
    "psi",
    "nu",
    "params",
    "macs",
    "loss",
    "train_flops",
    "status",
    "eval_macs",
    "eval_width",
    "steps",
    "wall_seconds",
    "flops_per_second",
    "reason",
    "duplicate_of",
    "canonicalised_from",
    "final_loss",
    "score_label",
    "score_kind",
    "target_flops",
    "prediction_low",
    "prediction_high",
    "warnings",
    "fit",
    "ladder",
    "moe",
)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats in both coordinates (both minimised), by x.

    >>> pareto_front([(1, 5), (2, 3), (3, 4), (4, 1)])
    [0, 1, 3]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best_y = [], math.inf
    for i in order:
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per finished trial from its stored user attributes (number, state, and ``_ROW_KEYS``)."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            continue
        row = {"number": t.number, "state": t.state.name}
        row.update({k: t.user_attrs.get(k) for k in _ROW_KEYS})
        rows.append(row)
    return rows


def _spearman(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    xs = [r[key] for r in rows if r.get(key) is not None]
    ys = [r["loss"] for r in rows if r.get(key) is not None]
    n = len(xs)
    if n < 3:
        return {"rho": None, "p": None, "n": n, "note": "fewer than 3 trained trials"}
    if len(set(xs)) < 2:
        return {"rho": None, "p": None, "n": n, "note": f"{key} is constant over the trained trials"}
    if len(set(ys)) < 2:
        return {"rho": None, "p": None, "n": n, "note": "loss is constant over the trained trials"}
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = spearmanr(xs, ys)
    rho, p = float(res.statistic), float(res.pvalue)
    return {"rho": rho if math.isfinite(rho) else None, "p": p if math.isfinite(p) else None, "n": n}


@dataclass
class StudyReport:
    """The report of one study; renders as rich tables, ``to_dict()`` for ``--json``."""

    study: str
    storage: str
    config: dict[str, Any]
    counts: dict[str, int]
    best: list[dict[str, Any]]
    correlations: dict[str, dict[str, Any]]
    pareto: list[int]
    plots: dict[str, str] = field(default_factory=dict)
    plots_error: str | None = None
    n_trials: int = 0
    n_trained: int = 0
    score_label: str = "loss"
    references: dict[str, dict[str, Any]] = field(default_factory=dict)
    confirmation: dict[str, Any] | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "storage": self.storage,
            "task": self.config.get("task"),
            "budget": self.config.get("budget"),
            "objective": self.config.get("objective"),
            "space": (self.config.get("space") or {}).get("name"),
            "width": self.config.get("width"),
            "n_trials": self.n_trials,
            "n_trained": self.n_trained,
            "counts": self.counts,
            "score_label": self.score_label,
            "best": self.best,
            "references": self.references,
            "confirmation": self.confirmation,
            "failures": self.failures,
            "spearman": self.correlations,
            "pareto_front": self.pareto,
            "pareto_front_loss_macs": self.config.get("pareto_objective_front"),
            "plots": self.plots,
            "plots_error": self.plots_error,
        }

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        c = self.config
        budget = f"{c['budget']:.3g} FLOPs" if isinstance(c.get("budget"), (int, float)) else "task default"
        head = Text(
            f"study {self.study} ({self.storage}): task {c.get('task')}, budget {budget}, "
            f"space {(c.get('space') or {}).get('name')}, {_scoring(c)}, objective {c.get('objective')}\n"
            f"{self.n_trials} trials, {self.n_trained} trained; "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
            + _throughput(self.best)
        )
        table = Table(title=f"best trials, by {self.score_label}")
        for col in ("#", "theta", "name", "omega", "psi", "nu", "params", "MACs", "score", "95% band", "status"):
            table.add_column(
                col,
                justify="right" if col not in ("theta", "name", "status") else "left",
                no_wrap=col in ("theta", "score", "95% band"),
            )
        for r in self.best:
            status = str(r.get("status")) + (" *" if r["number"] in self.pareto else "")
            if r.get("score_kind") == "measured":
                status += " (measured: prediction failed a check)"
            table.add_row(str(r["number"]), *_cells(r), status)
        for name, r in self.references.items():
            table.add_row("ref", *_cells(r), f"reference ({name})", style="dim")
        corr = Table(title="Spearman correlation with loss (trained trials)")
        for col in ("exponent", "rho", "p", "n", "note"):
            corr.add_column(col)
        for key, v in self.correlations.items():
            corr.add_row(key, _fmt(v.get("rho")), _fmt(v.get("p")), str(v.get("n")), v.get("note", ""))
        parts: list[Any] = [head, table, corr]
        if self.confirmation:
            parts.extend(_confirmation_parts(self.confirmation))
        if self.failures:
            parts.append(_failure_lines(self.failures))
        if self.pareto:
            parts.append(Text("* on the Pareto front of loss vs training FLOPs"))
        if self.config.get("pareto_objective_front") is not None:
            parts.append(
                Text(
                    "Pareto front of the objectives (loss, MACs): trials "
                    + ", ".join(map(str, self.config["pareto_objective_front"]))
                )
            )
        if self.plots:
            parts.append(Text("plots: " + ", ".join(self.plots.values())))
        if self.plots_error:
            parts.append(Text(f"plots not written: {self.plots_error}"))
        return Group(*parts)


def _failure_lines(failures: list[dict[str, Any]], shown: int = 5) -> Any:
    """The failed and diverged trials with their reasons (the first ``shown``; ``--json`` lists all)."""
    from rich.text import Text

    lines = [f"{len(failures)} trial(s) failed or diverged:"]
    lines += [f"  #{f['number']} {f['paper'] or '-'} {f['status']}: {f['reason'] or '-'}" for f in failures[:shown]]
    if len(failures) > shown:
        lines.append(f"  ... and {len(failures) - shown} more (report --json lists them all)")
    return Text("\n".join(lines), style="yellow")


def _cells(r: dict[str, Any]) -> list[str]:
    low, high = r.get("prediction_low"), r.get("prediction_high")
    return [
        str(r.get("paper")),
        r.get("name") or "",
        _fmt(r.get("omega")),
        _fmt(r.get("psi")),
        _fmt(r.get("nu")),
        f"{r.get('params') or 0:,}",
        f"{r.get('macs') or 0:,}",
        _fmt(r.get("loss"), 5),
        f"{low:.4g}-{high:.4g}" if low is not None and high is not None and r.get("score_kind") == "predicted" else "-",
    ]


def _confirmation_parts(confirmation: dict[str, Any]) -> list[Any]:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"confirmation: {confirmation['label']}")
    for col in ("structure", "theta", "trial", "width", "mean", "95% interval", "per seed"):
        table.add_column(col, justify="left" if col in ("structure", "theta", "per seed") else "right")
    for row in confirmation["structures"]:
        interval = f"{row['ci_low']:.4g} - {row['ci_high']:.4g}" if row.get("ci_low") is not None else "-"
        table.add_row(
            row["label"] + (f" ({row['structure']})" if row.get("structure") and row["role"] == "candidate" else ""),
            row["spec"],
            str(row["trial"]) if row.get("trial") is not None else "-",
            str(row.get("width") or "-"),
            _fmt(row.get("mean"), 5),
            interval,
            ", ".join(_fmt(v, 4) for v in row["losses"]) or (row.get("reason") or "-"),
        )
    lines = [_comparison_sentence(c) for c in confirmation.get("comparisons", [])]
    return [table, Text("\n".join(lines) if lines else "no paired comparison (the best did not finish every seed)")]


def _comparison_sentence(c: dict[str, Any]) -> str:
    from structsearch.confirmation import Comparison

    return Comparison.model_validate(c).sentence()


def _scoring(config: dict[str, Any]) -> str:
    """How the study trains its candidates, for the report's head line."""
    from structsearch.engine._scorers import study_slope_rule, study_target_flops

    width = config.get("width")
    target = study_target_flops(config)  # None unless the study is frontier-scored
    if target is None:
        return f"width {width}"
    # the ladder chooses the training widths; the search width only sizes the params and MACs columns
    rule = study_slope_rule(config)
    return f"frontier scoring at {target:.3g} FLOPs, {rule} slope (params and MACs at width {width})"


def _throughput(rows: list[dict[str, Any]]) -> str:
    """'; achieved 3.1 GFLOP/s (median of the best trials)', or '' when the trials did not record it."""
    rates = sorted(float(r["flops_per_second"]) for r in rows if r.get("flops_per_second"))
    return f"; achieved {rates[len(rates) // 2] / 1e9:.3g} GFLOP/s (median of the best trials)" if rates else ""


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def report(
    study: str,
    storage: str | None = None,
    *,
    top: int = 10,
    plots: bool = True,
    runs_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
) -> StudyReport:
    """Report on a stored study (the default ``runs/<study>/journal.log`` or ``storage``)."""
    from structsearch.engine._references import stored_references
    from structsearch.engine._storage import load_existing_study
    from structsearch.errors import StudyError

    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise StudyError(f"top: expected a positive integer, got {top!r}")
    loaded, location = load_existing_study(study, storage, runs_dir)
    config = dict(loaded.user_attrs.get("structsearch") or {})
    rows = trial_rows(loaded)
    counts = Counter(str(r.get("status") or r["state"].lower()) for r in rows)
    trained = [r for r in rows if r.get("status") == "evaluated" and r.get("loss") is not None]
    trained.sort(key=lambda r: (r["loss"], r["number"]))
    if len(loaded.directions) > 1:  # the study's own Pareto front of (loss, MACs), as Optuna stored it
        config["pareto_objective_front"] = sorted(t.number for t in loaded.best_trials)
    front_idx = pareto_front([(float(r.get("train_flops") or 0.0), float(r["loss"])) for r in trained])
    front = sorted(trained[i]["number"] for i in front_idx)
    correlations = {k: _spearman(trained, k) for k in ("omega", "psi", "nu")}
    references = stored_references(loaded)
    result = StudyReport(
        study=study,
        storage=location.description,
        config=config,
        counts=dict(counts),
        best=trained[:top],
        correlations=correlations,
        pareto=front,
        n_trials=len(rows),
        n_trained=len(trained),
        score_label=_study_score_label(trained, config),
        references=references,
        confirmation=loaded.user_attrs.get("confirmation"),
        failures=[
            {
                "number": r["number"],
                "paper": r.get("paper"),
                "status": r.get("status") or r["state"].lower(),
                "reason": r.get("reason"),
            }
            for r in rows
            if r.get("status") in ("failed", "diverged") or r["state"] == "FAIL"
        ],
    )
    if plots and trained:  # the report stands without its plots (a read-only folder, a full disk)
        directory = Path(out_dir) if out_dir is not None else location.run_dir
        try:
            directory.mkdir(parents=True, exist_ok=True)
            result.plots = _plot(trained, directory, study, config)
            frontier_png = plot_trial_frontiers(trained, references, directory / "frontiers.png", title=study)
            if frontier_png:
                result.plots["frontiers"] = frontier_png
        except OSError as err:
            result.plots_error = f"{directory}: cannot write the plots ({err.strerror or err}); see --no-plots"
    return result


def _study_score_label(trained: list[dict[str, Any]], config: dict[str, Any]) -> str:
    """What the study's scores are: the label its trials recorded (the frontier's target), else the budget's loss."""
    predicted = [r["score_label"] for r in trained if r.get("score_kind") == "predicted" and r.get("score_label")]
    if predicted:
        return predicted[0].split(" (frontier fit")[0] + " (frontier fit per candidate; see each trial's ladder)"
    if trained and trained[0].get("score_label"):
        return str(trained[0]["score_label"])
    budget = config.get("budget")
    return f"loss at {budget:.3g} FLOPs" if isinstance(budget, (int, float)) else "loss"


def _fit_line(fit: dict[str, Any], compute: Any) -> Any:
    """A trial's recorded fit at each of ``compute``, read as its score was (frontier.extrapolate)."""
    import math

    import numpy as np

    from structsearch.frontier import extrapolate
    from structsearch.scaling import PowerLawFit

    law = PowerLawFit.model_construct(a=fit["a"], b=fit["b"])  # what predict() reads; the rest is not recorded
    largest, factor = fit.get("largest", math.inf), fit.get("slope_factor", 1.0)
    return np.array([extrapolate(law, largest, float(c), factor) for c in compute])


def plot_trial_frontiers(
    trained: list[dict[str, Any]], references: dict[str, dict[str, Any]], path: Path, title: str, top: int = 8
) -> str | None:
    """One PNG: each trained candidate's ladder points and fitted frontier line, up to its target compute."""
    rows = [r for r in trained if r.get("ladder")][:top] + [r for r in references.values() if r.get("ladder")]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, r in enumerate(rows):
        color = f"C{i % 10}"
        pts = [(p["train_flops"], p["loss"]) for p in r["ladder"] if p.get("loss") is not None and p["train_flops"]]
        label = ("ref " if r.get("reference") else f"#{r.get('number')} ") + (r.get("name") or r.get("paper") or "")
        if pts:
            ax.scatter(*zip(*pts, strict=True), color=color, s=18)
        fit, target = r.get("fit"), r.get("target_flops")
        if fit and target and pts:
            c = np.geomspace(min(p[0] for p in pts), target, 40)
            ax.plot(c, _fit_line(fit, c), "--" if r.get("reference") else "-", color=color, lw=1, label=label)
            if r.get("prediction_low") is not None:
                centre = float(_fit_line(fit, np.array([target]))[0])
                ax.errorbar(
                    [target],
                    [centre],
                    yerr=[[centre - r["prediction_low"]], [r["prediction_high"] - centre]],
                    color=color,
                    capsize=3,
                    fmt="o",
                    ms=3,
                )
        else:
            ax.plot([], [], color=color, label=label + " (no fit)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("validation loss")
    ax.set_title(f"{title}: each candidate's rungs and frontier fit, extrapolated to the target", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _plot(trained: list[dict[str, Any]], directory: Path, study: str, config: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    loss = np.array([r["loss"] for r in trained], dtype=float)
    flops = np.array([r.get("train_flops") or np.nan for r in trained], dtype=float)
    macs = np.array([r.get("eval_macs") or r.get("macs") or np.nan for r in trained], dtype=float)
    budget = config.get("budget")
    title = f"{study}: {config.get('task')}" + (f" at {budget:.3g} FLOPs" if isinstance(budget, (int, float)) else "")
    paths = {}

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, x, label in ((axes[0], flops, "training FLOPs"), (axes[1], macs, "MACs per input vector (model)")):
        ok = np.isfinite(x)
        ax.scatter(x[ok], loss[ok], c="tab:blue", alpha=0.7, label="trained trials")
        idx = pareto_front([(float(a), float(b)) for a, b in zip(x[ok], loss[ok], strict=True)])
        fx, fy = x[ok][idx], loss[ok][idx]
        ax.step(fx, fy, where="post", color="tab:red", label="Pareto front")
        ax.scatter(fx, fy, c="tab:red", zorder=3)
        if np.isfinite(x[0]):  # the best trial (rows are sorted by loss)
            ax.annotate(
                "best: " + (trained[0].get("name") or trained[0].get("paper")),
                (x[0], trained[0]["loss"]),
                fontsize=7,
                xytext=(4, 6),
                textcoords="offset points",
            )
        if ok.any() and np.nanmax(x[ok]) / max(np.nanmin(x[ok]), 1e-12) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    paths["loss_vs_flops"] = str(directory / "loss_vs_flops.png")
    fig.savefig(paths["loss_vs_flops"], dpi=110)
    plt.close(fig)

    omega = np.array([r["omega"] for r in trained], dtype=float)
    psi = np.array([r["psi"] for r in trained], dtype=float)
    rng = np.random.default_rng(0)
    jitter = 0.012
    fig, ax = plt.subplots(figsize=(5.8, 4.6))
    sc = ax.scatter(
        omega + rng.uniform(-jitter, jitter, len(omega)),
        psi + rng.uniform(-jitter, jitter, len(psi)),
        c=loss,
        cmap="viridis_r",
        s=45,
        edgecolors="k",
        linewidths=0.3,
    )
    fig.colorbar(sc, ax=ax, label="loss (lower is better)")
    best = trained[0]
    ax.annotate(
        f"best: {best.get('name') or best.get('paper')}",
        (best["omega"], best["psi"]),
        fontsize=8,
        xytext=(6, -12),
        textcoords="offset points",
    )
    ax.set_xlim(-0.05, max(0.55, float(omega.max()) + 0.05))
    ax.set_ylim(min(0.45, float(psi.min()) - 0.05), 1.05)
    ax.set_xlabel("omega (parameter sharing)")
    ax.set_ylabel("psi (rank exponent)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    paths["omega_psi"] = str(directory / "omega_psi.png")
    fig.savefig(paths["omega_psi"], dpi=110)
    plt.close(fig)
    return paths
