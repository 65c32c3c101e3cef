"""Forward+backward time per token of BTT-MoE (E = 8, k = 2) against BTT of rank 1 and rank 8 (issue 11).

Contenders at each width d (d x d layers, float32, CPU), side by side in one run and
interleaved round by round, so a shared machine slows each alike; medians of ``--reps``:

- ``btt r=1``: ``EinsumLinear("btt")``, one rank-one BTT term (what one expert costs);
- ``btt r=8``: BTT of BTT-rank 8, i.e. all 8 experts' terms for every token (dense-materialised BTT-MoE);
- ``btt-moe E=8 k=2``: :class:`structsearch.layers.BTTMoE`, router spread by random weights (a trained
  router's balanced load; a zero router sends every token to the same two experts, at the same cost);
- ``btt r=1 on k*n``: rank-one BTT on the k*n (token, expert) rows in one call: the experts' GEMM work
  without routing. ``routing overhead = btt-moe - btt r=1 on k*n``: the router GEMM, top-k, sort,
  gather, scatter and the E separate (smaller) GEMM calls.

Targets: btt-moe <= 1.5x btt r=1, and clearly below btt r=8 (sparsity real in wall time).
Timed with one torch thread, by this thread's CPU time (``time.thread_time``: other jobs on
a shared machine do not inflate it) and by wall time.

    python benchmarks/bench_moe_layers.py --markdown benchmarks/results/moe_layers_cpu.md
    python benchmarks/bench_moe_layers.py --quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_layers import machine

from structsearch.layers import BTTMoE, EinsumLinear

EXPERTS, K = 8, 2
TARGET_VS_RANK1 = 1.5
NOTE = (
    "The 1.5x target cannot be met with k = 2: a token runs two rank-one terms, 2.1x the MACs of BTT rank 1, "
    "and the experts' GEMMs alone (`btt r=1 on k*n`, the same work in one call with no routing) already take "
    "more than 2x BTT rank 1's time. What the sparsity has to show is that BTT-MoE costs what its k terms "
    "cost plus a modest routing overhead, and far less than computing all E terms (BTT rank 8)."
)


def _rank8(d: int) -> str:
    """The btt rank exponent whose rank index rounds to 8 at d."""
    import math

    return f"btt:{math.log(EXPERTS) / math.log(d)!r}"


def _step(module: nn.Module, x: Tensor, grad: Tensor) -> None:
    x.grad = None
    for p in module.parameters():
        p.grad = None
    module(x).backward(grad)


def bench(d: int, batch: int, reps: int) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    moe = BTTMoE(d, d, EXPERTS, K)
    with torch.no_grad():
        moe.router.weight.normal_(0.0, d**-0.5)
    rank8 = EinsumLinear(_rank8(d), d, d)
    assert rank8.dims["rho"] == EXPERTS, rank8.dims
    contenders = {
        "btt r=1": (EinsumLinear("btt", d, d), batch),
        "btt r=8": (rank8, batch),
        f"btt-moe E={EXPERTS} k={K}": (moe, batch),
        "btt r=1 on k*n": (EinsumLinear("btt", d, d), K * batch),
    }
    inputs = {
        n: (torch.randn(rows, d, requires_grad=True), torch.randn(rows, d)) for n, (_, rows) in contenders.items()
    }
    for name, (module, _) in contenders.items():  # warm-up
        for _ in range(2):
            _step(module, *inputs[name])
    times: dict[str, dict[str, list[float]]] = {n: {"cpu": [], "wall": []} for n in contenders}
    for _ in range(reps):
        for name, (module, _) in contenders.items():
            c0, w0 = time.thread_time(), time.perf_counter()
            _step(module, *inputs[name])
            times[name]["cpu"].append(time.thread_time() - c0)
            times[name]["wall"].append(time.perf_counter() - w0)
    out = {}
    for name, (module, _) in contenders.items():
        out[name] = {
            "cpu_us_per_token": 1e6 * statistics.median(times[name]["cpu"]) / batch,
            "wall_us_per_token": 1e6 * statistics.median(times[name]["wall"]) / batch,
            "macs_per_token": float(module.macs) * (K if name.endswith("k*n") else 1),
        }
    load = moe.router_stats().get("load") if moe.training else None
    out["_load"] = {"max_load": max(load) if load else float("nan")}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: d = 256, 5 reps")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--batch", type=int, default=1024, help="tokens per forward+backward")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--markdown", default=None, help="also write the table as markdown to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sizes = args.sizes or ([256] if args.quick else [1024, 4096])
    reps = args.reps or (5 if args.quick else 21)
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# BTT-MoE layer speed on CPU: forward+backward per token",
        "",
        f"Machine: {machine()}. Run {started}, batch {args.batch} tokens, float32, 1 torch thread, "
        f"median of {reps} interleaved rounds. The machine is shared with other jobs, so wall times are noisy; "
        "the CPU-time column (this thread's `time.thread_time`) is what the targets are judged on.",
        f"Command: `python benchmarks/bench_moe_layers.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        "",
        "| d | layer | MACs/token | CPU us/token | wall us/token | x btt r=1 (CPU) | x btt r=8 (CPU) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for d in sizes:
        res = bench(d, args.batch, reps)
        r1, r8 = res["btt r=1"]["cpu_us_per_token"], res["btt r=8"]["cpu_us_per_token"]
        for name, row in res.items():
            if name.startswith("_"):
                continue
            cpu = row["cpu_us_per_token"]
            lines.append(
                f"| {d} | {name} | {row['macs_per_token']:,.0f} | {cpu:.2f} | "
                f"{row['wall_us_per_token']:.2f} | {cpu / r1:.2f} | {cpu / r8:.2f} |"
            )
        moe = res[f"btt-moe E={EXPERTS} k={K}"]["cpu_us_per_token"]
        experts = res["btt r=1 on k*n"]["cpu_us_per_token"]
        overhead = moe - experts
        verdicts.append(
            f"- d = {d}: BTT-MoE = {moe / r1:.2f}x BTT rank 1 (target <= {TARGET_VS_RANK1}: "
            f"{'met' if moe / r1 <= TARGET_VS_RANK1 else 'missed'}), {moe / r8:.2f}x BTT rank 8; routing overhead "
            f"{overhead:.2f} us/token = {overhead / moe:.0%} of BTT-MoE's time (experts' GEMMs {experts:.2f} us/token)."
        )
    lines += ["", *verdicts, "", NOTE, ""]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
