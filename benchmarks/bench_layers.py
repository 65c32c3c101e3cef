"""Forward+backward speed and saved-activation memory of structured layers (GitHub issue 3).

For dense, low rank, Kronecker and BTT at each width d (batch 1024, float32 on CPU;
bfloat16 on CUDA when a GPU is present), side by side in one run, interleaved round by round
so a shared machine slows every contender alike:

- ``nn.Linear(d, d)``: the dense baseline;
- ``ref``: a two-einsum reference written here (e.g. BTT: einsum('bga,gaf->bfg') then
  einsum('bfg,fge->bfe')), plain autograd;
- ``EinsumLinear`` on its default path (a fast path where one applies) and forced onto the
  general path (so every fast path is justified by a measurement).

Memory, two numbers per contender:

- saved: the bytes autograd saves for backward (torch.autograd.graph.saved_tensors_hooks),
  unique storages, excluding the weights (which exist anyway) but including the input x;
- peak: the most bytes alive at once during one forward+backward beyond the weights, the input
  and the incoming gradient (activations, temporaries and the gradients themselves). CUDA reads
  the allocator's peak; CPU has no allocator statistics, so a dispatch mode tracks every
  storage an op creates until it is freed (exact for tensors, blind to allocator slack).

    python benchmarks/bench_layers.py            # full run, d = 1024 and 4096
    python benchmarks/bench_layers.py --quick    # smoke run, small sizes
    python benchmarks/bench_layers.py --markdown benchmarks/results/layers_cpu.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
import weakref
from dataclasses import dataclass

import torch
from _machine import cpu_name
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from structsearch.layers import EinsumLinear

STRUCTURES = {"dense": "dense", "low-rank": "low-rank:0.5", "kronecker": "kronecker", "btt": "btt"}
TARGET_REF_SPEEDUP = 1.3  # BTT vs the two-einsum reference at d = 1024
TARGET_FLOP_FRACTION = 0.4  # BTT speedup over dense at d = 4096, as a fraction of the FLOP ratio


# -- two-einsum references (their own core layouts, plain autograd) -----------------------------
class Reference(nn.Module):
    """The structure written as the einsum pair of the taxonomy's two-step order."""

    def __init__(self, structure: str, layer: EinsumLinear) -> None:
        super().__init__()
        s = layer.dims
        a, b, g, d, e, f, r = (s[c] for c in ("alpha", "beta", "gamma", "delta", "epsilon", "phi", "rho"))
        self.structure, self.dims, self.d = structure, (a, b, g, d, e, f, r), layer.d_in
        with torch.no_grad():  # the same operator as the layer, in the reference's own layouts
            if structure == "dense":
                self.A = nn.Parameter(layer.A.reshape(a, d).clone())  # (a, d)
            elif structure == "low-rank":
                self.A = nn.Parameter(layer.A.reshape(a, r).clone())  # (a, r)
                self.B = nn.Parameter(layer.B.reshape(r, e).clone())  # (r, e)
            elif structure == "kronecker":
                self.A = nn.Parameter(layer.A.reshape(a, d).clone())  # (a, d)
                self.B = nn.Parameter(layer.B.reshape(b, e).clone())  # (b, e)
            else:  # btt
                self.A = nn.Parameter(layer.A.reshape(g, a, f).clone())  # (g, a, f)
                self.B = nn.Parameter(layer.B.reshape(f, g, e).clone())  # (f, g, e)

    def forward(self, x: Tensor) -> Tensor:
        a, b, g, d, e, f, r = self.dims
        n = x.shape[0]
        if self.structure == "dense":  # one core: the taxonomy folds the other (a scalar) away
            return torch.einsum("na,ad->nd", x, self.A)
        if self.structure == "low-rank":
            z = torch.einsum("na,ar->nr", x, self.A)
            return torch.einsum("nr,re->ne", z, self.B)
        if self.structure == "kronecker":
            z = torch.einsum("nba,ad->nbd", x.view(n, b, a), self.A)  # (n, b, d)
            return torch.einsum("nbd,be->ned", z, self.B).reshape(n, e * d)  # (n, e*d)
        z = torch.einsum("bga,gaf->bfg", x.view(n, g, a), self.A)  # (n, f, g)
        return torch.einsum("bfg,fge->bfe", z, self.B).reshape(n, f * e)  # (n, f*e)


# -- measurement ----------------------------------------------------------------------------------
def _clear_grads(module: nn.Module, x: Tensor) -> None:
    x.grad = None
    for p in module.parameters():
        p.grad = None


def _step(module: nn.Module, x: Tensor, grad: Tensor) -> None:
    _clear_grads(module, x)
    module(x).backward(grad)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def time_interleaved(
    modules: dict[str, nn.Module], x: Tensor, grad: Tensor, reps: int, clock: str = "wall"
) -> dict[str, float]:
    """Median seconds of one forward+backward, contenders interleaved round by round.

    ``clock="cpu"`` (one thread only) counts this thread's CPU time, which other jobs on a
    shared machine do not inflate; ``"wall"`` is the elapsed time.
    """
    now = CLOCKS[clock]
    for module in modules.values():  # warm-up
        for _ in range(2):
            _step(module, x, grad)
    times: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(reps):
        for name, module in modules.items():
            _sync(x.device)
            start = now()
            _step(module, x, grad)
            _sync(x.device)
            times[name].append(now() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def saved_bytes(module: nn.Module, x: Tensor) -> int:
    """Bytes of the unique storages autograd saves for backward, weights excluded (input included)."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = module(x)
    del y
    return sum(saved.values())


class _LiveStorages(TorchDispatchMode):
    """Bytes of the tensor storages created under this mode that are still alive, and their peak.

    Storages that existed before (weights, the input, the incoming gradient) are excluded, so
    views of them are not counted; a storage leaves the count when it is freed.
    """

    def __init__(self, existing: list[Tensor]) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._seen = {t.untyped_storage().data_ptr() for t in existing}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, Tensor):
                self._track(t.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes == 0 or key in self._seen:
            return
        self._seen.add(key)
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._release, key, nbytes)

    def _release(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes


def peak_bytes(module: nn.Module, x: Tensor, grad: Tensor) -> int:
    """Peak bytes allocated during one forward+backward beyond the weights, input and incoming gradient.

    Activations, temporaries and the gradients themselves. CUDA: the caching allocator's peak.
    CPU (no allocator statistics): the peak of live tensor storages, tracked op by op.
    """
    _clear_grads(module, x)  # before the baseline: an earlier step's gradients must not count, nor be freed mid-way
    if x.device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _step(module, x, grad)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    tracker = _LiveStorages([*module.parameters(), *module.buffers(), x, grad])
    with tracker:
        _step(module, x, grad)
    return tracker.peak


@dataclass
class Row:
    structure: str
    d: int
    path: str
    params: int
    macs: int
    dense_ms: float
    ref_ms: float
    layer_ms: float
    general_ms: float
    saved_layer: int
    saved_ref: int
    saved_dense: int
    peak_layer: int
    peak_ref: int
    peak_dense: int
    batch: int
    itemsize: int

    @property
    def flop_ratio(self) -> float:
        return self.d * self.d / self.macs

    @property
    def vs_dense(self) -> float:
        return self.dense_ms / self.layer_ms

    @property
    def vs_ref(self) -> float:
        return self.ref_ms / self.layer_ms

    def gflops(self, macs: int, ms: float) -> float:
        return 6 * macs * self.batch / (ms * 1e-3) / 1e9  # forward 2, backward 4 FLOPs per MAC


def bench(
    structure: str, d: int, batch: int, reps: int, device: torch.device, dtype: torch.dtype, clock: str = "wall"
) -> Row:
    torch.manual_seed(0)
    spec = STRUCTURES[structure]
    layer = EinsumLinear(spec, d, d, bias=False, device=device, dtype=dtype)
    general = EinsumLinear(spec, d, d, bias=False, device=device, dtype=dtype, path="general")
    general.load_state_dict(layer.state_dict())
    ref = Reference(structure, layer)
    dense = nn.Linear(d, d, bias=False, device=device, dtype=dtype)
    x = torch.randn(batch, d, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn(batch, d, device=device, dtype=dtype)
    with torch.no_grad():  # all implementations compute the same operator
        assert torch.allclose(ref(x), layer(x), rtol=1e-2, atol=1e-2 * float(layer(x).abs().max()))
    modules = {"dense": dense, "ref": ref, "layer": layer}
    if layer.path != "general":
        modules["general"] = general
    ms = {k: v * 1e3 for k, v in time_interleaved(modules, x, grad, reps, clock).items()}
    return Row(
        structure=structure,
        d=d,
        path=layer.path,
        params=layer.params,
        macs=layer.macs,
        dense_ms=ms["dense"],
        ref_ms=ms["ref"],
        layer_ms=ms["layer"],
        general_ms=ms.get("general", ms["layer"]),
        saved_layer=saved_bytes(layer, x),
        saved_ref=saved_bytes(ref, x),
        saved_dense=saved_bytes(dense, x),
        peak_layer=peak_bytes(layer, x, grad),
        peak_ref=peak_bytes(ref, x, grad),
        peak_dense=peak_bytes(dense, x, grad),
        batch=batch,
        itemsize=x.element_size(),
    )


# -- reporting ---------------------------------------------------------------------------------------
COLUMNS = [
    "structure",
    "d",
    "path",
    "params",
    "FLOP ratio",
    "nn.Linear ms",
    "ref ms",
    "EinsumLinear ms",
    "general ms",
    "vs ref",
    "vs dense",
    "% of FLOP ratio",
    "GFLOP/s layer",
    "GFLOP/s dense",
    "saved MiB layer / ref / dense",
    "peak MiB layer / ref / dense",
    "weights MiB layer / dense",
]


def _cells(row: Row) -> list[str]:
    mib = 2**20
    return [
        row.structure,
        str(row.d),
        row.path,
        f"{row.params:,}",
        f"{row.flop_ratio:.1f}x",
        f"{row.dense_ms:.2f}",
        f"{row.ref_ms:.2f}",
        f"{row.layer_ms:.2f}",
        f"{row.general_ms:.2f}" if row.path != "general" else "(same)",
        f"{row.vs_ref:.2f}x",
        f"{row.vs_dense:.2f}x",
        f"{100 * row.vs_dense / row.flop_ratio:.0f}%",
        f"{row.gflops(row.macs, row.layer_ms):.0f}",
        f"{row.gflops(row.d * row.d, row.dense_ms):.0f}",
        f"{row.saved_layer / mib:.1f} / {row.saved_ref / mib:.1f} / {row.saved_dense / mib:.1f}",
        f"{row.peak_layer / mib:.1f} / {row.peak_ref / mib:.1f} / {row.peak_dense / mib:.1f}",
        f"{row.params * row.itemsize / mib:.2f} / {row.d * row.d * row.itemsize / mib:.2f}",
    ]


def _targets(rows: list[Row], sizes: list[int]) -> list[tuple[str, str, bool]]:
    out = []
    btt = {row.d: row for row in rows if row.structure == "btt"}
    if 1024 in btt:
        r = btt[1024]
        out.append(
            (
                "BTT d=1024: >= 1.3x faster than the two-einsum reference",
                f"{r.vs_ref:.2f}x",
                r.vs_ref >= TARGET_REF_SPEEDUP,
            )
        )
    if 4096 in btt:
        r = btt[4096]
        need = TARGET_FLOP_FRACTION * r.flop_ratio
        out.append(
            (
                f"BTT d=4096: speedup over dense >= 40% of the FLOP ratio ({need:.1f}x)",
                f"{r.vs_dense:.2f}x",
                r.vs_dense >= need,
            )
        )
    return out


def machine() -> str:
    return (
        f"{cpu_name()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, torch threads: {torch.get_num_threads()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: d = 256 and 1024, batch 256, 3 reps")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--structures", nargs="+", default=list(STRUCTURES), choices=list(STRUCTURES))
    parser.add_argument("--markdown", default=None, help="also write the table as markdown to this file")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--clock", choices=list(CLOCKS), default="wall", help="wall time, or this thread's CPU time (needs --threads 1)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and torch.get_num_threads() != 1:
        parser.error("--clock cpu counts one thread's CPU time: use it with --threads 1")
    sizes = args.sizes or ([256, 1024] if args.quick else [1024, 4096])
    batch = args.batch or (256 if args.quick else 1024)
    reps = args.reps or (3 if args.quick else 15)

    setups = [(torch.device("cpu"), torch.float32)]
    if torch.cuda.is_available():
        setups.append((torch.device("cuda"), torch.bfloat16))
    console = Console(width=max(200, Console().width))
    load_before = os.getloadavg()
    started = time.time()
    results: list[tuple[str, list[Row]]] = []
    for device, dtype in setups:
        rows = []
        for d in sizes:
            for structure in args.structures:
                clock = args.clock if device.type == "cpu" else "wall"
                rows.append(bench(structure, d, batch, reps, device, dtype, clock))
                console.log(f"{device.type} {dtype} {structure} d={d}: {rows[-1].layer_ms:.2f} ms")
        results.append((f"{device.type} {str(dtype).removeprefix('torch.')}", rows))
    load_after = os.getloadavg()

    for label, rows in results:
        table = Table(title=f"forward+backward, batch {batch}, {label} (median of {reps}, {args.clock} clock)")
        for column in COLUMNS:
            table.add_column(column, justify="left" if column in ("structure", "path") else "right")
        for row in rows:
            table.add_row(*_cells(row))
        console.print(table)
        for name, value, ok in _targets(rows, sizes):
            console.print(f"{'MET ' if ok else 'MISSED'}  {name}: {value}")

    if args.markdown:
        command = " ".join(["python benchmarks/bench_layers.py", *(sys.argv[1:] if argv is None else argv)])
        lines = [
            "# Structured layers: forward+backward speed and memory",
            "",
            f"Generated by `{command}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
            f"{time.time() - started:.0f} s.",
            "",
            f"- Machine: {machine()}.",
            f"- Load average (1/5/15 min) before {'/'.join(f'{v:.2f}' for v in load_before)}, "
            f"after {'/'.join(f'{v:.2f}' for v in load_after)}.",
            f"- Times: median of {reps} interleaved rounds of one forward+backward (input gradient included), no "
            f"bias; clock: {'wall time' if args.clock == 'wall' else 'CPU time of the one compute thread'}.",
            "- GFLOP/s: 6 x MACs per vector x batch / time (the layer's own MACs; dense: d^2).",
            "- `ref`: the two-einsum reference in the benchmark; `general`: EinsumLinear forced onto its general "
            "path; `vs ref` and `vs dense` are speedups of EinsumLinear (default path).",
            "- Saved MiB: bytes autograd saves for backward (saved_tensors_hooks, unique storages), weights "
            "excluded, the input x included.",
            "- Peak MiB: most bytes alive at once during one forward+backward beyond the weights, input and "
            "incoming gradient (activations, temporaries, gradients); CPU: live tensor storages tracked op by op.",
            "",
        ]
        for label, rows in results:
            lines += [
                f"## {label}, batch {batch}, {torch.get_num_threads()} thread(s), {args.clock} clock",
                "",
                "| " + " | ".join(COLUMNS) + " |",
                "|" + "---|" * len(COLUMNS),
            ]
            lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
            lines += [""]
            for name, value, ok in _targets(rows, sizes):
                lines.append(f"- {'MET' if ok else '**MISSED**'}: {name}: {value}")
            lines.append("")
        with open(args.markdown, "w") as fh:
            fh.write("\n".join(lines))
        console.print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
