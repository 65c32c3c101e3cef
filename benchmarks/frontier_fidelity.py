"""Fidelity of the search's scores against the compute-optimal ground truth.

Ground truth (benchmarks/frontier_truth.py): each structure's frontier loss at ``--target``
FLOPs, the minimum over widths of a run that spends the whole target. Each scorer below
spends ``--budget`` FLOPs per structure (``target / budget`` >= 30); the table gives its
Spearman rank correlation with the ground truth, side by side:

- ``frontier:<name>``: :func:`structsearch.frontier.frontier_score` with the ladders of
  ``LADDERS`` (the search's default is ``iso-flop``), predicting the loss at the target with
  the default slope rule (the fitted exponent scaled by the structure's parameter growth past
  the last rung); ``frontier:<name>/fitted slope`` reads the same rungs with the exponent as
  fitted (the rule before);
- ``proxy@W``: today's fixed-width two-run proxy (:func:`structsearch.evaluation.proxy`) at width W;
- ``final@W``: one run's final loss at width W.

Trainings are cached in the ground truth's JSONL (same key), so reruns only fit and rank.
``--structures held-out`` scores the structures added after the slope rule was chosen.

    python benchmarks/frontier_fidelity.py --target 1e11 --budget 3e9
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from _machine import cpu_name
from frontier_truth import STRUCTURE_SETS, STRUCTURES, cache_key, load_cache, result_row
from scipy.stats import kendalltau, spearmanr

import structsearch.evaluation as evaluation
from structsearch.evaluation import extrapolate_loss
from structsearch.frontier import DEFAULT_LADDER, DEFAULT_SLOPE_RULE, SLOPE_RULES, Ladder, frontier_score
from structsearch.spec import parse_spec

LADDERS = {
    "iso-flop": Ladder(rule="iso-flop", fractions=(0.1, 0.3, 0.6), width_exponent=0.3),
    "fixed": Ladder(rule="fixed", fractions=(0.1, 0.3, 0.6), width_exponent=0.3),
    "iso-flop-2": Ladder(rule="iso-flop", fractions=(0.25, 0.75), width_exponent=0.3),
    "iso-flop-wide": Ladder(rule="iso-flop", fractions=(0.1, 0.3, 0.6), width_exponent=0.15),
    "iso-flop-2-narrow": Ladder(rule="iso-flop", fractions=(0.25, 0.75), width_exponent=0.45),
    "iso-flop-3-narrow": Ladder(rule="iso-flop", fractions=(0.2, 0.3, 0.5), width_exponent=0.45),
}
DEFAULT_OUT = "benchmarks/results/frontier_fidelity"
# the ladder structsearch.frontier.DEFAULT_LADDER is, chosen by this benchmark
DEFAULT_LADDER_NAME = next(k for k, v in LADDERS.items() if v == DEFAULT_LADDER)
_real_evaluate = evaluation.evaluate


def cached_evaluate(cache: dict, path: Path, task: str):
    """evaluation.evaluate through the JSONL cache (a cached run returns the fields scorers read)."""

    def run(spec, task_obj=None, budget=None, seed=0, width=None, **kw):
        spec = parse_spec(spec)
        key = cache_key(task, spec.paper, int(width), float(budget), seed)
        if key not in cache:
            kw.update(device="cpu", threads=1)
            r = _real_evaluate(spec, task_obj or task, budget=budget, seed=seed, width=width, **kw)
            cache[key] = {
                "key": key,
                "task": task,
                "spec": spec.paper,
                "name": spec.name,
                "width": r.width,
                "budget": float(budget),
                "seed": seed,
                **result_row(r),
            }
            with path.open("a") as f:
                f.write(json.dumps(cache[key]) + "\n")
        row = cache[key]
        curve = [SimpleNamespace(train_flops=c, val_loss=v) for c, v in row.get("curve", [])]
        return SimpleNamespace(**{**row, "curve": curve, "macs": row.get("macs", 0), "budget": row["budget"]})

    return run


def truth(
    cache: dict,
    task: str,
    target: float,
    widths: list[int],
    seeds: list[int] = (0,),
    structures: list[str] = STRUCTURES,
) -> dict[str, dict]:
    """Each structure's frontier loss at ``target``: the minimum over ``widths`` of its mean over ``seeds``.

    A width counts where every seed trained it; a structure needs every width run with seed 0
    (frontier_truth.py runs extra seeds near each optimum only).
    """
    out = {}
    for spec in structures:
        paper = parse_spec(spec).paper
        if any(cache_key(task, paper, w, target, seeds[0]) not in cache for w in widths):
            continue
        losses, spread = {}, {}
        for w in widths:
            rows = [cache.get(cache_key(task, paper, w, target, s)) for s in seeds]
            values = [r["final_loss"] for r in rows if r is not None and r["final_loss"] is not None]
            if len(values) == len(seeds):
                losses[w] = float(np.mean(values))
                spread[w] = values
        if losses:
            best = min(losses, key=losses.get)
            out[spec] = {"loss": losses[best], "width": best, "losses": losses, "seed_losses": spread[best]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="mlp-regression")
    parser.add_argument("--target", type=float, default=1e11)
    parser.add_argument("--budget", type=float, default=3e9, help="per-structure scoring budget")
    parser.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[64, 96, 128, 192, 256, 384, 512, 768, 1024],
        help="ground-truth widths",
    )
    parser.add_argument("--proxy-widths", type=int, nargs="+", default=[128])
    parser.add_argument("--scorers", nargs="+", default=None, help="subset of scorer names")
    parser.add_argument("--score-seeds", type=int, nargs="+", default=[0], help="training seeds of each frontier score")
    parser.add_argument(
        "--lookahead", type=float, nargs="*", default=[], help="more per-structure budgets for the default ladder"
    )
    parser.add_argument("--truth-seeds", type=int, nargs="+", default=[0], help="ground truth: mean over these seeds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--structures", choices=list(STRUCTURE_SETS), default="study", help="which structures (frontier_truth.py)"
    )
    parser.add_argument("--cache", default="benchmarks/results/frontier_truth.jsonl")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(args.cache)
    cache = load_cache(path)
    evaluation.evaluate = cached_evaluate(cache, path, args.task)  # frontier_score and proxy train through it
    structures = STRUCTURE_SETS[args.structures]
    gt = truth(cache, args.task, args.target, args.widths, args.truth_seeds, structures)
    specs = [s for s in structures if s in gt]
    papers = [parse_spec(s).paper for s in specs]  # monarch is BTT's theta here: count each structure once
    specs = [s for i, s in enumerate(specs) if papers[i] not in papers[:i]]
    scorers = {f"frontier:{k}": k for k in LADDERS}
    scorers.update({f"proxy@{w}": w for w in args.proxy_widths})
    scorers.update({f"final@{w}": w for w in args.proxy_widths})
    if args.scorers:
        scorers = {k: v for k, v in scorers.items() if k in args.scorers}
    start = time.perf_counter()
    table: dict[str, dict[str, dict]] = {name: {} for name in scorers}
    for name, arg in scorers.items():
        for spec in specs:
            if name.startswith("frontier:"):
                runs = [
                    frontier_score(
                        spec, args.task, args.budget, seed=seed, target_flops=args.target, ladder=LADDERS[arg]
                    )
                    for seed in args.score_seeds
                ]
                r = runs[0]
                row = {
                    "score": r.score,
                    "kind": r.score_kind,
                    "prediction": r.prediction,
                    "band": [r.prediction_low, r.prediction_high],
                    "warnings": r.warnings,
                    "widths": [g.width for g in r.rungs],
                    "rungs": [[g.train_flops, g.final_loss] for g in r.rungs],
                    "flops": r.train_flops,
                    "seconds": r.wall_seconds,
                }
            elif name.startswith("proxy@"):  # evaluation.proxy's two runs (1/4, 3/4 of the budget), extrapolated
                runs = [evaluation.evaluate(spec, args.task, budget=f * args.budget, width=arg) for f in (0.25, 0.75)]
                ok = all(r.final_loss is not None for r in runs)
                pts = [(r.train_flops, r.final_loss) for r in runs]
                score = extrapolate_loss(pts[0], pts[1], args.target) if ok else None
                row = {
                    "score": score,
                    "flops": sum(r.train_flops for r in runs),
                    "seconds": sum(r.wall_seconds for r in runs),
                }
            else:
                r = evaluation.evaluate(spec, args.task, budget=args.budget, width=arg)
                row = {"score": r.final_loss, "flops": r.train_flops, "seconds": r.wall_seconds}
            table[name][spec] = row
            if name.startswith("frontier:"):  # the same rungs read other ways, for comparison
                fitted = frontier_score(
                    spec,
                    args.task,
                    args.budget,
                    seed=args.score_seeds[0],
                    target_flops=args.target,
                    ladder=LADDERS[arg],
                    slope_rule="fitted",
                )
                table.setdefault(f"{name}/fitted slope", {})[spec] = {
                    **row,
                    "score": fitted.score,
                    "warnings": fitted.warnings,
                }
                last = r.rungs[-1].final_loss if r.rungs and r.rungs[-1].status == "ok" else None
                table.setdefault(f"{name}/last-rung", {})[spec] = {**row, "score": last, "warnings": []}
                near = r.fit.predict(3 * args.budget) if r.fit is not None else None
                table.setdefault(f"{name}/fit@3x", {})[spec] = {**row, "score": near, "warnings": []}
                if len(runs) > 1:  # the mean score over seeds: what a seed-batched confirmation would rank by
                    scores = [x.score for x in runs]
                    table.setdefault(f"{name}/mean of {len(runs)} seeds", {})[spec] = {
                        **row,
                        "score": float(np.mean(scores)) if None not in scores else None,
                        "seed_scores": scores,
                        "flops": sum(x.train_flops for x in runs),
                        "seconds": sum(x.wall_seconds for x in runs),
                        "warnings": [w for x in runs for w in x.warnings],
                    }
            print(f"{name:22s} {spec:32s} score={row['score']}", flush=True)
    truth_scores = [gt[s]["loss"] for s in specs]
    summary = {}
    for name, rows in table.items():
        scores = [rows[s]["score"] if rows[s]["score"] is not None else math.inf for s in specs]
        rho, p = spearmanr(scores, truth_scores)
        tau, _ = kendalltau(scores, truth_scores)
        by_score = [specs[i] for i in np.argsort(scores, kind="stable")]
        by_truth = [specs[i] for i in np.argsort(truth_scores, kind="stable")]
        summary[name] = {
            "best_rank": by_score.index(by_truth[0]) + 1,  # where the truly best structure lands
            "top3": len(set(by_score[:3]) & set(by_truth[:3])),  # what a search's top 3 gets right
            "spearman": float(rho),
            "p": float(p),
            "kendall": float(tau),
            "flops_per_structure": float(np.mean([rows[s]["flops"] for s in specs])),
            "seconds_per_structure": float(np.mean([rows[s]["seconds"] for s in specs])),
            "fallbacks": sum(bool(rows[s].get("warnings")) for s in specs),
        }
    lookahead = {
        f"{b:.3g} {rule}": lookahead_row(specs, gt, args, b, rule)
        for b in sorted({args.budget, *args.lookahead}, reverse=True)
        for rule in SLOPE_RULES
    }
    doc = {
        "task": args.task,
        "target": args.target,
        "budget": args.budget,
        "widths": args.widths,
        "truth_seeds": args.truth_seeds,
        "score_seeds": args.score_seeds,
        "structures": args.structures,
        "truth_ceiling": truth_ceiling(gt, specs),
        "lookahead": lookahead,
        "truth": gt,
        "scores": table,
        "summary": summary,
        "seconds": time.perf_counter() - start,
    }
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    write_markdown(doc, specs, out.with_suffix(".md"), args)
    plot(doc, specs, out.with_suffix(".png"))
    for name, v in summary.items():
        print(f"{name:22s} Spearman {v['spearman']:.3f} (p={v['p']:.2g})")


def lookahead_row(specs: list[str], gt: dict, args: argparse.Namespace, budget: float, rule: str) -> dict:
    """The default ladder's Spearman when each candidate spends ``budget`` (target / budget ahead)."""
    per_seed = {
        seed: [
            frontier_score(s, args.task, budget, seed=seed, target_flops=args.target, slope_rule=rule).score
            for s in specs
        ]
        for seed in args.score_seeds
    }
    truth_scores = [gt[s]["loss"] for s in specs]
    finite = {k: [math.inf if v is None else v for v in vs] for k, vs in per_seed.items()}
    row = {
        "budget": budget,
        "slope_rule": rule,
        "ratio": args.target / budget,
        "spearman_per_seed": {str(k): float(spearmanr(v, truth_scores)[0]) for k, v in finite.items()},
    }
    if len(finite) > 1:
        mean = np.mean(list(finite.values()), axis=0)
        first, second = list(finite.values())[:2]
        row["spearman_of_mean"] = float(spearmanr(mean, truth_scores)[0])
        row["seed_to_seed"] = float(spearmanr(first, second)[0])  # the score's own rank stability
    return row


def truth_ceiling(gt: dict, specs: list[str], draws: int = 4000) -> dict | None:
    """How well two ground truths drawn with the measured seed noise agree: the best Spearman any score can expect."""
    spreads = [np.std(gt[s]["seed_losses"], ddof=1) / gt[s]["loss"] for s in specs if len(gt[s]["seed_losses"]) > 1]
    if not spreads:
        return None
    noise = float(np.sqrt(np.mean(np.square(spreads))))
    of_mean = noise / math.sqrt(min(len(gt[s]["seed_losses"]) for s in specs))  # the truth is a mean over seeds
    rng = np.random.default_rng(0)
    t = np.array([gt[s]["loss"] for s in specs])
    rhos = [spearmanr(t * (1 + of_mean * rng.standard_normal(len(t))), t)[0] for _ in range(draws)]
    return {
        "seed_noise": noise,
        "truth_noise": of_mean,
        "spearman_mean": float(np.mean(rhos)),
        "spearman_p5": float(np.percentile(rhos, 5)),
    }


def write_markdown(doc: dict, specs: list[str], path: Path, args: argparse.Namespace) -> None:

    names = list(doc["summary"])
    lines = [
        f"# Score fidelity against the compute-optimal ground truth ({doc['task']})",
        "",
        f"Ground truth: each structure's frontier loss at {doc['target']:.3g} training FLOPs, the minimum over widths "
        f"{', '.join(map(str, doc['widths']))} of one run per width spending the whole target (seed 0; the mean "
        f"over seeds {', '.join(map(str, doc['truth_seeds']))} at the widths where all of them ran, which is the "
        "optimum and its two neighbours). "
        f"Every scorer spends about {doc['budget']:.3g} FLOPs per structure "
        f"(the target is {doc['target'] / doc['budget']:.0f}x that). "
        f"Frontier scores use training seed {doc['score_seeds'][0]}. `train s` comes with the cached runs, some "
        "made on a machine loaded 5-10x by other jobs in an earlier session: compare it within a row only. "
        f"Machine: {cpu_name()}, 2 cores, {args.threads} thread(s) per run.",
        "",
        "`best at`: the score's rank of the truly best structure; `top 3`: how many of the truth's top 3 are "
        "the score's top 3.",
        "",
        "| scorer | Spearman | p | Kendall | best at | top 3 | FLOPs / structure | train s / structure "
        "| fell back to measured |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        v = doc["summary"][name]
        lines.append(
            f"| {name} | **{v['spearman']:.3f}** | {v['p']:.2g} | {v['kendall']:.3f} | {v['best_rank']} "
            f"| {v['top3']}/3 | {v['flops_per_structure']:.3g} "
            f"| {v['seconds_per_structure']:.1f} | {v['fallbacks']} |"
        )
    lines += [
        "",
        "| structure | truth | best width | " + " | ".join(names) + " |",
        "|---|---:|---:|" + "---:|" * len(names),
    ]
    for s in specs:
        t = doc["truth"][s]
        cells = []
        for n in names:
            v = doc["scores"][n][s]["score"]
            cells.append("-" if v is None else f"{v:.4f}")
        lines.append(f"| {s} | {t['loss']:.4f} | {t['width']} | " + " | ".join(cells) + " |")
    lines += _lookahead_lines(doc)
    seeds = " ".join(map(str, doc["score_seeds"]))
    truth_seeds = " ".join(map(str, doc["truth_seeds"]))
    more = " ".join(sorted({f"{r['budget']:g}" for r in doc["lookahead"].values() if r["budget"] != doc["budget"]}))
    lines += [
        "",
        f"Command: `python benchmarks/frontier_fidelity.py --target {doc['target']:g} --budget {doc['budget']:g} "
        f"--score-seeds {seeds} --truth-seeds {truth_seeds}"
        + (f" --lookahead {more}" if more else "")
        + (f" --structures {doc['structures']}" if doc["structures"] != "study" else "")
        + (f" --out {args.out}" if args.out != DEFAULT_OUT else "")
        + "`",
        "",
        f"![fidelity]({path.with_suffix('.png').name})",
    ]
    path.write_text("\n".join(lines) + "\n")


def _lookahead_lines(doc: dict) -> list[str]:
    """How far ahead the default ladder ranks well: its Spearman per training seed at each budget."""
    rows = doc["lookahead"]
    if not rows:
        return []
    seeds = list(next(iter(rows.values()))["spearman_per_seed"])
    lines = [
        "",
        "## How far ahead the score can see",
        "",
        f"The default ladder with each candidate spending less or more of the target {doc['target']:.3g} "
        "(same ground truth). `seed k`: the Spearman of one search's scores (training seed k); "
        "`average`: of those Spearmans (what one search can expect); `mean`: the Spearman of the scores "
        "averaged over those seeds; `seed vs seed`: the Spearman between two seeds' scores, the score's own "
        "rank stability. `slope rule`: how the fitted exponent is carried past the last rung "
        "(structsearch.frontier).",
        "",
        "| budget per candidate | target / budget | slope rule | "
        + " | ".join(f"seed {k}" for k in seeds)
        + " | average | mean | seed vs seed |",
        "|---:|---:|---|" + "---:|" * (len(seeds) + 3),
    ]
    for row in rows.values():
        per = " | ".join(f"{row['spearman_per_seed'][k]:.3f}" for k in seeds)
        average = f"**{np.mean(list(row['spearman_per_seed'].values())):.3f}**"
        mean = f"{row['spearman_of_mean']:.3f}" if "spearman_of_mean" in row else "-"
        stab = f"{row['seed_to_seed']:.3f}" if "seed_to_seed" in row else "-"
        rule = row["slope_rule"] + (" (default)" if row["slope_rule"] == DEFAULT_SLOPE_RULE else "")
        lines.append(f"| {row['budget']:.3g} | {row['ratio']:.1f} | {rule} | {per} | {average} | {mean} | {stab} |")
    ceiling = doc.get("truth_ceiling")
    if ceiling:
        lines += [
            "",
            f"Ceiling: one seed's truth varies by {ceiling['seed_noise']:.2%} (relative sd at the optimum), the "
            f"{len(doc['truth_seeds'])}-seed mean by {ceiling['truth_noise']:.2%}; a score that knew the exact "
            f"frontier losses would reach a Spearman of {ceiling['spearman_mean']:.3f} against this truth "
            f"(5th percentile {ceiling['spearman_p5']:.3f}).",
        ]
    return lines


def plot(doc: dict, specs: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["summary"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False)
    truth_scores = [doc["truth"][s]["loss"] for s in specs]
    for ax, name in zip(axes[0], names, strict=True):
        scores = [doc["scores"][name][s]["score"] or np.nan for s in specs]
        ax.scatter(scores, truth_scores, s=14)
        for x, y, s in zip(scores, truth_scores, specs, strict=True):
            ax.annotate(s.split("|")[0] if s.startswith("(") else s, (x, y), fontsize=5)
        ax.set_title(f"{name}\nSpearman {doc['summary'][name]['spearman']:.2f}", fontsize=8)
        ax.set_xlabel("score", fontsize=7)
        ax.set_ylabel(f"truth: frontier loss at {doc['target']:.2g}", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
