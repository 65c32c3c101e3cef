"""The headline: a frontier-scored search against the paper's 23 hand-picked points at equal compute.

1. Score the 23 hand-picked thetas (taxonomy.md 8) with the search's frontier scorer
   (``--budget`` per candidate, predicted loss at ``--target``); their total training FLOPs
   is the compute both sides get.
2. Run a steered search of the ``full`` space with the same scorer and the default pruner
   until its trainings have spent that much.
3. Confirm on the ground truth: the search's best, the best hand-picked point, dense and BTT,
   each at the target compute, its frontier width (the minimum over ``--widths`` at seed 0)
   and ``--seeds`` seeds; means with 95% intervals and paired tests against dense and BTT.

Trainings go through the ground truth's JSONL cache (benchmarks/frontier_truth.py keys).

    python benchmarks/frontier_headline.py --budget 3e9 --target 1e11 --phase all
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import optuna
import torch
from bench_vs_handpicked import HANDPICKED
from frontier_fidelity import cached_evaluate
from frontier_truth import load_cache

import structsearch.evaluation as evaluation
from structsearch.confirmation import mean_interval, paired_comparison
from structsearch.engine import FrontierScorer, load_existing_study, search
from structsearch.frontier import frontier_score
from structsearch.spec import parse_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def score_handpicked(args) -> dict:
    rows = {}
    for theta in HANDPICKED:
        r = frontier_score(theta, args.task, args.budget, target_flops=args.target)
        rows[parse_spec(theta).paper] = {
            "score": r.score,
            "kind": r.score_kind,
            "flops": r.train_flops,
            "name": r.structure,
            "warnings": r.warnings,
            "rungs": [[g.train_flops, g.final_loss] for g in r.rungs],
        }
        print(f"hand-picked {theta:28s} score={r.score} ({r.score_kind})", flush=True)
    return rows


def run_search(args, compute: float) -> dict:
    spent = {"flops": 0.0}

    def stop_at_equal_compute(study, trial) -> bool:
        spent["flops"] = sum(float(t.user_attrs.get("train_flops") or 0.0) for t in study.get_trials(deepcopy=False))
        return spent["flops"] >= compute

    runs = Path(args.runs)
    if args.fresh and runs.exists():
        shutil.rmtree(runs)
    start = time.perf_counter()
    result = search(
        "full",
        task=args.task,
        budget=args.budget,
        trials=200,
        study="headline",
        runs_dir=runs,
        evaluate_fn=FrontierScorer(args.target),
        seed=args.search_seed,
        references=False,
        confirm=False,
        progress=False,
        callbacks=[stop_at_equal_compute],
    )
    loaded, _ = load_existing_study("headline", runs_dir=runs)
    trained = [t for t in loaded.get_trials() if t.user_attrs.get("status") in ("evaluated", "pruned")]
    return {
        "best": result.best,
        "statuses": result.statuses,
        "trainings": len(trained),
        "flops": sum(float(t.user_attrs.get("train_flops") or 0) for t in loaded.get_trials()),
        "seconds": time.perf_counter() - start,
    }


def frontier_loss(args, spec: str, seed: int, widths: list[int]) -> dict:
    out = {}
    for w in widths:
        r = evaluation.evaluate(parse_spec(spec), args.task, budget=args.target, seed=seed, width=w)
        if r.final_loss is not None:
            out[w] = r.final_loss
    return out


def confirm_on_truth(args, contenders: dict[str, str]) -> dict:
    rows = {}
    for label, spec in contenders.items():
        seed0 = frontier_loss(args, spec, 0, args.widths)
        width = min(seed0, key=seed0.get)
        losses = [seed0[width]] + [frontier_loss(args, spec, s, [width])[width] for s in args.seeds[1:]]
        mean, low, high = mean_interval(losses)
        rows[label] = {
            "spec": parse_spec(spec).paper,
            "name": parse_spec(spec).name,
            "width": width,
            "widths_seed0": seed0,
            "losses": losses,
            "mean": mean,
            "ci": [low, high],
        }
        print(f"confirm {label:12s} {spec:28s} w={width} losses={losses}", flush=True)
    tests = {}
    for label in ("search best", "best hand-picked"):
        for ref in ("dense", "btt"):
            if rows[label]["spec"] == rows[ref]["spec"]:
                tests[f"{label} vs {ref}"] = {"verdict": "same structure"}
                continue
            c = paired_comparison(rows[label]["losses"], rows[ref]["losses"], label, ref)
            tests[f"{label} vs {ref}"] = c.model_dump() | {"sentence": c.sentence()}
    return {"rows": rows, "tests": tests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="mlp-regression")
    parser.add_argument("--budget", type=float, default=3e9)
    parser.add_argument("--target", type=float, default=1e11)
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--phase", choices=["search", "confirm", "all"], default="all")
    parser.add_argument("--fresh", action="store_true", help="start the search study anew")
    parser.add_argument("--runs", default="runs/headline")
    parser.add_argument("--cache", default="benchmarks/results/frontier_truth.jsonl")
    parser.add_argument("--out", default="benchmarks/results/frontier_headline.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = Path(args.cache)
    evaluation.evaluate = cached_evaluate(load_cache(path), path, args.task)
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {}
    if args.phase in ("search", "all"):
        if args.phase == "all" or "handpicked" not in doc:
            doc["handpicked"] = score_handpicked(args)
        compute = sum(v["flops"] for v in doc["handpicked"].values())
        doc["handpicked_flops"] = compute
        doc["search"] = run_search(args, compute)
        out.write_text(json.dumps(doc, indent=1))
    if args.phase in ("confirm", "all"):
        hand = {k: v for k, v in doc["handpicked"].items() if v["score"] is not None}
        best_hand = min(hand, key=lambda k: hand[k]["score"])
        contenders = {
            "search best": doc["search"]["best"]["paper"],
            "best hand-picked": best_hand,
            "dense": "dense",
            "btt": "btt",
        }
        doc["confirmation"] = confirm_on_truth(args, contenders)
        doc["settings"] = vars(args)
        out.write_text(json.dumps(doc, indent=1))
    if doc.get("confirmation"):
        write_markdown(doc, out.with_suffix(".md"))
    print(json.dumps({k: doc.get(k) for k in ("search", "confirmation")}, indent=1, default=str)[:3000])


def write_markdown(doc: dict, path: Path) -> None:
    hand = {k: v for k, v in doc["handpicked"].items() if v["score"] is not None}
    best_hand = min(hand, key=lambda k: hand[k]["score"])
    search = doc["search"]
    settings = doc.get("settings", {})
    lines = [
        "# Headline: frontier-scored search vs the paper's 23 hand-picked points, equal compute (mlp-regression)",
        "",
        f"Each candidate: a {settings.get('budget', 3e9):.3g}-FLOP ladder scored by its frontier's predicted MSE at "
        f"{settings.get('target', 1e11):.3g} FLOPs (the search's default scorer). The 23 hand-picked points cost "
        f"{doc['handpicked_flops']:.3g} training FLOPs; the steered search of the `full` space (default pruner: "
        f"successive halving at the second rung) ran until it had spent as much: {search['flops']:.3g} FLOPs, "
        f"{search['trainings']} candidates ({search['statuses']}).",
        "",
        "| by the search's own score | structure | predicted MSE at the target |",
        "|---|---|---:|",
        f"| search's best | {search['best']['paper']} | {search['best']['loss']:.4f} |",
        f"| best hand-picked | {best_hand} | {hand[best_hand]['score']:.4f} |",
        f"| BTT (hand-picked) | (1/2|0|1/2|0|1/2|1/2|0) | {hand['(1/2|0|1/2|0|1/2|1/2|0)']['score']:.4f} |",
        "",
        "Confirmed on the ground truth: each at the target compute, at its frontier width (the best of "
        f"{settings.get('widths')} at seed 0), seeds {settings.get('seeds')}:",
        "",
        "| contender | structure | width | MSE per seed | mean | 95% interval |",
        "|---|---|---:|---|---:|---|",
    ]
    for label, row in doc["confirmation"]["rows"].items():
        lines.append(
            f"| {label} | {row['spec']} | {row['width']} | {', '.join(f'{v:.4f}' for v in row['losses'])} "
            f"| {row['mean']:.4f} | {row['ci'][0]:.4f}-{row['ci'][1]:.4f} |"
        )
    lines += ["", "Paired t-tests over seeds (difference = contender - reference):", ""]
    for name, test in doc["confirmation"]["tests"].items():
        lines.append(f"- {name}: " + test.get("sentence", test.get("verdict", "")))
    if doc.get("search_first_rung_median"):
        m = doc["search_first_rung_median"]
        lines += [
            "",
            f"An earlier run of the same search with the median pruner deciding at the first rung spent the same "
            f"compute on {m['trainings']} candidates ({m['statuses']}); its best scored {m['best']['loss']:.4f} "
            f"({m['best']['paper']}): first-rung pruning explores widely and judges poorly "
            "(benchmarks/results/pruners.md).",
        ]
    flags = (
        f"--budget {settings.get('budget', 3e9):g} --target {settings.get('target', 1e11):g} "
        f"--widths {' '.join(map(str, settings.get('widths', [])))} --out {settings.get('out', '')}"
    )
    lines += ["", f"Command: `python benchmarks/frontier_headline.py {flags} --phase all`."]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
