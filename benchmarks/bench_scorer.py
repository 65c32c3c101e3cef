"""The search's default scorer on structures a process has not seen: two checkouts side by side.

A search scores a new structure in almost every trial, so what a trial costs includes the
per-structure work that a warmed benchmark hides: the taxonomy of every layer it builds and the
iso-FLOP width search of every rung of the frontier ladder. Each variant's worker process warms
its per-process caches (torch, the teacher, the validation set, the taxonomy's formulas) on
``dense`` at a small budget, then scores each candidate once with
``frontier_score(spec, "mlp-regression", 3e9, target_flops=3e10, threads=1)`` (the search's
default scorer and budget), timing each call. Candidates: ``bench_goal.py``'s ten (dense, BTT, low
rank, Kronecker, TT and five seeded random canonical points) and ``--extra`` more random ones.
Repeats interleave the variants (the machine is shared); each repeat is a fresh process.

    git worktree add /tmp/before <commit>
    python benchmarks/bench_scorer.py --before /tmp/before --repeats 3 --out benchmarks/results/scorer_throughput
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from _machine import cpu_name
from bench_goal import NAMED, random_canonical

HERE = Path(__file__).resolve().parent.parent

WORKER = """
import json, sys, time, torch
torch.set_num_threads(1)
from structsearch.frontier import frontier_score
frontier_score("dense", "mlp-regression", 3e8, target_flops=3e9, threads=1)  # per-process warm-up
for spec in sys.argv[1:]:
    t0 = time.perf_counter()
    r = frontier_score(spec, "mlp-regression", 3e9, target_flops=3e10, threads=1)
    print(json.dumps({"spec": spec, "seconds": time.perf_counter() - t0, "score": r.score}), flush=True)
"""


def run(root: Path, specs: list[str]) -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run(
        [sys.executable, "-c", WORKER, *specs], cwd="/tmp", env=env, capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise SystemExit(f"{root}: worker failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {row["spec"]: row for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="checkout of the code to compare with (a git worktree)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--extra", type=int, default=10, help="random canonical points beyond the goal list's ten")
    parser.add_argument("--out", default="benchmarks/results/scorer_throughput")
    args = parser.parse_args()
    specs = NAMED + [random_canonical(seed) for seed in range(5)]
    specs += [s for s in dict.fromkeys(random_canonical(100 + k) for k in range(args.extra)) if s not in specs]
    variants = {"before": Path(args.before).resolve(), "after": HERE}
    results: dict[str, list[dict[str, dict]]] = {name: [] for name in variants}
    for rep in range(args.repeats):
        for name, root in variants.items():
            results[name].append(run(root, specs))
            total = sum(r["seconds"] for r in results[name][-1].values())
            print(f"repeat {rep + 1} {name}: {total:.1f} s", flush=True)
    write(args, specs, results)


def write(args: argparse.Namespace, specs: list[str], results: dict[str, list[dict[str, dict]]]) -> None:
    def median(name: str, spec: str) -> float:
        return statistics.median(rep[spec]["seconds"] for rep in results[name])

    lines = [
        "# The search's default scorer on unseen structures, two checkouts side by side",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; "
        f"Python {platform.python_version()}, one torch thread. Command: `python benchmarks/bench_scorer.py "
        f"--before {args.before} --repeats {args.repeats} --extra {args.extra} --out {args.out}`. Each candidate "
        "scored once per fresh process (after a warm-up on dense) by `frontier_score(spec, 'mlp-regression', 3e9, "
        "target_flops=3e10)`; medians over the repeats, which interleave the variants.",
        "",
        "| candidate | before s | after s | speed-up | before score | after score | same bits |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    totals = {name: 0.0 for name in results}
    for spec in specs:
        before, after = median("before", spec), median("after", spec)
        totals["before"] += before
        totals["after"] += after
        a, b = results["before"][-1][spec]["score"], results["after"][-1][spec]["score"]
        scores = " | ".join(f"{x:.6f}" if x is not None else "-" for x in (a, b))
        same = "yes" if a == b else "NO"
        lines.append(f"| {spec} | {before:.3f} | {after:.3f} | {before / after:.2f}x | {scores} | {same} |")
    ratio = totals["before"] / totals["after"]
    per_hour = {name: 3600 * len(specs) / t for name, t in totals.items()}
    lines += [
        "",
        f"All {len(specs)} candidates: {totals['before']:.1f} s before, {totals['after']:.1f} s after ({ratio:.2f}x): "
        f"{per_hour['before']:.0f} -> {per_hour['after']:.0f} structures scored per hour on one core "
        "(each score trains a 3-rung ladder).",
    ]
    out = Path(args.out)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"specs": specs, "results": results}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
