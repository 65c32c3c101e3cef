"""Other ways to read a candidate's ladder, measured against the same compute-optimal ground truth.

The frontier score fits a power law loss ~ a C^-b through each candidate's own rungs and reads
it at the target. Read with the exponent as fitted, its ranking degrades with the lookahead
(Spearman about 0.75 at 10x, 0.6 at 33x). This script reads the *same* cached rungs (no
training) other ways, to tell whether a better reading, rather than more compute, would close
the gap:

- ``parameter growth`` (the default since this table): the fitted exponent scaled past the
  last rung by (1 + nu - omega) / (1 + nu), :func:`structsearch.frontier.parameter_growth`;
  two other scalings were tried beside it and are kept here for the record: ``1 - omega`` and
  the parameter growth times psi (rank growth as well);
- ``last rung``: the largest rung's measured loss (no extrapolation);
- ``shrunk slope``: each candidate's exponent pulled halfway to the study's mean exponent
  (the slope from three rungs is the noisy part of the fit);
- ``shared floor``: loss = E + a C^-b with one irreducible loss E for the whole study;
- ``pooled L(N, D)``: one Chinchilla-form law E + A (k N)^-alpha + B D^-beta fitted to every
  candidate's rungs at once, with one effective-parameter multiplier k per structure (dense's
  is 1); the frontier at the target is its minimum over widths, with each structure's
  parameters and FLOPs per step at every width (structural facts, read from the cache).

Each is scored per training seed (one search each); the table gives each seed's Spearman and
their average, for three (target, per-candidate budget) pairs of the ground truth.

    python benchmarks/frontier_alternatives.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _machine import cpu_name
from frontier_fidelity import cached_evaluate, truth
from frontier_truth import STRUCTURES, load_cache
from scipy.optimize import least_squares
from scipy.stats import spearmanr

import structsearch.evaluation as evaluation
from structsearch.frontier import extrapolate, frontier_score, parameter_growth
from structsearch.scaling import fit_power_law, pareto_frontier
from structsearch.spec import parse_spec
from structsearch.taxonomy import exponents

WIDTHS = [64, 96, 128, 192, 256, 384, 512, 768, 1024]
CASES = [(1e11, 3e9), (3e10, 1e9), (1e11, 1e10)]  # (target, per-candidate budget)
SEEDS = (0, 1, 2)


def ladders(cache: dict, task: str, target: float, budget: float) -> dict[str, dict]:
    """Each structure's truth and, per seed, its default ladder's rungs (train FLOPs, loss, width, params)."""
    gt = truth(cache, task, target, WIDTHS, list(SEEDS))
    papers, out = set(), {}
    for spec in STRUCTURES:
        paper = parse_spec(spec).paper
        if spec not in gt or paper in papers:  # monarch is BTT's theta here: count each structure once
            continue
        papers.add(paper)
        runs = []
        for seed in SEEDS:
            score = frontier_score(spec, task, budget, seed=seed, target_flops=target, slope_rule="fitted")
            grown = frontier_score(spec, task, budget, seed=seed, target_flops=target, slope_rule="parameter-growth")
            rungs = [(g.train_flops, g.final_loss, g.width, g.params) for g in score.rungs if g.status == "ok"]
            runs.append({"score": score.score, "grown": grown.score, "rungs": rungs})
        out[spec] = {"truth": gt[spec]["loss"], "runs": runs}
    return out


def sizes_by_width(cache: dict) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per structure: widths, parameters and training FLOPs per step, from any cached run."""
    table: dict[str, dict[int, tuple[int, float]]] = {}
    for row in cache.values():
        if row.get("steps") and row.get("params"):
            table.setdefault(row["spec"], {})[row["width"]] = (row["params"], row["train_flops"] / row["steps"])
    return {
        spec: (np.array(sorted(t)), np.array([t[w][0] for w in sorted(t)]), np.array([t[w][1] for w in sorted(t)]))
        for spec, t in table.items()
    }


def _log_xy(run: dict) -> tuple[np.ndarray, np.ndarray]:
    return np.log([r[0] for r in run["rungs"]]), np.log([r[1] for r in run["rungs"]])


def scaled_slope(runs: list[dict], target: float, factors: list[float]) -> list[float]:
    """The fitted exponent times each structure's factor past its last rung (frontier.extrapolate)."""
    out = []
    for run, factor in zip(runs, factors, strict=True):
        frontier = pareto_frontier([(c, v) for c, v, *_ in run["rungs"]])
        if len(frontier) < 2:
            out.append(frontier[-1][1])
            continue
        fit = fit_power_law(*zip(*frontier, strict=True))
        out.append(extrapolate(fit, frontier[-1][0], target, factor))
    return out


def shrunk_slope(runs: list[dict], target: float, keep: float = 0.5) -> list[float]:
    fits = [np.polyfit(*_log_xy(r), 1) for r in runs]
    mean_slope = np.mean([slope for slope, _ in fits])
    out = []
    for run, (slope, _) in zip(runs, fits, strict=True):
        x, y = _log_xy(run)
        b = keep * slope + (1 - keep) * mean_slope
        out.append(float(np.mean(y - b * x) + b * np.log(target)))
    return out


def shared_floor(runs: list[dict], target: float) -> list[float]:
    xy = [_log_xy(r) for r in runs]

    def residuals(th: np.ndarray) -> np.ndarray:
        floor = np.exp(th[0])
        return np.concatenate(
            [np.log(floor + np.exp(th[1 + 2 * i] - th[2 + 2 * i] * x)) - y for i, (x, y) in enumerate(xy)]
        )

    start = [np.log(0.1)] + [v for x, y in xy for v in (y.mean() + 0.2 * x.mean(), 0.2)]
    th = least_squares(residuals, start).x
    floor, log_c = np.exp(th[0]), np.log(target)
    return [float(np.log(floor + np.exp(th[1 + 2 * i] - th[2 + 2 * i] * log_c))) for i in range(len(xy))]


def pooled_law(runs: list[dict], target: float, sizes: list[tuple]) -> list[float]:
    """Study-pooled E + A (k N)^-alpha + B D^-beta (D: training steps), one log k per structure."""
    points = []
    for i, (run, (widths, _, flops)) in enumerate(zip(runs, sizes, strict=True)):
        for train_flops, loss, width, params in run["rungs"]:
            per_step = np.exp(np.interp(np.log(width), np.log(widths), np.log(flops)))
            points.append((i, np.log(params), np.log(train_flops / per_step), np.log(loss)))
    p = np.array(points)

    def law(th: np.ndarray, index: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
        log_k = np.concatenate([[0.0], th[5:]])[index.astype(int)]
        return np.log(np.exp(th[0]) + np.exp(th[1] - th[2] * (log_n + log_k)) + np.exp(th[3] - th[4] * log_d))

    n = len(runs)
    start = np.array([np.log(0.05), 1.0, 0.3, 1.0, 0.3] + [0.0] * (n - 1))
    bounds = ([-10, -10, 0.01, -10, 0.01] + [-3] * (n - 1), [0, 20, 2, 20, 2] + [3] * (n - 1))
    th = least_squares(lambda t: law(t, p[:, 0], p[:, 1], p[:, 2]) - p[:, 3], start, bounds=bounds).x
    out = []
    for i, (widths, params, flops) in enumerate(sizes):
        grid = np.linspace(np.log(widths[0]), np.log(widths[-1]), 60)
        log_n = np.interp(grid, np.log(widths), np.log(params))
        log_d = np.log(target) - np.interp(grid, np.log(widths), np.log(flops))
        out.append(float(law(th, np.full(len(grid), i), log_n, log_d).min()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="mlp-regression")
    parser.add_argument("--cache", default="benchmarks/results/frontier_truth.jsonl")
    parser.add_argument("--out", default="benchmarks/results/frontier_alternatives")
    args = parser.parse_args()
    start = time.perf_counter()
    cache = load_cache(Path(args.cache))
    evaluation.evaluate = cached_evaluate(cache, Path(args.cache), args.task)  # reruns only fit and rank
    all_sizes = sizes_by_width(cache)
    results: dict[str, dict[str, list[float]]] = {}
    for target, budget in CASES:
        data = ladders(cache, args.task, target, budget)
        specs = list(data)
        truths = [data[s]["truth"] for s in specs]
        sizes = [all_sizes[parse_spec(s).paper] for s in specs]
        case = f"{target:.0e} / {budget:.0e} ({target / budget:.0f}x)"
        for seed in range(len(SEEDS)):
            runs = [data[s]["runs"][seed] for s in specs]
            scores = {
                "own power law (exponent as fitted)": [r["score"] for r in runs],
                "parameter growth (the default)": [r["grown"] for r in runs],
                "tried: x (1 - omega)": scaled_slope(
                    runs, target, [1 - float(exponents(parse_spec(x)).omega) for x in specs]
                ),
                "tried: parameter growth x psi": scaled_slope(
                    runs,
                    target,
                    [parameter_growth(parse_spec(x)) * float(exponents(parse_spec(x)).psi) for x in specs],
                ),
                "last rung": [r["rungs"][-1][1] for r in runs],
                "shrunk slope (half-way)": shrunk_slope(runs, target),
                "shared floor E": shared_floor(runs, target),
                "pooled L(N, D)": pooled_law(runs, target, sizes),
            }
            for name, values in scores.items():
                rho = float(spearmanr(values, truths)[0])
                results.setdefault(name, {}).setdefault(case, []).append(rho)
    doc = {"task": args.task, "cases": [list(c) for c in CASES], "spearman": results}
    doc["seconds"] = time.perf_counter() - start
    Path(args.out).with_suffix(".json").write_text(json.dumps(doc, indent=1))
    cases = list(next(iter(results.values())))
    lines = [
        f"# Other readings of the same ladders ({args.task})",
        "",
        f"Spearman against the ground truth of frontier_fidelity.md (mean of 3 seeds at the optimum), per training "
        f"seed {', '.join(map(str, SEEDS))} and their average; columns: target / per-candidate budget. No training: "
        f"the default ladder's cached rungs. Machine: {cpu_name()}.",
        "",
        "| reading | " + " | ".join(cases) + " |",
        "|---|" + "---:|" * len(cases),
    ]
    for name, per_case in results.items():
        cells = [" ".join(f"{r:.2f}" for r in per_case[c]) + f" (avg **{np.mean(per_case[c]):.2f}**)" for c in cases]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Command: `python benchmarks/frontier_alternatives.py`", ""]
    Path(args.out).with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
