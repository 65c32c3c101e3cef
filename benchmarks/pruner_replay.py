"""Which pruner should the frontier search use? Replay measured ladders through Optuna's pruners.

The candidates are the structures whose frontier ladders were measured for the fidelity
study and the headline (benchmarks/results/frontier_fidelity.json, frontier_headline.json):
each has its rungs' losses (reported at steps 10, 40, 100, as the search does) and its final
score. For every pruner, ``--orders`` random arrival orders are fed to a fresh in-memory
study with that pruner; a pruned candidate costs only its rungs. Reported per pruner:
compute spent relative to no pruning, how often the best-scored candidate survives, and the
mean regret (best surviving score over the best score, minus 1).

    python benchmarks/pruner_replay.py --orders 300
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import optuna

from structsearch.engine import PRUNERS, make_pruner
from structsearch.frontier import Ladder

optuna.logging.set_verbosity(optuna.logging.WARNING)


def load_candidates(paths: list[Path]) -> list[dict]:
    out = {}
    for path in paths:
        if not path.exists():
            continue
        doc = json.loads(path.read_text())
        rows = doc.get("scores", {}).get("frontier:iso-flop", {}) | doc.get("handpicked", {})
        for spec, row in rows.items():
            rungs = row.get("rungs") or []
            if row.get("score") is not None and len(rungs) == 3 and all(v is not None for _, v in rungs):
                out[spec] = {"score": row["score"], "losses": [v for _, v in rungs], "flops": [c for c, _ in rungs]}
    return [{"spec": k, **v} for k, v in out.items()]


def replay(candidates: list[dict], pruner: str, order: np.ndarray) -> tuple[float, list[dict]]:
    study = optuna.create_study(pruner=make_pruner(pruner))
    steps = Ladder().progress_steps()
    spent, survivors = 0.0, []
    for i in order:
        c = candidates[i]
        trial = study.ask()
        pruned = False
        for step, loss, flops in zip(steps, c["losses"], c["flops"], strict=True):
            spent += flops
            trial.report(loss, step)
            if step != steps[-1] and trial.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, c["score"])
            survivors.append(c)
    return spent, survivors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument(
        "--inputs",
        nargs="+",
        default=["benchmarks/results/frontier_fidelity.json", "benchmarks/results/frontier_headline.json"],
    )
    parser.add_argument("--out", default="benchmarks/results/pruners")
    args = parser.parse_args()
    candidates = load_candidates([Path(p) for p in args.inputs])
    full = sum(sum(c["flops"]) for c in candidates)
    best = min(c["score"] for c in candidates)
    rng = np.random.default_rng(0)
    orders = [rng.permutation(len(candidates)) for _ in range(args.orders)]
    rows = []
    for pruner in PRUNERS:
        spent, kept, regret = [], 0, []
        for order in orders:
            cost, survivors = replay(candidates, pruner, order)
            spent.append(cost / full)
            top = min(c["score"] for c in survivors)
            kept += top == best
            regret.append(top / best - 1)
        rows.append(
            {
                "pruner": pruner,
                "compute": float(np.mean(spent)),
                "best_kept": kept / len(orders),
                "regret_mean": float(np.mean(regret)),
                "regret_max": float(np.max(regret)),
            }
        )
        print(rows[-1], flush=True)
    Path(args.out).with_suffix(".json").write_text(json.dumps({"candidates": candidates, "rows": rows}, indent=1))
    lines = [
        "# Pruners over the frontier ladder, replayed on measured ladders",
        "",
        f"{len(candidates)} measured candidates (mlp-regression, 3 rungs each), {args.orders} random arrival orders; "
        "machine-independent (a replay of recorded losses). "
        f"Python {platform.python_version()}, optuna {optuna.__version__}.",
        "",
        "| pruner | compute vs no pruning | best candidate kept | mean regret | worst regret |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pruner']} | {r['compute']:.0%} | {r['best_kept']:.0%} "
            f"| {r['regret_mean']:.2%} | {r['regret_max']:.2%} |"
        )
    lines += [
        "",
        "Regret: the best surviving candidate's score over the best score, minus 1.",
        "",
        f"Command: `python benchmarks/pruner_replay.py --orders {args.orders}`",
    ]
    Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
