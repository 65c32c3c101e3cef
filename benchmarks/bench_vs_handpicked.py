"""Automated search versus the paper's hand-picked grid at the same total compute (issue 5, part 9).

Hand-picked: the 23 theta points of taxonomy.md section 8, each trained once on mlp-regression at
the proxy setting of ``bench_steering.py`` (width 64, budget 1e9 FLOPs, seed 0).
Search: ``structsearch.engine.search`` over the ``full`` space (all seven classes, step 1/12)
stopped after 23 trainings (``max_trainings=23``: the same number of training runs, hence the
same total compute), steered and plain TPE. All trainings are real
(``structsearch.evaluation.evaluate``), cached by theta in ``results/grid_cache.json``.
All of it is repeated with training seeds 0, 1 and 2 (paired rounds), so that a difference can be
told from training noise.

Run: .venv/bin/python benchmarks/bench_vs_handpicked.py   (results/vs_handpicked.md, .json)
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_steering import (
    BUDGET,
    RESULTS,
    TASK,
    WIDTH,
    CachedResult,
    evaluate_cached,
    load_cache,
)

N = 23
SEEDS = (0, 1, 2)
HANDPICKED = [
    # full-rank BTT
    "(1/2|0|1/2|0|1/2|1/2|0)",
    "(1/3|0|2/3|0|2/3|1/3|0)",
    "(1/4|0|3/4|0|3/4|1/4|0)",
    "(2/3|0|1/3|0|1/3|2/3|0)",
    "(3/4|0|1/4|0|1/4|3/4|0)",
    # low-rank BTT
    "(2/3|0|1/3|0|2/3|1/3|0)",
    "(1/3|0|2/3|0|1/3|2/3|0)",
    "(3/4|0|1/4|0|3/4|1/4|0)",
    "(1/4|0|3/4|0|1/4|3/4|0)",
    # BTT with rank index
    "(1/2|0|1/2|0|1/2|1/2|1/4)",
    "(1/2|0|1/2|0|1/2|1/2|1/3)",
    "(1/3|0|2/3|0|2/3|1/3|1/4)",
    "(2/3|0|1/3|0|1/3|2/3|1/4)",
    "(2/3|0|1/3|0|2/3|1/3|1/4)",
    "(1/3|0|2/3|0|1/3|2/3|1/4)",
    # Tensor-Train / Kronecker
    "(1/2|1/2|0|1/2|1/2|0|0)",
    "(1/3|2/3|0|1/3|2/3|0|0)",
    "(1/2|1/2|0|1/2|1/2|0|1/4)",
    "(1/3|2/3|0|1/3|2/3|0|1/4)",
    # low rank
    "(1|0|0|0|1|0|3/4)",
    "(1|0|0|0|1|0|1/2)",
    # generic
    "(1/2|1/4|1/4|1/4|1/2|1/4|0)",
    "(1/2|1/4|1/4|1/4|1/2|1/4|1/4)",
]
assert len(HANDPICKED) == N


def main() -> dict[str, Any]:
    import optuna
    import torch

    from structsearch.engine import search
    from structsearch.errors import SizeError
    from structsearch.spec import parse_spec

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cache = load_cache()
    start = time.time()
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    runs_dir = Path(tempfile.mkdtemp(prefix="bench-hand-", dir=base))
    per_seed = []
    try:
        for seed in SEEDS:  # training seed of every training in this round (and the sampler seed)
            hand = []
            for paper in HANDPICKED:
                spec = parse_spec(paper)
                try:
                    entry = evaluate_cached(spec, cache, seed=seed)
                except SizeError as err:
                    entry = {"paper": spec.paper, "status": "padding", "final_loss": None, "reason": str(err)}
                hand.append(
                    {"paper": spec.paper, "name": spec.name, "loss": entry["final_loss"], "status": entry["status"]}
                )
            best_hand = min((h for h in hand if h["loss"] is not None), key=lambda h: h["loss"])
            print(
                f"seed {seed}: hand-picked best {best_hand['paper']} {best_hand['loss']:.4f} "
                f"({time.time() - start:.0f} s)",
                flush=True,
            )

            def cached_eval(spec: Any, _seed: int = seed, **_: Any) -> CachedResult:
                return CachedResult(evaluate_cached(spec, cache, seed=_seed))

            row: dict[str, Any] = {"seed": seed, "handpicked": hand, "best_handpicked": best_hand}
            for label, steer in (("steered", True), ("tpe", False)):
                r = search(
                    "full",
                    task=TASK,
                    budget=BUDGET,
                    trials=2000,
                    max_trainings=N,
                    study=f"{label}-{seed}",
                    steer=steer,
                    seed=seed,
                    width=WIDTH,
                    evaluate_fn=cached_eval,
                    progress=False,
                    runs_dir=runs_dir,
                )
                row[label] = {
                    "trials": r.trials,
                    "trainings": r.evaluated,
                    "best": r.best["paper"],
                    "name": r.best["name"],
                    "loss": r.best["loss"],
                    "omega": r.best["omega"],
                    "psi": r.best["psi"],
                    "nu": r.best["nu"],
                }
                print(
                    f"seed {seed}: {label} {r.evaluated} trainings, {r.trials} trials, best {r.best['paper']} "
                    f"{r.best['loss']:.4f} ({time.time() - start:.0f} s)",
                    flush=True,
                )
            per_seed.append(row)
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)
    out = {
        "setting": {
            "task": TASK,
            "width": WIDTH,
            "budget": BUDGET,
            "trainings": N,
            "space": "full (step 1/12)",
            "seeds": list(SEEDS),
        },
        "per_seed": per_seed,
        "seconds": round(time.time() - start, 1),
    }
    (RESULTS / "vs_handpicked.json").write_text(json.dumps(out, indent=1))
    write_markdown(out)
    return out


def write_markdown(out: dict[str, Any]) -> None:
    import numpy as np

    st = out["setting"]
    lines = [
        "# Automated search vs the paper's hand-picked grid (same compute)",
        "",
        "Command: `.venv/bin/python benchmarks/bench_vs_handpicked.py` (2 shared CPU cores; about 70 s of training "
        f"from a cold cache, {out['seconds']:.0f} s this run with the committed `grid_cache.json`).",
        "",
        f"Setting: {st['task']}, width {st['width']}, budget {st['budget']:.0e} FLOPs per training. Hand-picked: the "
        f"{st['trainings']} points of taxonomy.md section 8. Search: space {st['space']}, stopped after "
        f"{st['trainings']} trainings (the same total compute; analytically settled trials cost none). One round per "
        "training seed (every training of the round uses it; it is also the sampler seed), so each row is a paired "
        "comparison under the same training noise.",
        "",
        "| training seed | best hand-picked | loss | steered: best found | loss | vs hand | plain TPE: best found "
        "| loss | vs hand |",
        "|---:|---|---:|---|---:|---:|---|---:|---:|",
    ]
    rel = {"steered": [], "tpe": []}
    for row in out["per_seed"]:
        bh = row["best_handpicked"]
        cells = [str(row["seed"]), bh["paper"] + (f" ({bh['name']})" if bh.get("name") else ""), f"{bh['loss']:.4f}"]
        for label in ("steered", "tpe"):
            r = row[label]
            rel[label].append(r["loss"] / bh["loss"] - 1)
            cells += [
                r["best"] + (f" ({r['name']})" if r.get("name") else ""),
                f"{r['loss']:.4f}",
                f"{rel[label][-1]:+.1%}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Mean over training seeds, best searched vs best hand-picked: "
        f"steered {np.mean(rel['steered']):+.1%}, plain TPE {np.mean(rel['tpe']):+.1%} "
        "(negative: the search found a better structure).",
        "",
    ]
    for row in out["per_seed"]:
        for label in ("steered", "tpe"):
            r = row[label]
            lines.append(
                f"- seed {row['seed']}, {label}: {r['trials']} trials for {r['trainings']} trainings; best "
                f"omega {r['omega']:.3g}, psi {r['psi']:.3g}, nu {r['nu']:.3g}"
            )
    first = out["per_seed"][0]
    lines += [
        "",
        f"Hand-picked points, training seed {first['seed']}:",
        "",
        "| theta | name | loss |",
        "|---|---|---:|",
    ]
    for h in sorted(first["handpicked"], key=lambda h: (h["loss"] is None, h["loss"] or 0)):
        lines.append(
            f"| {h['paper']} | {h.get('name') or ''} | "
            + (f"{h['loss']:.4f}" if h["loss"] is not None else h["status"])
            + " |"
        )
    (RESULTS / "vs_handpicked.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
    print((RESULTS / "vs_handpicked.md").read_text())
