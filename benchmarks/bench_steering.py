"""Does taxonomy steering find a good structure in fewer trials than plain TPE or random search?

Protocol (issue 5, part 3):

1. The grid: every canonical point of the full 7-class space on the lattice of thirds, one per
   integer size pattern at width 64 (``candidate_pool`` of the ``grid-thirds`` space below).
   Each is trained ONCE with the real evaluator (mlp-regression, width 64, budget 1e9 FLOPs,
   seed 0) and cached in ``benchmarks/results/grid_cache.json``.
2. The target: the best grid loss; a search "hits" when it trains a structure within 2% of it.
3. Three strategies through the real ``structsearch.engine.search`` (same objective, same
   canonicalisation and settlement), answered from the cache: steered (TaxonomySampler,
   surrogate mode), plain TPE over raw theta (``--no-steer``), random over raw theta
   (``--sampler random --no-steer``); many seeds each.
4. Reported per strategy: trials until the first hit (all trials, settled ones included) and
   trainings until the first hit (what costs compute), median / mean / worst over seeds.

Run:  .venv/bin/python benchmarks/bench_steering.py            (grid phase resumes from the cache)
      .venv/bin/python benchmarks/bench_steering.py --phase search --seeds 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = RESULTS / "grid_cache.json"
TASK = "mlp-regression"
WIDTH = 64
BUDGET = 1e9
SEED = 0
HIT_TOLERANCE = 0.02
GRID_SPACE = {
    "name": "grid-thirds",
    "description": "full space on the lattice of thirds",
    "step": "1/3",
    "rho": [0, 1],
    "constraints": {"nu_max": 1, "max_padding": 0.15},
}


# -- the cache of real evaluations (shared with bench_vs_handpicked.py) -----------------------
def load_cache() -> dict[str, Any]:
    if CACHE.exists():
        return json.loads(CACHE.read_text())
    return {"setting": {"task": TASK, "width": WIDTH, "budget": BUDGET, "seed": SEED}, "results": {}}


def save_cache(cache: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = CACHE.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
    tmp.replace(CACHE)


def _store(cache: dict[str, Any], seed: int) -> dict[str, Any]:
    """The cache's results for one training seed (seed 0 in ``results``, others in ``by_seed``)."""
    return cache["results"] if seed == SEED else cache.setdefault("by_seed", {}).setdefault(str(seed), {})


def evaluate_cached(spec: Any, cache: dict[str, Any], threads: int = 1, seed: int = SEED) -> dict[str, Any]:
    """The cached result of ``spec`` at the proxy setting (training seed ``seed``), training it on a miss."""
    from structsearch.spec import parse_spec

    spec = parse_spec(spec)
    key = spec.paper
    store = _store(cache, seed)
    hit = store.get(key)
    if hit is not None:
        return hit
    import torch

    from structsearch.evaluation import evaluate

    torch.set_num_threads(threads)
    start = time.time()
    r = evaluate(spec, TASK, budget=BUDGET, seed=seed, width=WIDTH)
    entry = {
        "theta": list(spec.theta),
        "paper": key,
        "name": spec.name,
        "status": r.status,
        "final_loss": r.final_loss,
        "train_flops": r.train_flops,
        "steps": r.steps,
        "params": r.params,
        "macs": r.macs,
        "width": r.width,
        "reason": r.reason,
        "seconds": round(time.time() - start, 2),
    }
    store[key] = entry
    save_cache(cache)
    return entry


class CachedResult:
    """An EvalResult-like view of a cache entry (what the search objective reads)."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.final_loss = entry["final_loss"]
        self.status = entry["status"]
        self.diverged = entry["status"] == "diverged"
        self.reason = entry.get("reason")
        self.train_flops = entry["train_flops"]
        self.steps = entry["steps"]
        self.wall_seconds = entry.get("seconds", 0.0)
        self.params = entry["params"]
        self.macs = entry["macs"]
        self.width = entry["width"]


def grid_points() -> list[Any]:
    from structsearch.engine import candidate_pool, load_space
    from structsearch.spec import Spec

    pool = candidate_pool(load_space(GRID_SPACE), WIDTH)
    return [Spec.from_theta(t) for t in pool.thetas]


def phase_grid(threads: int, train_seeds: list[int]) -> None:
    cache = load_cache()
    points = grid_points()
    start = time.time()
    for seed in train_seeds:
        print(
            f"grid, training seed {seed}: {len(points)} canonical points (thirds, width {WIDTH}); "
            f"cached {len(_store(cache, seed))}",
            flush=True,
        )
        for i, spec in enumerate(points):
            fresh = spec.paper not in _store(cache, seed)
            entry = evaluate_cached(spec, cache, threads=threads, seed=seed)
            if fresh:
                print(
                    f"[{i + 1}/{len(points)}] {spec.paper} {entry['status']} loss={entry['final_loss']} "
                    f"({entry['seconds']} s, total {time.time() - start:.0f} s)",
                    flush=True,
                )


# -- the search comparison ---------------------------------------------------------------------
STRATEGIES = {
    # name: (sampler, steer, what it is)
    "steered": ("tpe", True, "TaxonomySampler: canonical pool, prior start-up, GP in (omega, psi, nu, theta)"),
    "steered-random": ("random", True, "canonical pool, prior start-up, then uniform (ablation: no surrogate)"),
    "tpe": ("tpe", False, "plain Optuna TPE over the raw theta parameters"),
    "random": ("random", False, "plain Optuna random sampling over the raw theta parameters"),
}


def _grid_table(cache: dict[str, Any], train_seed: int = SEED) -> tuple[dict[str, dict[str, Any]], float]:
    """Grid results keyed by integer sizes at the proxy width, and the best grid loss."""
    from structsearch.engine import sizes_key
    from structsearch.sizes import class_sizes

    by_sizes = {}
    for spec in grid_points():
        entry = _store(cache, train_seed)[spec.paper]
        by_sizes[sizes_key(class_sizes(spec, WIDTH, WIDTH).as_dict.values())] = entry
    losses = [e["final_loss"] for e in by_sizes.values() if e["final_loss"] is not None]
    return by_sizes, min(losses)


def run_strategy(
    name: str,
    seed: int,
    cap: int,
    runs_dir: Path,
    by_sizes: dict[str, Any],
    target: float,
    cache: dict[str, Any],
    space: dict[str, Any] | None = None,
    is_hit: Any = None,
) -> dict[str, Any]:
    """One search of strategy ``name`` until it trains a hit: by default a point whose loss is within
    ``HIT_TOLERANCE`` (relative) of ``target``; ``is_hit(paper, loss)`` judges it otherwise."""
    import optuna

    from structsearch.engine import search, sizes_key
    from structsearch.sizes import class_sizes

    sampler, steer, _ = STRATEGIES[name]
    trained: list[str] = []

    def lookup(spec: Any, **_: Any) -> CachedResult:
        key = sizes_key(class_sizes(spec, WIDTH, WIDTH).as_dict.values())
        entry = by_sizes.get(key) or evaluate_cached(spec, cache)  # off-grid: train it (never happened so far)
        trained.append(spec.paper)
        return CachedResult(entry)

    hit: dict[str, Any] = {}

    def stop_at_hit(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        loss = trial.user_attrs.get("loss")
        if loss is None or hit:
            return False
        if is_hit(trial.user_attrs["paper"], loss) if is_hit else loss <= target * (1 + HIT_TOLERANCE):
            done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.number <= trial.number]
            hit.update(trials=len(done), trainings=len(trained), paper=trial.user_attrs["paper"], loss=loss)
            return True
        return False

    start = time.time()
    study = f"{name}-{seed}-{len(list(runs_dir.iterdir()))}"
    search(
        space or GRID_SPACE,
        task=TASK,
        budget=BUDGET,
        trials=cap,
        study=study,
        storage=None,
        sampler=sampler,
        steer=steer,
        seed=seed,
        width=WIDTH,
        evaluate_fn=lookup,
        progress=False,
        runs_dir=runs_dir,
        callbacks=[stop_at_hit],
    )
    return {
        "strategy": name,
        "seed": seed,
        "hit": bool(hit),
        "trials": hit.get("trials", cap),
        "trainings": hit.get("trainings", len(trained)),
        "found": hit.get("paper"),
        "loss": hit.get("loss"),
        "seconds": round(time.time() - start, 2),
    }


def _summary(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    import numpy as np

    v = np.array([r[key] for r in rows], dtype=float)
    h = np.array([r[key] for r in rows if r["hit"]], dtype=float)
    return {
        "median": float(np.median(v)),
        "mean": float(v.mean()),
        "p90": float(np.quantile(v, 0.9)),
        "worst": float(v.max()),
        "hits": int(sum(r["hit"] for r in rows)),
        "runs": len(rows),
        "median_of_hits": float(np.median(h)) if len(h) else None,
    }


def phase_search(seeds: int, cap: int, strategies: list[str], train_seeds: list[int]) -> dict[str, Any]:
    """Every strategy x sampler seed on every landscape (the grid trained with one training seed)."""
    import shutil
    import tempfile

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cache = load_cache()
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    runs_dir = Path(tempfile.mkdtemp(prefix="bench-steering-", dir=base))
    rows, landscapes, sensitivity_rows = [], {}, {}
    try:
        for train_seed in train_seeds:
            by_sizes, target = _grid_table(cache, train_seed)
            within = sum(
                1
                for e in by_sizes.values()
                if e["final_loss"] is not None and e["final_loss"] <= target * (1 + HIT_TOLERANCE)
            )
            best = min(by_sizes.values(), key=lambda e: e["final_loss"] if e["final_loss"] is not None else 1e9)
            landscapes[str(train_seed)] = {
                "points": len(by_sizes),
                "best_loss": target,
                "best": best["paper"],
                "within_tolerance": within,
            }
            print(
                f"landscape (training seed {train_seed}): {len(by_sizes)} points, best {best['paper']} "
                f"{target:.5g}, {within} within {HIT_TOLERANCE:.0%}",
                flush=True,
            )
            for name in strategies:
                for seed in range(seeds):
                    row = run_strategy(name, seed, cap, runs_dir, by_sizes, target, cache)
                    row["landscape"] = train_seed
                    rows.append(row)
                    print(
                        f"  {name:15s} seed {seed:2d}: hit={row['hit']} trials={row['trials']:4d} "
                        f"trainings={row['trainings']:4d} ({row['seconds']} s)",
                        flush=True,
                    )
            # sensitivity of steering to the prior's nu weight (default 0: the paper says nu matters little)
            for nu_weight in (0.0, 0.5, 1.0):
                space = {**GRID_SPACE, "steering": {"nu_weight": nu_weight}}
                sensitivity_rows.setdefault(str(nu_weight), []).extend(
                    run_strategy("steered", seed, cap, runs_dir, by_sizes, target, cache, space=space)
                    for seed in range(seeds)
                )
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)
    sensitivity = {k: _summary(v, "trainings") for k, v in sensitivity_rows.items()}
    summary = {
        name: {
            "trials": _summary([r for r in rows if r["strategy"] == name], "trials"),
            "trainings": _summary([r for r in rows if r["strategy"] == name], "trainings"),
        }
        for name in strategies
    }
    out = {
        "setting": {
            "task": TASK,
            "width": WIDTH,
            "budget": BUDGET,
            "train_seeds": train_seeds,
            "grid_points": len(grid_points()),
            "tolerance": HIT_TOLERANCE,
            "seeds": seeds,
            "cap_trials": cap,
            "space": GRID_SPACE,
        },
        "landscapes": landscapes,
        "strategies": {k: STRATEGIES[k][2] for k in strategies},
        "summary": summary,
        "nu_weight_sensitivity": sensitivity,
        "runs": rows,
    }
    (RESULTS / "steering.json").write_text(json.dumps(out, indent=1))
    _write_markdown(out)
    return out


def _write_markdown(out: dict[str, Any]) -> None:
    st = out["setting"]
    seeds_text = ",".join(str(x) for x in st["train_seeds"])
    land = "; ".join(
        f"training seed {k}: best {v['best']} {v['best_loss']:.4f}, {v['within_tolerance']} within "
        f"{st['tolerance']:.0%}"
        for k, v in out["landscapes"].items()
    )
    lines = [
        "# Taxonomy steering vs plain TPE vs random search",
        "",
        "Command: `.venv/bin/python benchmarks/bench_steering.py --train-seeds "
        f"{seeds_text} --seeds {st['seeds']} --cap {st['cap_trials']}` (grid phase, then search phase). "
        "Machine: 2 shared CPU cores.",
        "",
        f"Grid: {st['grid_points']} canonical points of the full space on the lattice of thirds (one per integer size "
        f"pattern at width {st['width']}), each trained once on {st['task']} (width {st['width']}, budget "
        f"{st['budget']:.0e} FLOPs) per training seed and cached in `grid_cache.json`. Each training seed gives one "
        f"landscape ({land}).",
        "",
        "Each search runs the real `structsearch.engine.search` (same canonicalisation and analytic settlement) "
        "with the evaluator answered from the cache, until it trains a structure within 2% of the best grid loss "
        f"(capped at {st['cap_trials']} trials; a run that never hits counts as the cap), {st['seeds']} sampler seeds "
        f"on each of the {len(st['train_seeds'])} landscapes. `trials` counts every "
        "finished trial (analytically settled ones included), `trainings` only those that trained a model.",
        "",
        "A run that never hits is counted at the cap for trials; its trainings are then only what it had trained "
        "when it gave up (a lower bound), so the `trainings, hits only` column is the fair compute comparison.",
        "",
        "| strategy | hits | trials to hit: median | mean | p90 | worst | trainings: median | mean | "
        "trainings, hits only: median |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in out["summary"].items():
        t, e = s["trials"], s["trainings"]
        hit_median = "-" if e["median_of_hits"] is None else f"{e['median_of_hits']:.1f}"
        lines.append(
            f"| {name} | {t['hits']}/{t['runs']} | {t['median']:.1f} | {t['mean']:.1f} | {t['p90']:.1f} | "
            f"{t['worst']:.0f} | {e['median']:.1f} | {e['mean']:.1f} | {hit_median} |"
        )
    lines += ["", "Strategies:", ""]
    lines += [f"- **{k}**: {v}" for k, v in out["strategies"].items()]
    sens = out.get("nu_weight_sensitivity", {})
    if sens:
        lines += [
            "",
            "Sensitivity of steering to the prior's nu weight (trainings to hit; the shipped default is 0, "
            "the paper's 'nu matters little'; at a fixed width and budget a cheaper structure gets more steps, "
            "which a positive weight encodes):",
            "",
            "| nu_weight | median | mean | p90 | worst | hits |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for k, v in sens.items():
            lines.append(
                f"| {k} | {v['median']:.1f} | {v['mean']:.1f} | {v['p90']:.1f} | {v['worst']:.0f} | "
                f"{v['hits']}/{v['runs']} |"
            )
    summ = out["summary"]
    if "steered" in summ and "tpe" in summ:
        ratio = summ["steered"]["trials"]["median"] / max(summ["tpe"]["trials"]["median"], 1e-9)
        verdict = "met" if ratio <= 0.5 else "NOT met"
        lines += ["", f"Steered / plain TPE, median trials to hit: {ratio:.2f} (target <= 0.5: {verdict})."]
        se, te = summ["steered"]["trainings"]["median_of_hits"], summ["tpe"]["trainings"]["median_of_hits"]
        if se is not None and te is not None:
            lines += [
                f"Steered / plain TPE, median trainings to hit over the runs that hit: {se / te:.2f} "
                f"({se:.1f} vs {te:.1f}; TPE hit in {summ['tpe']['trials']['hits']} of "
                f"{summ['tpe']['trials']['runs']} runs)."
            ]
        spread = summ["steered"]["trials"]
        if spread["worst"] - spread["median"] < 1:
            lines += [
                "",
                "Caveat: training is deterministic and cached and the steered sampler is deterministic up "
                "to ties, so on one landscape its seeds follow (almost) the same path; its spread comes from "
                "the landscapes. Plain TPE and random also differ by sampler seed.",
            ]
    lines += [
        "",
        "Caveats: the steering design (medoid start-up spread in taxonomy coordinates, the linear trend in "
        "the surrogate's kernel) was revised once after a first run of this benchmark (then: 0.63x plain TPE's "
        "trials on 2 sampler seeds, one landscape), so this is not a held-out test. At 1e9 FLOPs the training "
        "noise (across the three training seeds the loss of one structure spreads by a median 10%, up to 24%) "
        "is far larger than the "
        "2% tolerance: the benchmark measures search efficiency on fixed landscapes, not which structure is "
        "best.",
    ]
    (RESULTS / "steering.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=["grid", "search", "all", "table"], default="all")
    parser.add_argument("--seeds", type=int, default=10, help="sampler seeds per landscape")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cap", type=int, default=600, help="most trials per search")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--train-seeds", default="0,1,2", help="training seeds of the grid (one landscape each)")
    args = parser.parse_args()
    if args.phase in ("grid", "all"):
        phase_grid(args.threads, [int(x) for x in args.train_seeds.split(",")])
    if args.phase == "table":
        _write_markdown(json.loads((RESULTS / "steering.json").read_text()))
        print((RESULTS / "steering.md").read_text())
    if args.phase in ("search", "all"):
        phase_search(args.seeds, args.cap, args.strategies.split(","), [int(x) for x in args.train_seeds.split(",")])
        print((RESULTS / "steering.md").read_text())
    sys.exit(0)
