"""BTT-MoE against dense, BTT and a standard MoE at matched compute (issue 11, taxonomy.md 6).

Four models per task, each trained on a ladder of widths x FLOP budgets with the evaluator
(AdamW, warmup + cosine, per-core muP learning rates, the routers' auxiliary losses):

- dense, BTT (rank 1) and BTT-MoE (``btt-moe:experts=8,k=2``): every structured linear layer
  of the task (char-lm: attention q, k, v, o and the MLP's fc, proj; mlp-regression: the
  hidden layers) is that structure;
- standard MoE: the task's ``-moe`` version (dense attention, and the MLP replaced by top-2
  of 8 whole-FFN experts, each the size of the dense MLP).

Per model: the compute-efficient frontier (best width per budget, then Pareto), a power-law
fit loss = a C^-b, and the compute multiplier against dense at dense's best frontier loss
(above 1: less compute than dense). Extra seeds at the smallest budget show the spread.
Only the final validation loss is used (``eval_points=2``: validation costs no training
FLOPs but CPU time). Results are cached in OUT.jsonl, so an interrupted run resumes.

    python benchmarks/moe_experiment.py                  # benchmarks/results/moe_experiment.{md,json,png}
    python benchmarks/moe_experiment.py --from-json      # re-render from the cache, no training
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from structsearch.scaling import compute_at_loss, fit_power_law, pareto_frontier

MODELS = {  # label -> (spec, task suffix)
    "dense": ("dense", ""),
    "BTT": ("btt", ""),
    "standard MoE (8 FFN experts, top-2)": ("dense", "-moe"),
    "BTT-MoE (8 experts, top-2)": ("btt-moe:experts=8,k=2", ""),
}
LADDERS = {
    "mlp-regression": {"widths": [64, 128, 256], "budgets": [1e9, 3e9, 1e10, 3e10]},
    "char-lm": {"widths": [64, 128], "budgets": [3e10, 6e10, 1.2e11, 2.4e11]},
}
SEEDS = [0, 1, 2]  # at the smallest budget; the other budgets use seed 0


def _key(task: str, label: str, width: int, budget: float, seed: int) -> str:
    return f"{task}|{label}|{width}|{budget:.3g}|{seed}"


def _runs(tasks: list[str]) -> list[tuple[str, str, int, float, int]]:
    out = []
    for task in tasks:
        ladder = LADDERS[task]
        for budget in ladder["budgets"]:  # cheapest first: an interrupted run still compares every model
            seeds = SEEDS if budget == ladder["budgets"][0] else SEEDS[:1]
            for label in MODELS:
                for width in ladder["widths"]:
                    for seed in seeds:
                        out.append((task, label, width, budget, seed))
    return out


def train(cache_path: Path, tasks: list[str], threads: int) -> dict[str, dict[str, Any]]:
    from structsearch import evaluate

    cache: dict[str, dict[str, Any]] = {}
    if cache_path.exists():
        for line in cache_path.read_text().splitlines():
            entry = json.loads(line)
            cache[entry["key"]] = entry
    start = time.perf_counter()
    todo = [run for run in _runs(tasks) if _key(*run) not in cache]
    for i, (task, label, width, budget, seed) in enumerate(todo, 1):
        spec, suffix = MODELS[label]
        t0 = time.perf_counter()
        r = evaluate(
            spec, task + suffix, budget=budget, seed=seed, width=width, threads=threads, device="cpu", eval_points=2
        )
        entry = {
            "key": _key(task, label, width, budget, seed),
            "task": task,
            "model": label,
            "spec": spec,
            "task_run": task + suffix,
            "width": width,
            "budget": budget,
            "seed": seed,
            "status": r.status,
            "final_loss": r.final_loss,
            "train_flops": r.train_flops,
            "steps": r.steps,
            "params": r.params,
            "macs_per_vector": r.macs,
            "train_wall_seconds": r.wall_seconds,
            "total_seconds": time.perf_counter() - t0,
        }
        cache[entry["key"]] = entry
        with cache_path.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")
        print(
            f"[{i}/{len(todo)}] {task} {label} w={width} C={budget:.0e} s={seed}: {r.status} "
            f"loss={r.final_loss} steps={r.steps} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    return cache


def summarise(cache: dict[str, dict[str, Any]], tasks: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"tasks": {}}
    for task in tasks:
        ladder = LADDERS[task]
        smallest = ladder["budgets"][0]
        rows: dict[str, Any] = {}
        for label in MODELS:
            entries = [e for e in cache.values() if e["task"] == task and e["model"] == label]
            ok = [e for e in entries if e["status"] == "ok" and e["final_loss"] is not None]
            best: dict[float, dict[str, Any]] = {}  # best width per budget, seed 0
            for e in ok:
                if e["seed"] == 0 and (e["budget"] not in best or e["final_loss"] < best[e["budget"]]["final_loss"]):
                    best[e["budget"]] = e
            frontier = pareto_frontier([(e["train_flops"], e["final_loss"]) for e in best.values()])
            fit = fit_power_law([c for c, _ in frontier], [v for _, v in frontier]) if len(frontier) >= 2 else None
            per_seed = []  # at the smallest budget: each seed's best width
            for seed in SEEDS:
                losses = [e["final_loss"] for e in ok if e["budget"] == smallest and e["seed"] == seed]
                if losses:
                    per_seed.append(min(losses))
            rows[label] = {
                "frontier": frontier,
                "best_width": {f"{b:.0e}": e["width"] for b, e in sorted(best.items())},
                "fit": None if fit is None else {"a": fit.a, "b": fit.b, "b_err": fit.b_err},
                "smallest_budget_losses": per_seed,
                "failed": [e["key"] for e in entries if e["status"] != "ok"],
                "train_seconds": sum(e["total_seconds"] for e in entries),
            }
        for ref in ("dense", "standard MoE (8 FFN experts, top-2)"):
            target = min((v for _, v in rows[ref]["frontier"]), default=None)
            for row in rows.values():
                row.setdefault("multiplier", {})[ref] = _multiplier(rows[ref], row, target)
        out["tasks"][task] = {"ladder": ladder, "seeds_at_smallest": SEEDS, "models": rows}
    return out


def _multiplier(ref: dict[str, Any], row: dict[str, Any], target: float | None) -> dict[str, Any]:
    """C_ref(L*) / C_row(L*) at L* = ref's best frontier loss, measured (interpolated) and fitted."""
    if target is None:
        return {"target": None, "measured": None, "fit": None}
    c_ref = compute_at_loss(ref["frontier"], target)
    c_row = compute_at_loss(row["frontier"], target)
    bound = c_row is None and bool(row["frontier"]) and row["frontier"][0][1] < target
    if bound:
        c_row = row["frontier"][0][0]

    def fitted(fit: dict[str, Any] | None) -> float | None:
        if not fit or fit["b"] <= 0:
            return None
        return (fit["a"] / target) ** (1 / fit["b"])

    f_ref, f_row = fitted(ref["fit"]), fitted(row["fit"])
    return {
        "target": target,
        "measured": c_ref / c_row if c_ref and c_row else None,
        "measured_is_lower_bound": bound,
        "fit": f_ref / f_row if f_ref and f_row else None,
    }


def _machine() -> str:
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    import os

    return f"{model}, {os.cpu_count()} logical cores"


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def write_table(summary: dict[str, Any], out: Path, threads: int, wall: float) -> None:
    lines = [
        "# BTT-MoE vs dense, BTT and a standard MoE at matched compute",
        "",
        f"Machine: {_machine()} (shared with other jobs). {threads} thread per run, CPU, float32. "
        f"Command: `python benchmarks/moe_experiment.py` ({wall / 60:.0f} min of training in all).",
        "Every structured linear layer is replaced (char-lm: attention q, k, v, o and MLP fc, proj). Standard MoE: "
        "dense attention, MLP = top-2 of 8 whole-FFN experts of the dense MLP's size. Frontier: best width per "
        "budget (seed 0), then Pareto. Multiplier = C_ref(L*) / C_model(L*) at L* = the reference's best frontier "
        "loss (above 1: the model needs less compute than the reference); '>=' marks a lower bound (the model's "
        "cheapest run already beats L*); 'not reached': its measured frontier never gets down to L*. Wall seconds "
        "include validation and FLOP counting, on a machine shared with other jobs. Every model trains with its "
        "task's learning rate (tuned for dense) and the evaluator's schedule; none was tuned per model.",
        "",
    ]
    for task, block in summary["tasks"].items():
        ladder = block["ladder"]
        lines += [
            f"## {task}",
            "",
            f"Widths {ladder['widths']}, budgets {', '.join(f'{b:.2g}' for b in ladder['budgets'])} training FLOPs; "
            f"seeds {block['seeds_at_smallest']} at {ladder['budgets'][0]:.2g}.",
            "",
            "| model | frontier (FLOPs: loss) | best loss | b (loss ~ C^-b) | x vs dense (measured / fit) "
            "| x vs standard MoE (measured / fit) | loss at smallest budget, mean ± sd (3 seeds) | wall s |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for label, row in block["models"].items():
            frontier = ", ".join(f"{c:.1e}: {v:.4g}" for c, v in row["frontier"])
            best = min((v for _, v in row["frontier"]), default=None)
            b = row["fit"]["b"] if row["fit"] else None
            mults = []
            for ref in ("dense", "standard MoE (8 FFN experts, top-2)"):
                m = row["multiplier"][ref]
                measured = _fmt(m["measured"])
                if m.get("measured_is_lower_bound") and m["measured"]:
                    measured = ">=" + measured
                elif m["measured"] is None:
                    measured = "not reached"
                mults.append(f"{measured} / {_fmt(m['fit'])}")
            seeds = row["smallest_budget_losses"]
            spread = f"{statistics.mean(seeds):.4g} ± {statistics.stdev(seeds):.2g}" if len(seeds) >= 2 else _fmt(None)
            lines.append(
                f"| {label} | {frontier} | {_fmt(best, '.4g')} | {_fmt(b, '.3f')} | {mults[0]} | {mults[1]} "
                f"| {spread} | {row['train_seconds']:.0f} |"
            )
        lines += ["", _verdict(block["models"]), ""]
    out.with_suffix(".md").write_text("\n".join(lines))


def _verdict(models: dict[str, Any]) -> str:
    """One plain sentence: does BTT-MoE beat dense and the standard MoE here, and by how much."""
    moe = models["BTT-MoE (8 experts, top-2)"]
    best = {label: min((v for _, v in row["frontier"]), default=None) for label, row in models.items()}
    parts = []
    for ref, key in (("dense", "dense"), ("the standard MoE", "standard MoE (8 FFN experts, top-2)")):
        m = moe["multiplier"][key]
        ref_best, moe_best = best[key], best["BTT-MoE (8 experts, top-2)"]
        if m["measured"] is not None:
            verdict = "beats" if m["measured"] > 1.05 else ("ties" if m["measured"] >= 0.95 else "loses to")
            parts.append(f"{verdict} {ref} ({m['measured']:.2f}x the compute efficiency at {ref}'s best loss)")
        else:
            parts.append(
                f"loses to {ref} (best loss {moe_best:.4g} vs {ref_best:.4g}; never reaches {ref}'s best loss"
                + (f", fitted multiplier {m['fit']:.2f}x)" if m["fit"] else ")")
            )
    return "**Verdict.** BTT-MoE " + "; it ".join(parts) + f". BTT (rank 1) best loss: {best['BTT']:.4g}."


def plot(summary: dict[str, Any], cache: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    colors = dict(zip(MODELS, ("black", "tab:blue", "tab:orange", "tab:red"), strict=True))
    for ax, task in zip(axes[0], tasks, strict=True):
        for label, row in summary["tasks"][task]["models"].items():
            pts = [e for e in cache.values() if e["task"] == task and e["model"] == label and e["final_loss"]]
            ax.scatter(
                [e["train_flops"] for e in pts], [e["final_loss"] for e in pts], s=10, alpha=0.3, color=colors[label]
            )
            if row["frontier"]:
                cs, ls = zip(*row["frontier"], strict=True)
                ax.plot(cs, ls, "-o", color=colors[label], label=label, ms=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training FLOPs")
        ax.set_ylabel("validation " + ("MSE" if task == "mlp-regression" else "bits per char"))
        ax.set_title(f"{task}: compute-efficient frontiers")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(LADDERS), choices=list(LADDERS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/moe_experiment")
    parser.add_argument("--from-json", action="store_true", help="re-render from OUT.jsonl (no training)")
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache_path = out.with_suffix(".jsonl")
    if args.from_json:
        cache = {e["key"]: e for e in map(json.loads, cache_path.read_text().splitlines())}
    else:
        cache = train(cache_path, args.tasks, args.threads)
    summary = summarise(cache, args.tasks)
    wall = sum(e["total_seconds"] for e in cache.values())
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1, default=lambda x: None if math.isnan(x) else x))
    write_table(summary, out, args.threads, wall)
    plot(summary, cache, out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
