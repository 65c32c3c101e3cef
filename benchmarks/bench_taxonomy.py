"""Taxonomy throughput: candidates per second, side by side in one run.

    python benchmarks/bench_taxonomy.py [--n 2000000] [--json]

Compares plain sympy substitution into the graph's exponent formulas, the per-spec
`analyze` path (exact counts, rank bound, cheapest order, warnings) and the vectorised
`batch_taxonomy` path (exponents, flags, rounded sizes, exact params and MACs).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import sympy
from rich.console import Console
from rich.table import Table

from structsearch.spec import CLASSES, Spec
from structsearch.taxonomy import _formulas, analyze, batch_taxonomy


def random_thetas(n: int, rng: np.random.Generator) -> np.ndarray:
    inp, out = rng.dirichlet(np.ones(3), n), rng.dirichlet(np.ones(3), n)
    rho = rng.uniform(0, 1, n) * np.minimum(inp[:, 0], out[:, 1])
    return np.column_stack([inp, out, rho])


def rate(fn, n: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2_000_000, help="candidates in the vectorised batch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    thetas = random_thetas(args.n, rng)
    batch_taxonomy(thetas[:10], 1024, 1024)  # derive and lambdify once, outside the timing

    f = _formulas()
    symbols = [sympy.Symbol(f"t_{c}", nonnegative=True) for c in CLASSES]
    few = thetas[:40]

    def sympy_subs() -> None:
        for row in few:
            subs = dict(zip(symbols, row, strict=True))
            for expr in (f.nu, f.omega, f.psi):
                float(expr.subs(subs))

    specs = [Spec.from_theta(row) for row in thetas[:2000]]
    results = {
        "sympy substitution (nu, omega, psi)": rate(sympy_subs, len(few), repeats=1),
        "analyze() per spec (full report)": rate(
            lambda: [analyze(s, 1024, 1024, max_padding=None) for s in specs], len(specs), repeats=1
        ),
        "batch_taxonomy() vectorised (full)": rate(lambda: batch_taxonomy(thetas, 1024, 1024), args.n),
    }
    base = results["sympy substitution (nu, omega, psi)"]
    if args.json:
        print(json.dumps(results))
        return
    table = Table(
        title=f"taxonomy throughput, d_in = d_out = 1024 ({platform.processor() or platform.machine()}, "
        f"{__import__('os').cpu_count()} cores)"
    )
    table.add_column("path")
    table.add_column("candidates/s", justify="right")
    table.add_column("x sympy", justify="right")
    for name, value in results.items():
        table.add_row(name, f"{value:,.0f}", f"{value / base:,.0f}")
    Console().print(table)
    target = results["batch_taxonomy() vectorised (full)"]
    print(f"target >= 1,000,000 candidates/s: {'met' if target >= 1e6 else 'MISSED'} ({target:,.0f})")


if __name__ == "__main__":
    main()
