"""Trainings per hour of the default proxy, old code against new, measured in one run (issue 10, item 5).

Ten fixed candidates (dense, BTT, low rank 1/2, Kronecker, TT and 5 seeded random canonical
points) are scored with ``structsearch.evaluation.proxy(spec)`` (mlp-regression, 3e10 FLOPs,
width 128, seed 0) by

- ``old``: the code of another checkout (``--old``, e.g. ``git worktree add /tmp/old main``), one
  process with torch's default threads, as ``structsearch search`` ran them before;
- ``new``: this checkout under the documented thread plan, two worker processes with one thread
  each, the ten candidates split between them;
- ``new-seeds``: as ``new`` with ``seeds=[0, 1, 2, 3]`` (four seed-trainings per proxy, one batched run);
- ``new-no-replay``: as ``new`` with replayed training streams off (``STRUCTSEARCH_STREAM_CACHE_MB=0``),
  so each training makes its own data again.

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
from _machine import cpu_name

HERE = Path(__file__).resolve().parent.parent
NAMED = ["dense", "btt", "low-rank:0.5", "kronecker", "tt:0"]
VARIANT_ENV = {"new-no-replay": {"STRUCTSEARCH_STREAM_CACHE_MB": "0"}}

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


WINDOW_WORKER = """
import json, sys, time, torch
threads, seeds, out = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
if threads:
    torch.set_num_threads(threads)
from structsearch.evaluation import proxy
specs = sys.argv[4:]
k = 0
while True:
    spec = specs[k % len(specs)]
    k += 1
    t0 = time.perf_counter()
    r = proxy(spec, "mlp-regression", device="cpu", **({"seeds": seeds} if seeds else {}))
    runs = r.runs if seeds else [r]
    with open(out, "a") as f:
        f.write(json.dumps({"spec": spec, "seconds": time.perf_counter() - t0, "scores": [x.score for x in runs],
                            "end": time.time()}) + "\\n")
"""


def run_window(variants: list[tuple], specs: list[str], window: float, tmp: Path) -> dict:
    """Every variant's workers at the same time for ``window`` seconds; finished proxies per variant."""
    jobs, started = [], time.time()
    for name, root, procs, threads, seeds in variants:
        env = {**os.environ, "PYTHONPATH": str(root), **VARIANT_ENV.get(name, {})}
        env.pop("OMP_NUM_THREADS", None)
        for i in range(procs):
            order = specs[i::procs] + [s for s in specs if s not in specs[i::procs]]  # own share first, then the rest
            out = tmp / f"{name}-{i}.jsonl"
            out.unlink(missing_ok=True)
            cmd = [sys.executable, "-c", WINDOW_WORKER, str(threads), json.dumps(seeds), str(out), *order]
            jobs.append(subprocess.Popen(cmd, cwd="/tmp", env=env, stdout=subprocess.DEVNULL))
    time.sleep(window)
    for job in jobs:
        job.kill()
        job.wait()
    results = {}
    for name, _root, procs, _threads, seeds in variants:
        rows = []
        for i in range(procs):
            out = tmp / f"{name}-{i}.jsonl"
            if out.exists():
                rows += [json.loads(line) for line in out.read_text().splitlines()]
        trainings = 2 * max(1, len(seeds)) * len(rows)
        results[name] = {
            "proxies": len(rows),
            "trainings": trainings,
            "per_hour": trainings * 3600 / window,
            "rows": rows,
            "started": started,
        }
    return results


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
    env = {**os.environ, "PYTHONPATH": str(root), **VARIANT_ENV.get(name, {})}
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
    parser.add_argument(
        "--window",
        type=float,
        default=None,
        help="run every variant at the same time for this many seconds and count finished proxies "
        "(for a machine too loaded to finish sweeps)",
    )
    args = parser.parse_args()
    specs = NAMED + [random_canonical(seed) for seed in range(5)]
    variants = [
        ("old", Path(args.old), 1, 0, []),
        ("new", HERE, 2, 1, []),
        ("new-seeds", HERE, 2, 1, [0, 1, 2, 3]),
        ("new-no-replay", HERE, 2, 1, []),
    ]
    variants = [v for v in variants if v[0] in args.variants]
    if args.window:
        return window_report(args, specs, variants)
    results: dict[str, list[dict]] = {v[0]: [] for v in variants}
    for rep in range(args.repeats):
        for name, root, procs, threads, seeds in variants:
            res = run_variant(name, root, specs, procs, threads, seeds)
            results[name].append(res)
            print(f"repeat {rep + 1} {name}: {res['wall']:.1f} s", flush=True)
            write(args, specs, [v for v in variants if results[v[0]]], results)  # what is done so far


def write(args: argparse.Namespace, specs: list[str], variants: list[tuple], results: dict[str, list[dict]]) -> None:
    cpu = cpu_name()
    lines = [
        "# Trainings per hour of the default proxy: old code against new (issue 10, item 5)",
        "",
        f"Machine: {cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end (this "
        f"benchmark's own workers count up to 2); Python {platform.python_version()}. "
        f"Command: `python benchmarks/bench_goal.py --old {args.old} --repeats {args.repeats}"
        f" --variants {' '.join(args.variants)} --out {args.out}`; "
        f"repeats done: {max(len(r) for r in results.values())}. "
        "Old = main in its own git worktree, one process, torch's default threads; new = this branch, "
        "two worker processes x one thread (new-no-replay: the same with replayed training streams off). "
        "Repeats interleaved; medians, noisy (shared cores).",
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


def window_report(args: argparse.Namespace, specs: list[str], variants: list[tuple]) -> None:
    tmp = Path("/tmp/bench_goal_window")
    tmp.mkdir(exist_ok=True)
    load_before = os.getloadavg()[0]
    res = run_window(variants, specs, args.window, tmp)
    cpu = cpu_name()
    lines = [
        "# Trainings per hour of the default proxy: old code against new (issue 10, item 5)",
        "",
        f"Machine: {cpu}, {os.cpu_count()} cores, shared with other engineers' jobs (load average "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end); Python {platform.python_version()}.",
        f"Command: `python benchmarks/bench_goal.py --old {args.old} --window {args.window:g} "
        f"--variants {' '.join(args.variants)}`.",
        "",
        "The machine was too loaded to finish interleaved sweeps (one old sweep of 10 proxies ran 22 min",
        "without finishing), so the variants ran at the same time, under the same load, for one window,",
        "each cycling through the 10 candidates; trainings per hour = finished proxies x 2 trainings",
        "(x seeds) / window. Old = main in its own git worktree, one process, torch's default threads;",
        "new = this branch, two processes x one thread (the thread plan). One window, not a median of 3.",
        "",
        "| variant | processes x threads | finished proxies | trainings | trainings per hour | x old |",
        "|---|---|---:|---:|---:|---:|",
    ]
    base = res[variants[0][0]]["per_hour"] or float("nan")
    for name, _root, procs, threads, _seeds in variants:
        r = res[name]
        lines.append(
            f"| {name} | {procs} x {threads or 'default'} | {r['proxies']} | {r['trainings']} | "
            f"{r['per_hour']:.0f} | {r['per_hour'] / base:.2f} |"
        )
    lines += ["", "Scores of the candidates each variant finished (seed 0; new-seeds: mean ± sd of 4 seeds):", ""]
    lines += ["| candidate | " + " | ".join(v[0] for v in variants) + " |", "|---|" + "---:|" * len(variants)]
    for spec in specs:
        cells = []
        for name, *_ in variants:
            row = next((r for r in res[name]["rows"] if r["spec"] == spec), None)
            sc = [x for x in (row or {}).get("scores", []) if x is not None]
            if not sc:
                cells.append("-")
            elif len(sc) == 1:
                cells.append(f"{sc[0]:.4f}")
            else:
                cells.append(f"{statistics.mean(sc):.4f} ± {statistics.stdev(sc):.4f}")
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    out = Path(args.out)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"specs": specs, "window": args.window, "results": res}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
