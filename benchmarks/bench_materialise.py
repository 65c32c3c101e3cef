"""When does multiplying by the materialised weight beat the structured contraction? (issue 10)

A structure's two cores define a d_out x d_in weight W = A . B. Running the layer as
``x @ W.T`` with W built from the cores every call is the same function with the same
gradients (up to float rounding), and it costs d_in * d_out MACs per vector instead of the
structure's own MACs. On a CPU at small widths, or for a structure whose MACs approach
dense's, the one well-shaped GEMM can be much faster than two batched GEMMs with awkward
shapes and permuting copies. The evaluator still charges the structure's MACs: this is only
how the arithmetic is done.

This sweep times forward+backward (float32, one thread, interleaved, best of ``--reps``) of
``EinsumLinear`` on its structural path (fast path or general) against the materialised
path, for the named structures and seeded random canonical points at each width, and
tabulates the speed-up against MACs / (d_in * d_out), so the rule that picks the path
(``layers._fast_paths.MATERIALISE_AT``, with the weight's build cost per call:
``materialise_from``) is read off a measurement. The rule's "regret" is
the time lost, summed over the sweep, against always picking the faster path.

    python benchmarks/bench_materialise.py --out benchmarks/results/materialise_cpu.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_name

from structsearch.errors import SizeError, SpecError
from structsearch.layers import EinsumLinear
from structsearch.layers._fast_paths import MATERIALISE_AT
from structsearch.spec import Spec
from structsearch.taxonomy import analyze

NAMED = ["btt", "low-rank:0.5", "kronecker", "tt:0", "monarch"]


def random_canonical(rng: np.random.Generator, d: int) -> str | None:
    """A random canonical theta on the grid of twelfths that builds at d x d (None if this draw does not)."""
    a, b = sorted(rng.integers(0, 13, size=2))
    c, e = sorted(rng.integers(0, 13, size=2))
    al, be, ga, de, ep, ph = a, b - a, 12 - b, c, e - c, 12 - e
    if min(al, ep) == 0:
        return None
    r = int(rng.integers(0, min(al, ep) + 1))
    spec = Spec.from_theta([v / 12 for v in (al, be, ga, de, ep, ph, r)])
    try:
        return spec.paper if analyze(spec, d, d).canonical else None
    except (SizeError, SpecError):
        return None


def time_paths(spec: str, d: int, batch: int, reps: int) -> tuple[float, float, float, str, bool]:
    """(structural ms, materialised ms, MACs / dense MACs, structural path name, whether the rule materialises)."""
    default = EinsumLinear(spec, d, d, device="meta")
    chosen = default.materialise_from is not None and batch >= default.materialise_from
    path = default.structural_path
    structural = EinsumLinear(spec, d, d, path=path)
    materialised = EinsumLinear(spec, d, d, path="materialised")
    x = torch.randn(batch, d, requires_grad=True)
    grad = torch.randn(batch, d)

    def step(layer: EinsumLinear) -> None:
        layer(x).backward(grad)

    times: dict[int, list[float]] = {0: [], 1: []}
    for layer in (structural, materialised):
        step(layer)  # warm up
    for _ in range(reps):  # interleaved: a busy moment slows both alike
        for k, layer in enumerate((structural, materialised)):
            t0 = time.perf_counter()
            for _ in range(5):
                step(layer)
            times[k].append((time.perf_counter() - t0) / 5 * 1e3)
    return min(times[0]), min(times[1]), structural.macs / (d * d), path, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--batch", type=int, default=256, help="vectors per call (mlp-regression's batch)")
    parser.add_argument("--random", type=int, default=16, help="random canonical points per width")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the tables as markdown here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for d in args.widths:
        rng = np.random.default_rng(d)
        specs = list(NAMED)
        while len(specs) < len(NAMED) + args.random:
            spec = random_canonical(rng, d)
            if spec is not None and spec not in specs:
                specs.append(spec)
        for spec in specs:
            s_ms, m_ms, ratio, path, chosen = time_paths(spec, d, args.batch, args.reps)
            rows.append(
                {"d": d, "spec": spec, "path": path, "ratio": ratio, "structural": s_ms, "materialised": m_ms}
                | {"rule": chosen}
            )
            print(
                f"d={d:5d} {spec:34s} {path:9s} macs/dense {ratio:5.2f}  structural {s_ms:8.3f} ms  "
                f"materialised {m_ms:8.3f} ms  speed-up {s_ms / m_ms:6.2f}",
                flush=True,
            )
    lines = report(rows, args)
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


BUCKETS = [(0.0, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.7), (0.7, 1.0), (1.0, 10.0)]


def report(rows: list[dict], args: argparse.Namespace) -> list[str]:
    lines = [
        "# Materialised weight against the structural path, per layer (issue 10)",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, {args.threads} thread(s). "
        f"Command: `python benchmarks/bench_materialise.py --widths {' '.join(map(str, args.widths))} "
        f"--batch {args.batch} --random {args.random} --reps {args.reps}`. Forward + backward of one "
        f"d x d layer on {args.batch} vectors, float32, best of {args.reps} interleaved rounds of 5.",
        "",
        "## Speed-up of the materialised path, by MACs / dense MACs",
        "",
        "| MACs / dense | layers | median speed-up | min | max | faster materialised |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for lo, hi in BUCKETS:
        group = [r for r in rows if lo <= r["ratio"] < hi]
        if not group:
            continue
        ups = [r["structural"] / r["materialised"] for r in group]
        wins = sum(u > 1 for u in ups)
        label = f"[{lo:g}, {hi:g})" if hi < 10 else f">= {lo:g}"
        spread = f"{statistics.median(ups):.2f} | {min(ups):.2f} | {max(ups):.2f}"
        lines.append(f"| {label} | {len(group)} | {spread} | {wins}/{len(group)} |")
    lines += ["", "## Rules: total time of the sweep under each threshold (materialise when MACs / dense >= t)", ""]
    lines += ["| threshold t | total ms | x best possible |", "|---|---:|---:|"]
    best = sum(min(r["structural"], r["materialised"]) for r in rows)
    for t in (0.2, 0.3, 0.4, 0.5, 0.7, 1.0, float("inf")):
        total = sum(r["materialised"] if r["ratio"] >= t else r["structural"] for r in rows)
        lines.append(f"| {t:g}{' (never)' if t == float('inf') else ''} | {total:.1f} | {total / best:.2f} |")
    total = sum(r["materialised"] if r["rule"] else r["structural"] for r in rows)
    lines += [
        f"| the rule in use (MATERIALISE_AT = {MATERIALISE_AT:g} with the weight's build cost, "
        f"`materialise_from` <= {args.batch}) | {total:.1f} | {total / best:.2f} |",
        "",
        f"The rule in use materialises {sum(r['rule'] for r in rows)} of {len(rows)} layers at {args.batch} vectors.",
    ]
    head = "| d | structure | structural path | MACs / dense | structural ms | materialised ms | speed-up |"
    lines += ["", "## Every layer", "", head]
    lines += ["|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['d']} | {r['spec']} | {r['path']} | {r['ratio']:.2f} | {r['structural']:.3f} | "
            f"{r['materialised']:.3f} | {r['structural'] / r['materialised']:.2f} |"
        )
    return lines


if __name__ == "__main__":
    main()
