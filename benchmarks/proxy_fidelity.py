"""Proxy fidelity: does a task's default proxy score rank structures like 10x the budget?

For each structure (known structures of taxonomy.md plus seeded random canonical points) it
trains once at the task's default proxy budget and once at ``--multiplier`` (10) times that
budget, same width and seed, and reports the Spearman rank correlation of the final
validation losses (diverged or failed trials rank last). Trials are cached in a JSONL file,
so an interrupted run resumes.

    python benchmarks/proxy_fidelity.py                 # writes benchmarks/results/proxy_fidelity.{md,json}
    python benchmarks/proxy_fidelity.py --random 4 --multiplier 10 --threads 1
    python benchmarks/proxy_fidelity.py --task char-lm --out benchmarks/results/proxy_fidelity_char_lm
"""

from __future__ import annotations

import argparse
import json
import math
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from structsearch.cli.evaluate_cmd import parse_options
from structsearch.errors import SizeError
from structsearch.evaluation import evaluate, extrapolate_loss
from structsearch.sizes import class_sizes
from structsearch.spec import Spec, parse_spec
from structsearch.tasks import get_task

KNOWN = [
    "dense",
    "low-rank:1/2",
    "low-rank:3/4",
    "kronecker",
    "sum-kronecker:1/4",
    "btt",
    "btt:1/4",
    "tt",
    "(1/3|0|2/3|0|2/3|1/3|0)",  # full-rank BTT variant
    "(2/3|0|1/3|0|2/3|1/3|0)",  # low-rank BTT
    "(1/3|2/3|0|1/3|2/3|0|0)",  # Kronecker variant
]


def random_canonical(n: int, width: int, seed: int = 0) -> list[Spec]:
    """n random canonical thetas on a grid of twelfths that fit ``width`` within the padding limit."""
    rng = np.random.default_rng(seed)
    out: list[Spec] = []
    while len(out) < n:
        a, b = rng.integers(0, 13), None
        b = rng.integers(0, 13 - a)
        d = rng.integers(0, 13)
        e = rng.integers(0, 13 - d)
        t = [a, b, 12 - a - b, d, e, 12 - d - e]
        if min(t[0], t[4]) < min(t[1], t[3]):  # redundant: use the relabelled equivalent
            t[0], t[1], t[3], t[4] = t[1], t[0], t[4], t[3]
        r = rng.integers(0, min(t[0], t[4]) + 1)  # non-degenerate: t_rho <= min(t_alpha, t_epsilon)
        spec = Spec.from_theta([float(Fraction(int(v), 12)) for v in [*t, r]])
        if spec.name == "dense" or spec in out:
            continue
        try:
            class_sizes(spec, width, width)
        except SizeError:
            continue
        out.append(spec)
    return out


def trial(
    cache: dict,
    path: Path,
    spec: Spec,
    budget: float,
    width: int | str,
    seed: int,
    options: dict | None = None,
    task: str = "mlp-regression",
) -> dict:
    key = f"{spec.paper}|{budget:.6g}|{width}|{seed}" + (f"|{json.dumps(options, sort_keys=True)}" if options else "")
    if task != "mlp-regression":  # the committed mlp-regression caches predate the task field
        key = f"{task}|{key}"
    if key not in cache:
        r = evaluate(spec, task, budget=budget, width=width, seed=seed, device="cpu", task_options=options or {})
        cache[key] = {
            "key": key,
            "spec": spec.paper,
            "name": spec.name,
            "budget": budget,
            "width": r.width,
            "width_rule": width if isinstance(width, str) else "explicit",
            "seed": seed,
            "status": r.status,
            "final_loss": r.final_loss,
            "steps": r.steps,
            "train_flops": r.train_flops,
            "wall_seconds": r.wall_seconds,
            "params": r.params,
            "curve": [[p.train_flops, p.val_loss] for p in r.curve],
        }
        with path.open("a") as f:
            f.write(json.dumps(cache[key]) + "\n")
        print(
            f"{spec.name or spec.paper:26s} C={budget:.2g} w={width} seed={seed}: {r.status} "
            f"loss={r.final_loss} steps={r.steps} wall={r.wall_seconds:.1f}s",
            flush=True,
        )
    return cache[key]


def label(row: dict) -> str:
    return row["name"] or ("random canonical" if row["kind"] == "random" else "paper grid point")


def extrapolated(rows: list[dict], horizon_budget: float) -> float:
    """Mean over seeds of the two-run power-law prediction at the horizon (evaluate.extrapolate_loss)."""
    preds = []
    for small, large in zip(rows[::2], rows[1::2], strict=True):
        if small["final_loss"] is None or large["final_loss"] is None:
            return math.inf
        preds.append(
            extrapolate_loss(
                (small["train_flops"], small["final_loss"]), (large["train_flops"], large["final_loss"]), horizon_budget
            )
        )
    return float(np.mean(preds))


def score(rows: list[dict]) -> float:
    losses = [row["final_loss"] for row in rows]
    return float(np.mean(losses)) if all(v is not None for v in losses) else math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=None, help="proxy budget (default: the task's)")
    parser.add_argument("--width", default=None, help="an integer, 'matched' or 'fixed' (default: the task's rule)")
    parser.add_argument("--multiplier", type=float, default=10.0)
    parser.add_argument(
        "--proxy",
        choices=["final", "extrapolate"],
        default="extrapolate",
        help="final: the loss of one run at the budget; extrapolate: two runs (split, 1 - split) of the "
        "budget and their power law's prediction at multiplier x budget (structsearch.evaluation.proxy)",
    )
    parser.add_argument("--split", type=float, default=0.25, help="budget share of the small run (extrapolate)")
    parser.add_argument("--random", type=int, default=2, help="random canonical points besides the known ones")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--task", default="mlp-regression", help="a registered task or module:function")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE", help="task option")
    parser.add_argument("--out", default="benchmarks/results/proxy_fidelity")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = parse_options(args.option)
    task = get_task(args.task, **options)
    budget = args.budget or task.budget
    width = args.width or task.width_rule
    width = int(width) if str(width).isdigit() else width
    if width == "fixed":  # the same trainings as an explicit default width (and the same cache keys)
        width = task.default_width
    known = [parse_spec(s) for s in KNOWN]
    specs = known + random_canonical(args.random, task.default_width)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache_path = out.with_suffix(".jsonl")
    cache = {}
    if cache_path.exists():
        cache = {row["key"]: row for row in map(json.loads, cache_path.read_text().splitlines()) if row}
    start = time.perf_counter()
    table = []
    for spec in specs:
        if args.proxy == "final":
            proxy = [trial(cache, cache_path, spec, budget, width, s, options, args.task) for s in args.seeds]
        else:  # two runs that together spend the budget (structsearch.evaluation.proxy)
            proxy = [
                trial(cache, cache_path, spec, part * budget, width, s, options, args.task)
                for s in args.seeds
                for part in (args.split, 1 - args.split)
            ]
        kind = "known" if spec in known else "random"
        table.append({"spec": spec.paper, "name": spec.name, "kind": kind, "proxy": proxy})
    for row, spec in zip(table, specs, strict=True):
        row["reference"] = [
            trial(cache, cache_path, spec, args.multiplier * budget, width, s, options, args.task) for s in args.seeds
        ]
    if args.proxy == "final":
        proxy_scores = [score(row["proxy"]) for row in table]
    else:
        proxy_scores = [extrapolated(row["proxy"], args.multiplier * budget) for row in table]
    ref_scores = [score(row["reference"]) for row in table]
    rho, p_value = spearmanr(proxy_scores, ref_scores)
    tau, _ = kendalltau(proxy_scores, ref_scores)
    proxy_rank = np.argsort(np.argsort(proxy_scores)) + 1
    ref_rank = np.argsort(np.argsort(ref_scores)) + 1
    summary = {
        "task": args.task,
        "task_settings": task.describe(),
        "proxy_budget": budget,
        "proxy_rule": args.proxy,
        "split": args.split,
        "reference_budget": args.multiplier * budget,
        "width": width,
        "seeds": args.seeds,
        "threads": args.threads,
        "spearman": float(rho),
        "spearman_p": float(p_value),
        "kendall": float(tau),
        "max_proxy_wall_seconds": max(sum(t["wall_seconds"] for t in row["proxy"]) / len(args.seeds) for row in table),
        "seconds": time.perf_counter() - start,
        "rows": [
            {**row, "proxy_score": ps, "reference_score": rs, "proxy_rank": int(pr), "reference_rank": int(rr)}
            for row, ps, rs, pr, rr in zip(table, proxy_scores, ref_scores, proxy_rank, ref_rank, strict=True)
        ],
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    lines = [
        f"# Proxy fidelity on {args.task}",
        "",
        f"Proxy ({args.proxy}{f', split {args.split:g}' if args.proxy == 'extrapolate' else ''}): "
        f"{budget:.3g} training FLOPs in all, width rule {width!r} (dense reference width {task.default_width}); "
        f"reference: {args.multiplier:g}x that budget ({args.multiplier * budget:.3g}), same widths, seeds "
        f"{args.seeds}, {args.threads} CPU thread(s).",
        "",
        f"**Spearman rho = {rho:.3f}** (p = {p_value:.2g}), Kendall tau = {tau:.3f}, {len(table)} structures; "
        f"slowest proxy (all its runs, one seed) {summary['max_proxy_wall_seconds']:.1f} s of training.",
        "",
        f"| structure | theta | width | proxy score | proxy rank | proxy s | 10x {task.metric} | 10x rank | 10x s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary["rows"]:
        pw = sum(t["wall_seconds"] for t in row["proxy"])
        rw = sum(t["wall_seconds"] for t in row["reference"])
        lines.append(
            f"| {label(row)} | {row['spec']} | {row['proxy'][0]['width']} | {row['proxy_score']:.4f} "
            f"| {row['proxy_rank']} | {pw:.1f} "
            f"| {row['reference_score']:.4f} | {row['reference_rank']} | {rw:.1f} |"
        )
    lines.append("")
    lines.append(
        f"Command: `python benchmarks/proxy_fidelity.py --task {args.task} --proxy {args.proxy} --budget {budget:g} "
        f"--width {width} "
        f"--random {args.random} "
        f"--seeds {' '.join(map(str, args.seeds))} --out {args.out}"
        + "".join(f" --option {o}" for o in args.option or [])
        + f"` ({summary['seconds']:.0f} s incl. cached trials)."
    )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"Spearman {rho:.3f} (p={p_value:.2g}), Kendall {tau:.3f}")


if __name__ == "__main__":
    main()
