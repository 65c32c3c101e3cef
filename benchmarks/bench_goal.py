"""Trainings per hour of the default proxy, old code against new, measured in one run (issue 10, item 5).

Ten fixed candidates (dense, BTT, low rank 1/2, Kronecker, TT and 5 seeded random canonical
points) are scored with ``structsearch.evaluation.proxy(spec)`` (mlp-regression, 3e10 FLOPs,
width 128, seed 0) by

- ``old``: the code of another checkout (``--old``, e.g. ``git worktree add /tmp/old main``), one
  process with torch's default threads, as ``structsearch search`` ran them before;
- ``new``: this checkout under the documented thread plan, two worker processes with one thread
  each, the ten candidates split between them;
- ``new-seeds``: as ``new`` with ``seeds=[0, 1, 2, 3]`` (four seed-trainings per proxy, one batched run).

Repeats are interleaved (old, new, new-seeds, old, ...) because the machine is shared; the table
gives each variant's median wall time over the repeats and the scores of the last repeat.

    python benchmarks/bench_goal.py --old /tmp/old --repeats 3 --out benchmarks/results/goal_throughput
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent
NAMED = ["dense", "btt", "low-rank:0.5", "kronecker", "tt:0"]

WORKER = """
import json, sys, time, torch
threads, seeds = int(sys.argv[1]), json.loads(sys.argv[2])
if threads:
    torch.set_num_threads(threads)
from structsearch.evaluation import proxy
for spec in sys.argv[3:]:
    t0 = time.perf_counter()
    r = proxy(spec, "mlp-regression", device="cpu", **({"seeds": seeds} if seeds else {}))
    runs = r.runs if seeds else [r]
    print(json.dumps({"spec": spec, "seconds": time.perf_counter() - t0, "scores": [x.score for x in runs],
                      "steps": runs[0].steps, "train_seconds": r.wall_seconds}), flush=True)
"""


def random_canonical(seed: int) -> str:
    """A seeded random canonical theta on the grid of twelfths that builds at width 128."""
    from structsearch.errors import SizeError
    from structsearch.spec import Spec
    from structsearch.taxonomy import analyze

    rng = np.random.default_rng(seed)
    while True:
        a, b = sorted(rng.integers(0, 13, size=2))
        d, e = sorted(rng.integers(0, 13, size=2))
        al, be, ga = a, b - a, 12 - b
        de, ep, ph = d, e - d, 12 - e
        if min(al, ep) < min(be, de):
            al, be, de, ep = be, al, ep, de
        if min(al, ep) == 0:
            continue
        r = int(rng.integers(0, min(al, ep) + 1))
        spec = Spec.from_theta([v / 12 for v in (al, be, ga, de, ep, ph, r)])
        try:
            if analyze(spec, 128, 128).canonical:
                return spec.paper
        except SizeError:
            continue


def run_variant(name: str, root: Path, specs: list[str], procs: int, threads: int, seeds: list[int]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("OMP_NUM_THREADS", None)
    chunks = [specs[i::procs] for i in range(procs)]
    t0 = time.perf_counter()
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(threads), json.dumps(seeds), *chunk],
            cwd="/tmp",
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for chunk in chunks
    ]
    rows = []
    for job in jobs:
        out, _ = job.communicate()
        if job.returncode:
            raise SystemExit(f"{name}: worker failed ({job.returncode})")
        rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    wall = time.perf_counter() - t0
    trainings = len(specs) * 2 * max(1, len(seeds))
    return {"variant": name, "wall": wall, "rows": {r["spec"]: r for r in rows}, "trainings": trainings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="checkout of the old code (a git worktree of main)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/goal_throughput")
    parser.add_argument("--variants", nargs="+", default=["old", "new", "new-seeds"])
    args = parser.parse_args()
    specs = NAMED + [random_canonical(seed) for seed in range(5)]
    variants = [
        ("old", Path(args.old), 1, 0, []),
        ("new", HERE, 2, 1, []),
        ("new-seeds", HERE, 2, 1, [0, 1, 2, 3]),
    ]
    variants = [v for v in variants if v[0] in args.variants]
    results: dict[str, list[dict]] = {v[0]: [] for v in variants}
    for rep in range(args.repeats):
        for name, root, procs, threads, seeds in variants:
            res = run_variant(name, root, specs, procs, threads, seeds)
            results[name].append(res)
            print(f"repeat {rep + 1} {name}: {res['wall']:.1f} s", flush=True)
            write(args, specs, [v for v in variants if results[v[0]]], results)  # what is done so far


def write(args: argparse.Namespace, specs: list[str], variants: list[tuple], results: dict[str, list[dict]]) -> None:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
    lines = [
        "# Trainings per hour of the default proxy: old code against new (issue 10, item 5)",
        "",
        f"Machine: {cpu}, {os.cpu_count()} cores, shared with other jobs (load average "
        f"{os.getloadavg()[0]:.1f} at the end); Python {platform.python_version()}. "
        f"Command: `python benchmarks/bench_goal.py --old {args.old} --repeats {args.repeats}"
        f" --variants {' '.join(args.variants)}`; repeats done: {max(len(r) for r in results.values())}. "
        "Old = main in its own git worktree, one process, torch's default threads; new = this branch, "
        "two worker processes x one thread. Repeats interleaved; medians, noisy (shared cores).",
        "",
        "| variant | trainings per sweep | median wall s (all repeats) | trainings per hour | x old |",
        "|---|---:|---:|---:|---:|",
    ]
    base = None
    summary = {}
    for name, *_ in variants:
        walls = [r["wall"] for r in results[name]]
        med = statistics.median(walls)
        per_hour = results[name][0]["trainings"] * 3600 / med
        base = base or per_hour
        summary[name] = {"walls": walls, "median": med, "per_hour": per_hour}
        walls_text = ", ".join(f"{w:.0f}" for w in walls)
        n = results[name][0]["trainings"]
        lines.append(f"| {name} | {n} | {med:.1f} ({walls_text}) | {per_hour:.0f} | {per_hour / base:.2f} |")
    lines += ["", "Scores (last repeat, seed 0; new-seeds: mean and spread of 4 seeds) and ranks:", ""]
    lines += [
        "| candidate | old score | new score | new-seeds mean ± sd | old rank | new rank |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    last = {name: res[-1]["rows"] for name, res in results.items() if res}
    old_rows, new_rows = last.get("old", {}), last.get("new", {})
    seed_rows = last.get("new-seeds", {})

    def rank(rows: dict) -> dict:
        order = sorted(specs, key=lambda s: rows[s]["scores"][0] if rows[s]["scores"][0] is not None else 1e9)
        return {s: i + 1 for i, s in enumerate(order)}

    old_rank = rank(old_rows) if len(old_rows) == len(specs) else {}
    new_rank = rank(new_rows) if len(new_rows) == len(specs) else {}

    def score(rows: dict, s: str) -> str:
        return f"{rows[s]['scores'][0]:.4f}" if s in rows and rows[s]["scores"][0] is not None else "-"

    for s in specs:
        sc = [x for x in seed_rows.get(s, {}).get("scores", []) if x is not None]
        spread = f"{statistics.mean(sc):.4f} ± {statistics.stdev(sc):.4f}" if len(sc) > 1 else "-"
        ranks = f"{old_rank.get(s, '-')} | {new_rank.get(s, '-')}"
        lines.append(f"| {s} | {score(old_rows, s)} | {score(new_rows, s)} | {spread} | {ranks} |")
    out = Path(args.out)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"specs": specs, "summary": summary, "results": results}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
