"""Evaluator throughput (issue 10): achieved FLOP/s, per-step overhead before/after, seed batching.

Sections (each a markdown table; ``--only`` picks some):

- ``peak``: a 1024 x 1024 float32 matmul's GFLOP/s at 1 and 2 torch threads (the machine's dense peak);
- ``achieved``: model training FLOPs / model time (``EvalResult.flops_per_second``) for dense and BTT
  at widths 64-1024 on mlp-regression and char-lm, one thread, with data and evaluation time apart;
- ``overhead``: ms per step with each overhead change off (as main had it) and on, side by side:
  blocked data (``data_block``), deferred loss reads (``READ_EVERY``), AdamW for-loop / foreach / fused /
  flat (``structsearch._flat_adamw``);
- ``seeds``: one seed against S = 4 seeds in one vectorised run (``evaluate(..., seeds=...)``; char-lm,
  which trains its seeds one by one, forced to batch them);
- ``vmap``: the student's forward for one seed, for 4 seeds under vmap, and for 4 seeds written as
  batched ops by hand (baddbmm, relu), side by side: what vmap and functional_call add;
- ``seeds-materialised``: the same 4 seeds with every structured layer on its materialised weight
  under vmap (a rule tried for seed batching and not adopted);
- ``materialise``: the ten candidates of ``bench_goal.py`` scored by the search's default scorer
  (a 3e9-FLOP frontier ladder) with the materialised-weight path off and on, side by side;
- ``flat``: the same ten ladders (and char-lm steps) with torch's foreach AdamW + ``clip_grad_norm_``
  against the flat AdamW (``structsearch._flat_adamw``), side by side, and whether the scores keep their bits;
- ``ladder``: one frontier score (a 3e9-FLOP ladder, the search's default scorer) with 10
  validation marks per rung against the ladder's 5, side by side, and whether the overfitting
  check (the only reader of the marks besides the final loss) decides the same on the recorded
  curves of benchmarks/results/*.jsonl;
- ``compile`` (not in the default run: minutes of inductor compilation): torch.compile's compile
  time against its per-step saving.

Repeats are interleaved and medians reported: the 2 cores are shared with other jobs.

    python benchmarks/bench_throughput.py --out benchmarks/results/throughput.md
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from _machine import cpu_name

import structsearch._train_loop as train_loop
import structsearch.evaluation as evaluation
from structsearch.evaluation import evaluate
from structsearch.tasks import CharLM, MLPRegression

WIDTHS = [64, 128, 256, 512, 1024]


def peak() -> list[str]:
    rows = ["| threads | 1024x1024 sgemm GFLOP/s (median of 5) |", "|---:|---:|"]
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    before = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rates = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(10):
                a @ b
            rates.append(10 * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9)
        rows.append(f"| {threads} | {statistics.median(rates):.1f} |")
    torch.set_num_threads(before)
    return rows


def achieved() -> list[str]:
    rows = [
        "| task | structure | width | steps | ms/step | data ms/step | model GFLOP/s | eval s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    # char-lm at its own default budget: at width 1024 one step costs 4e10 FLOPs
    settings = {"mlp-regression": (1e10, {}), "char-lm": (2e11, {"val_tokens": 1024})}
    for task, (budget, opts) in settings.items():
        for spec in ("dense", "btt"):
            for width in WIDTHS:
                r = evaluate(spec, task, budget=budget, width=width, device="cpu", eval_points=1, task_options=opts)
                ms = 1000 * r.wall_seconds / max(1, r.steps)
                data = 1000 * r.data_seconds / max(1, r.steps)
                rows.append(
                    f"| {task} | {spec} | {width} | {r.steps} | {ms:.1f} | {data:.1f} | "
                    f"{r.flops_per_second / 1e9:.2f} | {r.eval_seconds:.2f} |"
                )
                print(rows[-1], flush=True)
    return rows


def _variant(block: int, read_every: int, optimizer: dict) -> Callable[[], None]:
    def apply() -> None:
        MLPRegression.data_block = block
        CharLM.data_block = block
        train_loop.READ_EVERY = read_every
        evaluation.OPTIMIZER_OPTIONS = optimizer

    return apply


OVERHEAD = {
    "before (main): per-batch data, read every step, AdamW for-loop": _variant(1, 1, {"foreach": False}),
    "+ blocked data (32 batches per teacher forward)": _variant(32, 1, {"foreach": False}),
    "+ deferred loss reads (every 16 steps)": _variant(1, 16, {"foreach": False}),
    "+ AdamW foreach": _variant(1, 1, {"foreach": True}),
    "+ AdamW fused": _variant(1, 1, {"fused": True}),
    "+ AdamW flat (foreach over flat buffers, clipping inside)": _variant(1, 1, {"foreach": True, "flat": True}),
    "blocked, deferred, foreach": _variant(32, 16, {"foreach": True}),
    "blocked, deferred, fused": _variant(32, 16, {"fused": True}),
    "after (the default): blocked, deferred, flat": _variant(32, 16, {"foreach": True, "flat": True}),
}


def overhead(repeats: int) -> list[str]:
    cases = [("mlp-regression", "dense", 128), ("mlp-regression", "btt", 128), ("char-lm", "btt", 64)]
    times: dict[tuple, list[tuple[float, float]]] = {}
    for _ in range(repeats):
        for case in cases:
            for name, apply in OVERHEAD.items():
                apply()
                task, spec, width = case
                r = evaluate(spec, task, steps=150, width=width, device="cpu", eval_points=1)
                times.setdefault((case, name), []).append((r.wall_seconds / r.steps, r.data_seconds / r.steps))
    OVERHEAD["after (the default): blocked, deferred, flat"]()
    rows = ["| task / structure / width | variant | ms/step | data ms/step | vs before |", "|---|---|---:|---:|---:|"]
    for case in cases:
        base = None
        for name in OVERHEAD:
            ms = 1000 * statistics.median(t for t, _ in times[(case, name)])
            data = 1000 * statistics.median(d for _, d in times[(case, name)])
            base = base or ms
            rows.append(f"| {' / '.join(map(str, case))} | {name} | {ms:.2f} | {data:.2f} | {base / ms:.2f}x |")
    return rows


def seeds(repeats: int) -> list[str]:
    """One seed against 4 seeds in one vectorised run; char-lm forced to batch (its default is one by one)."""
    cases = [("mlp-regression", s, w) for w in (64, 128, 256) for s in ("dense", "btt")]
    cases += [("char-lm", s, w) for w in (32, 64, 128) for s in ("dense", "btt")]
    times: dict[tuple, list[float]] = {}
    default = CharLM.batch_seeds
    try:
        CharLM.batch_seeds = True  # measure what batching would cost, which is why it is off there
        for _ in range(repeats):
            for task, spec, width in cases:
                kw = {"steps": 40, "width": width, "device": "cpu", "eval_points": 1}
                one = evaluate(spec, task, **kw)
                four = evaluate(spec, task, seeds=[0, 1, 2, 3], **kw)
                times.setdefault((task, spec, width), []).append((one.wall_seconds, four.wall_seconds))
    finally:
        CharLM.batch_seeds = default
    rows = ["| task | structure | width | 1 seed ms/step | 4 seeds ms/step | cost of 4 / cost of 1 |"]
    rows.append("|---|---|---:|---:|---:|---:|")
    for key, pairs in times.items():
        one = statistics.median(a for a, _ in pairs) / 40 * 1000
        four = statistics.median(b for _, b in pairs) / 40 * 1000
        rows.append(f"| {' | '.join(map(str, key))} | {one:.1f} | {four:.1f} | {four / one:.2f} |")
    return rows


def vmap_cost(repeats: int) -> list[str]:
    """What vmap adds: the mlp-regression student's forward (no grad), one seed, 4 seeds under vmap, 4 by hand."""
    rows = ["| width | 1 seed ms | 4 seeds under vmap ms | 4 seeds as batched ops by hand ms | vmap / by hand |"]
    rows.append("|---:|---:|---:|---:|---:|")
    return rows + [_vmap_row(width, repeats) for width in (64, 128, 256)]


def _median_ms(fn: Callable[[], object], repeats: int, n: int = 200) -> float:
    samples = []
    for _ in range(repeats):
        for _ in range(20):
            fn()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n * 1000)
    return statistics.median(samples)


def _vmap_row(width: int, repeats: int) -> str:
    from torch.func import functional_call, stack_module_state, vmap

    from structsearch.tasks import get_task

    task = get_task("mlp-regression")
    spec = evaluation._load_spec("dense")
    models = [evaluation._build(spec, task, width, seed, torch.device("cpu"))[0] for seed in range(4)]
    params, buffers = stack_module_state(models)
    x = torch.randn(4, task.batch_size, task.input_dim)
    y = torch.stack([task.targets(xi) for xi in x])
    base = models[0]
    under_vmap = vmap(lambda p, b, xx, yy: task.loss(lambda *a: functional_call(base, (p, b), a), (xx, yy)))
    names = ["inp", *[f"hidden.{k}" for k in range(len(base.hidden))], "out"]
    layers = [(params[f"{n}.weight"].transpose(1, 2), params[f"{n}.bias"].unsqueeze(1)) for n in names]

    def by_hand() -> torch.Tensor:  # the same forward as baddbmm (bias included) and relu, no vmap
        h = x
        for k, (weight, bias) in enumerate(layers):
            h = torch.baddbmm(bias, h, weight)
            h = h.relu() if k < len(layers) - 1 else h
        return (h - y).pow(2).mean(dim=(1, 2))

    with torch.no_grad():
        assert torch.allclose(under_vmap(params, buffers, x, y), by_hand(), rtol=1e-4)
        solo = _median_ms(lambda: task.loss(base, (x[0], y[0])), repeats)
        batched = _median_ms(lambda: under_vmap(params, buffers, x, y), repeats)
        hand = _median_ms(by_hand, repeats)
    return f"| {width} | {solo:.3f} | {batched:.3f} | {hand:.3f} | {batched / hand:.2f} |"


def seeds_materialised(repeats: int) -> list[str]:
    """4 seeds under vmap with every structured layer on its materialised weight, against the default paths."""
    import structsearch.layers._fast_paths as fast_paths

    default = fast_paths.MATERIALISE_AT
    specs, times = ("btt", "low-rank:0.5", "kronecker", "tt:0"), {}
    try:
        for _ in range(repeats):
            for width in (64, 128, 256):
                for spec in specs:
                    kw = {"steps": 60, "width": width, "device": "cpu", "eval_points": 1}
                    fast_paths.MATERIALISE_AT = default
                    solo = evaluate(spec, "mlp-regression", **kw)
                    times.setdefault((width, spec, "solo"), []).append(solo.wall_seconds)
                    for name, threshold in (("default", default), ("all materialised", 0.0)):
                        fast_paths.MATERIALISE_AT = threshold
                        r = evaluate(spec, "mlp-regression", seeds=[0, 1, 2, 3], **kw)
                        times.setdefault((width, spec, name), []).append(r.wall_seconds)
    finally:
        fast_paths.MATERIALISE_AT = default
    rows = ["| width | structure | 1 seed ms/step | 4 seeds, default paths | 4 seeds, all materialised |"]
    rows.append("|---:|---|---:|---:|---:|")
    for width in (64, 128, 256):
        for spec in specs:
            kinds = ("solo", "default", "all materialised")
            solo, base, mat = (statistics.median(times[(width, spec, k)]) for k in kinds)
            rows.append(
                f"| {width} | {spec} | {1000 * solo / 60:.2f} | {1000 * base / 60:.2f} ({base / solo:.2f}x) | "
                f"{1000 * mat / 60:.2f} ({mat / solo:.2f}x) |"
            )
    return rows


def _against_first(times: dict[tuple[str, str], list[float]], specs: list[str], variants: list[str]) -> Iterator[tuple]:
    """(structure, variant, median, speed-up against that structure's first variant), in table order."""
    for spec in specs:
        base = statistics.median(times[(spec, variants[0])])
        for name in variants:
            median = statistics.median(times[(spec, name)])
            yield spec, name, median, base / median


def ladder(repeats: int) -> list[str]:
    import json

    from structsearch.frontier import OVERFIT_RISE, Ladder

    specs = ["dense", "btt", "kronecker", "(1/2|0|1/2|1/6|1/2|1/3|0)"]
    variants = {"10 marks per rung (before)": Ladder(eval_points=10), "5 marks (the default)": Ladder()}
    plans = {name: functools.partial(dict, ladder=plan) for name, plan in variants.items()}  # frontier_score(ladder=)
    times, scores = _time_ladders(specs, plans, repeats)
    rows = ["| structure | marks | ladder s (median) | speed-up | score |", "|---|---|---:|---:|---:|"]
    for spec, name, t, speedup in _against_first(times, specs, list(variants)):
        rows.append(f"| {spec} | {name} | {t:.3f} | {speedup:.2f}x | {scores[(spec, name)]:.5f} |")
    n = same = flagged = 0
    for path in Path("benchmarks/results").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            vals = [v for _, v in (row.get("curve") or [])[1:]]
            if len(vals) != 10 or None in vals or row.get("final_loss") is None:
                continue
            every = row["final_loss"] > (1 + OVERFIT_RISE) * min(vals)
            fifth = row["final_loss"] > (1 + OVERFIT_RISE) * min(vals[1::2])  # the 20%, 40%, ... marks
            n, same, flagged = n + 1, same + (every == fifth), flagged + every
    rows += [
        "",
        f"Overfitting check on {n:,} recorded 10-mark curves: the same decision from every second mark "
        f"(5 marks) on {same:,} ({flagged} curves flagged with 10 marks).",
    ]
    return rows


def _time_ladders(
    specs: list[str], variants: dict[str, Callable[[], dict[str, Any]]], repeats: int
) -> tuple[dict[tuple[str, str], list[float]], dict[tuple[str, str], float | None]]:
    """Each structure by the search's default scorer (3e9 FLOPs, target 3e10), the variants interleaved.

    A variant prepares its run and returns ``frontier_score``'s extra keyword arguments. Returns
    ``(structure, variant) -> seconds per repeat`` and ``-> score``.
    """
    from structsearch.frontier import frontier_score

    times: dict[tuple[str, str], list[float]] = {}
    scores: dict[tuple[str, str], float | None] = {}
    for spec in specs:  # warm the per-process caches (teacher, validation set, FLOP accounts)
        frontier_score(spec, "mlp-regression", 3e8, target_flops=3e9, threads=1)
    for _ in range(repeats):
        for spec in specs:
            for name, prepare in variants.items():
                extra = prepare()
                start = time.perf_counter()
                r = frontier_score(spec, "mlp-regression", 3e9, target_flops=3e10, threads=1, **extra)
                times.setdefault((spec, name), []).append(time.perf_counter() - start)
                scores[(spec, name)] = r.score
    return times, scores


def _goal_specs() -> list[str]:
    """bench_goal.py's ten candidates: dense, BTT, low rank, Kronecker, TT and five seeded random points."""
    from bench_goal import NAMED, random_canonical

    return NAMED + [random_canonical(seed) for seed in range(5)]


def _setting(owner: Any, name: str, value: Any) -> Callable[[], dict[str, Any]]:
    """A variant that sets ``owner.name = value`` before its run and passes no extra arguments."""

    def prepare() -> dict[str, Any]:
        setattr(owner, name, value)
        return {}

    return prepare


def materialise(repeats: int) -> list[str]:
    """The goal list's ten candidates by the search's default scorer, the materialised path off and on."""
    import structsearch.layers._fast_paths as fast_paths
    from structsearch.layers import EinsumLinear

    variants = {"structural (off)": float("inf"), "materialised (the default)": fast_paths.MATERIALISE_AT}
    try:
        specs = _goal_specs()
        times, scores = _time_ladders(
            specs, {name: _setting(fast_paths, "MATERIALISE_AT", t) for name, t in variants.items()}, repeats
        )
    finally:
        fast_paths.MATERIALISE_AT = variants["materialised (the default)"]
    rows = ["| structure | MACs / dense at width 128 | path | ladder s (median) | speed-up | score |"]
    rows.append("|---|---:|---|---:|---:|---:|")
    totals = dict.fromkeys(variants, 0.0)
    for spec, name, t, speedup in _against_first(times, specs, list(variants)):
        layer = EinsumLinear(spec, 128, 128, device="meta")
        ratio = layer.macs / 128**2 if layer.structural_path != "dense" else 1.0
        totals[name] += t
        score = scores[(spec, name)]
        rows.append(
            f"| {spec} | {ratio:.2f} | {name} | {t:.3f} | {speedup:.2f}x | {'-' if score is None else f'{score:.5f}'} |"
        )
    off, on = totals.values()
    rows += ["", f"All ten ladders: {off:.2f} s structural, {on:.2f} s with materialisation ({off / on:.2f}x)."]
    return [*rows, "", *_materialise_char_lm(repeats, variants)]


def flat_optimizer(repeats: int) -> list[str]:
    """The goal list's ten candidates by the search's default scorer, and char-lm steps, foreach AdamW against flat."""
    variants = {"foreach + clip_grad_norm_": {"foreach": True}, "flat (the default)": {"foreach": True, "flat": True}}
    prepares = {name: _setting(evaluation, "OPTIMIZER_OPTIONS", o) for name, o in variants.items()}
    try:
        specs = _goal_specs()
        times, scores = _time_ladders(specs, prepares, repeats)
        for _ in range(repeats):
            for spec in ("dense", "btt"):
                for name, prepare in prepares.items():
                    prepare()
                    r = evaluate(spec, "char-lm", steps=40, eval_points=1, device="cpu")
                    times.setdefault((f"char-lm {spec}", name), []).append(r.wall_seconds)
                    scores[(f"char-lm {spec}", name)] = r.final_loss
    finally:
        evaluation.OPTIMIZER_OPTIONS = variants["flat (the default)"]
    rows = ["| structure | optimiser | s (median) | speed-up | score | same bits |", "|---|---|---:|---:|---:|---|"]
    totals = dict.fromkeys(variants, 0.0)
    names = list(variants)
    for spec, name, t, speedup in _against_first(times, [*specs, "char-lm dense", "char-lm btt"], names):
        totals[name] += t if not spec.startswith("char-lm") else 0.0
        score, first = scores[(spec, name)], scores[(spec, names[0])]
        text = "-" if score is None else f"{score:.6f}"
        rows.append(f"| {spec} | {name} | {t:.3f} | {speedup:.2f}x | {text} | {'yes' if score == first else 'NO'} |")
    before, after = totals.values()
    rows += [
        "",
        f"mlp-regression rows: a frontier ladder (3e9 FLOPs, target 3e10); char-lm rows: 40 steps at width 64. "
        f"All ten ladders: {before:.2f} s foreach, {after:.2f} s flat ({before / after:.2f}x).",
    ]
    return rows


def _materialise_char_lm(repeats: int, variants: dict[str, float]) -> list[str]:
    """ms per char-lm step (its default width) of issue 10's unit-contraction structure, off and on."""
    import structsearch.layers._fast_paths as fast_paths

    specs = ["(0|0|1|0|1/6|5/6|0)", "btt", "dense"]
    times: dict[tuple[str, str], list[float]] = {}
    try:
        for _ in range(repeats):
            for spec in specs:
                for name, threshold in variants.items():
                    fast_paths.MATERIALISE_AT = threshold
                    r = evaluate(spec, "char-lm", steps=20, eval_points=1, device="cpu")
                    times.setdefault((spec, name), []).append(1000 * r.wall_seconds / 20)
    finally:
        fast_paths.MATERIALISE_AT = variants["materialised (the default)"]
    rows = ["| char-lm structure (width 64) | path | ms/step (median) | speed-up |", "|---|---|---:|---:|"]
    for spec, name, ms, speedup in _against_first(times, specs, list(variants)):
        rows.append(f"| {spec} | {name} | {ms:.1f} | {speedup:.2f}x |")
    return rows


def compile_cost() -> list[str]:
    """torch.compile (inductor) of the mlp-regression student: compile time against the per-step saving."""
    from structsearch.evaluation import _build
    from structsearch.spec import parse_spec
    from structsearch.tasks import get_task

    task, dev = get_task("mlp-regression"), torch.device("cpu")
    rows = ["| structure | eager ms/step | compiled ms/step | compile s (first step) | break-even steps |"]
    rows.append("|---|---:|---:|---:|---:|")
    for spec in ("dense", "btt"):
        model, _ = _build(parse_spec(spec), task, 128, 0, dev)
        batches = task.train_batches(torch.Generator().manual_seed(0), dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)

        def step(m: torch.nn.Module, batches: object = batches, opt: torch.optim.Optimizer = opt) -> None:
            loss = task.loss(m, next(batches))
            opt.zero_grad()
            loss.backward()
            opt.step()

        def per_step(m: torch.nn.Module, n: int = 50) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                step(m)
            return (time.perf_counter() - t0) / n

        for _ in range(5):
            step(model)
        eager = per_step(model)
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        step(compiled)
        first = time.perf_counter() - t0
        for _ in range(5):
            step(compiled)
        fast = per_step(compiled)
        even = f"{first / (eager - fast):.0f}" if eager > fast else "never"
        rows.append(f"| {spec} | {1000 * eager:.1f} | {1000 * fast:.1f} | {first:.1f} | {even} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        nargs="*",
        choices=[
            "peak",
            "achieved",
            "overhead",
            "seeds",
            "seeds-materialised",
            "vmap",
            "ladder",
            "materialise",
            "flat",
            "compile",
        ],
        default=["peak", "achieved", "overhead", "seeds", "ladder"],
        help="sections to run (default: all but compile)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the tables to this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cpu = cpu_name()
    out = [
        "# Evaluator throughput (issue 10)",
        "",
        f"Machine: {cpu}, {os.cpu_count()} cores, shared with other jobs (load average "
        f"{os.getloadavg()[0]:.1f} at the start); torch {torch.__version__}, one thread per run unless said. "
        f"Command: `python benchmarks/bench_throughput.py --only {' '.join(args.only)} --repeats {args.repeats}`. "
        "Timings are noisy: repeats interleaved, medians.",
    ]
    sections = {
        "peak": ("Dense matmul peak", peak),
        "achieved": ("Achieved FLOP/s (one run each)", achieved),
        "overhead": (
            f"Per-step overhead, each change alone (median of {args.repeats})",
            lambda: overhead(args.repeats),
        ),
        "seeds": (f"Seed batching, 40 steps (median of {args.repeats})", lambda: seeds(args.repeats)),
        "vmap": (
            f"What vmap adds to a forward, mlp-regression dense (median of {args.repeats})",
            lambda: vmap_cost(args.repeats),
        ),
        "seeds-materialised": (
            f"Seed batching with every layer materialised, 60 steps (median of {args.repeats})",
            lambda: seeds_materialised(args.repeats),
        ),
        "ladder": (
            f"Validation marks per frontier rung, mlp-regression (median of {args.repeats})",
            lambda: ladder(args.repeats),
        ),
        "materialise": (
            f"Materialised weight: the goal list by the default frontier score, 3e9 FLOPs (median of {args.repeats})",
            lambda: materialise(args.repeats),
        ),
        "flat": (
            f"Flat AdamW against foreach: the goal list by the default frontier score (median of {args.repeats})",
            lambda: flat_optimizer(args.repeats),
        ),
        "compile": ("torch.compile (inductor), mlp-regression width 128, one run", compile_cost),
    }
    for key in args.only:
        title, fn = sections[key]
        rows = fn()
        out += ["", f"## {title}", "", *rows]
        print("\n".join(["", f"## {title}", "", *rows]), flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
