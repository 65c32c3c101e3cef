"""Small-scale reproduction on mlp-regression: dense vs BTT vs Kronecker vs low-rank frontiers.

Trains every (structure, width, budget) of the ladder with :func:`structsearch.scale`, keeps
each structure's compute-efficient frontier, fits loss = a * C^(-b) and reports the compute
multiplier against dense at dense's best frontier loss. Writes a table, JSON and a plot.

    python benchmarks/reproduce_scaling.py          # benchmarks/results/reproduce_scaling.{md,json,png}
    python benchmarks/reproduce_scaling.py --widths 64 128 256 512 --budgets 1e10 3e10 1e11
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from structsearch.scaling import ScaleResult, plot_frontiers, resummarise, scale

STRUCTURES = ["btt", "kronecker", "low-rank:1/2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--structures", nargs="+", default=STRUCTURES)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--budgets", type=float, nargs="+", default=[3e9, 1e10, 3e10, 1e11])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/reproduce_scaling")
    parser.add_argument("--from-json", action="store_true", help="re-render OUT.json (no training)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def progress(done: int, total: int, label: str) -> None:
        print(f"[{done}/{total}] {label}  ({time.perf_counter() - start:.0f} s)", flush=True)

    if args.from_json:  # re-render a finished run without training again
        result = resummarise(ScaleResult.model_validate_json(out.with_suffix(".json").read_text()))
        plot_frontiers(result, str(out.with_suffix(".png")))
        write(result, args, out)
        return
    result = scale(
        args.structures,
        task="mlp-regression",
        widths=args.widths,
        budgets=args.budgets,
        seed=args.seed,
        device="cpu",
        plot=str(out.with_suffix(".png")),
        progress=progress,
    )
    out.with_suffix(".json").write_text(json.dumps(result.to_dict(), indent=1))
    write(result, args, out)


def write(result: ScaleResult, args: argparse.Namespace, out: Path) -> None:
    lines = [
        "# Small-scale reproduction: compute-efficient frontiers on mlp-regression",
        "",
        f"Widths {result.widths}, budgets {[f'{b:.0e}' for b in result.budgets]} training FLOPs, seed {result.seed}, "
        f"{args.threads} CPU thread(s), {result.total_wall_seconds:.0f} s in all. "
        f"Target loss L* = dense's best frontier MSE = {result.target_loss:.4f}.",
        "Multiplier = C_dense(L*) / C_structure(L*): above 1 the structure needs less compute than dense.",
        "",
        "| structure | frontier points | best MSE | a | b ± s.e. | multiplier (fit) | multiplier (measured) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result.structures:
        fit = row.fit
        best = min(v for _, v in row.frontier)
        a = f"{fit.a:.3g}" if fit else "-"
        b = "-" if fit is None else f"{fit.b:.4f}" + (f" ± {fit.b_err:.4f}" if fit.b_err is not None else "")
        m_fit = f"{row.multiplier:.2f}" if row.multiplier else "-"
        m_measured = f"{row.multiplier_measured:.2f}" if row.multiplier_measured else "does not reach L*"
        if row.measured_is_lower_bound:
            m_measured = ">= " + m_measured
        lines.append(f"| {row.label} | {len(row.frontier)} | {best:.4f} | {a} | {b} | {m_fit} | {m_measured} |")
    lines += [
        "",
        "## Every training",
        "",
        "| structure | width | budget | MSE | steps | frontier |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in result.structures:
        for p in row.points:
            loss = f"{p.final_loss:.4f}" if p.final_loss is not None else p.status
            lines.append(
                f"| {row.label} | {p.width} | {p.budget:.0e} | {loss} | {p.steps} | {'*' if p.on_frontier else ''} |"
            )
    lines += ["", f"![frontiers]({out.with_suffix('.png').name})", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines[:12]))


if __name__ == "__main__":
    main()
