"""Tune each task's single learning rate once: dense model at the task's base width and default budget.

The evaluator transfers this lr to every width and structure through the layers' per-core
multipliers (lr * base_fan_in / fan_in with base_fan_in = base_width), so it is tuned once,
here, and committed as the task's default (``Task.lr``).

    python benchmarks/tune_lr.py                       # both tasks, writes benchmarks/results/tune_lr.{md,json}
    python benchmarks/tune_lr.py --task mlp-regression --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from structsearch.cli.evaluate_cmd import parse_options
from structsearch.evaluation import evaluate
from structsearch.tasks import get_task

GRID = [2.0**k * 1e-3 for k in range(-1, 6)]  # 5e-4 .. 3.2e-2, factor-2 steps


def tune(task_name: str, seeds: list[int], grid: list[float], options: dict | None = None) -> dict:
    task = get_task(task_name, **(options or {}))
    rows = []
    for lr in grid:
        losses = []
        for seed in seeds:
            r = evaluate("dense", task, seed=seed, width=task.base_width, lr=lr, device="cpu")
            losses.append(r.final_loss if r.final_loss is not None else math.inf)
            print(
                f"{task_name:15s} lr={lr:.2e} seed={seed} {r.status:8s} loss={r.final_loss} steps={r.steps} "
                f"wall={r.wall_seconds:.1f}s",
                flush=True,
            )
        mean = statistics.fmean(losses) if all(math.isfinite(v) for v in losses) else None
        rows.append({"lr": lr, "losses": [v if math.isfinite(v) else None for v in losses], "mean": mean})
    best = min((row for row in rows if row["mean"] is not None), key=lambda row: row["mean"])
    return {
        "task": task_name,
        "metric": task.metric,
        "base_width": task.base_width,
        "budget": task.budget,
        "seeds": seeds,
        "settings": task.describe(),
        "rows": rows,
        "best_lr": best["lr"],
        "current_default": task.lr,
    }


def to_markdown(results: list[dict], threads: int) -> str:
    lines = ["# Learning-rate tuning (dense, base width, default budget)", ""]
    lines.append(f"`python benchmarks/tune_lr.py`, torch {torch.__version__}, {threads} CPU thread(s).")
    lines.append("The best lr is each task's default `Task.lr`; the evaluator transfers it per core.")
    for res in results:
        lines += [
            "",
            f"## {res['task']} ({res['metric']}, width {res['base_width']}, budget {res['budget']:.3g} FLOPs,"
            f" seeds {res['seeds']}, {res.get('seconds', 0):.0f} s)",
            "",
            "| lr | mean | per seed |",
            "|---:|---:|---|",
        ]
        for row in res["rows"]:
            mark = " **best**" if row["lr"] == res["best_lr"] else ""
            mean = f"{row['mean']:.4f}" if row["mean"] is not None else "diverged"
            per = ", ".join(f"{v:.4f}" if v is not None else "div" for v in row["losses"])
            lines.append(f"| {row['lr']:.2e} | {mean}{mark} | {per} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", nargs="+", default=["mlp-regression", "char-lm"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--option", action="append", metavar="KEY=VALUE", help="task option (one task only)")
    parser.add_argument("--grid", type=float, nargs="+", default=GRID, help="learning rates to try")
    parser.add_argument("--out", default="benchmarks/results/tune_lr")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    options = parse_options(args.option)
    fresh = [tune(name, args.seeds, args.grid, options) for name in args.task]
    seconds = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # merge with the tasks tuned by earlier runs (one run per task is fine)
    old = json.loads(out.with_suffix(".json").read_text())["results"] if out.with_suffix(".json").exists() else []
    results = [r for r in old if r["task"] not in args.task] + fresh
    for res in fresh:
        res["seconds"] = seconds / len(fresh)
    out.with_suffix(".json").write_text(json.dumps({"threads": args.threads, "results": results}, indent=1))
    out.with_suffix(".md").write_text(to_markdown(results, args.threads))
    for res in results:
        print(f"{res['task']}: best lr {res['best_lr']:.2e} (default now {res['current_default']:.2e})")


if __name__ == "__main__":
    main()
