#!/usr/bin/env bash
# GPU check: on a machine with a CUDA GPU, run the layer benchmark and a few evaluator trials
# (bfloat16 autocast), report their achieved FLOP/s against the GPU's dense matmul peak, check
# seed batching, and print tables. Writes its outputs to ${OUT:-benchmarks/results/gpu}.
#
#   bash benchmarks/gpu_check.sh            # ~3-5 minutes on one GPU
#   QUICK=1 bash benchmarks/gpu_check.sh    # smoke run (small sizes)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out=${OUT:-benchmarks/results/gpu}

"$py" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch.cuda.is_available() is False; this check needs a CUDA GPU")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY

mkdir -p "$out"
echo "== layer benchmark (benchmarks/bench_layers.py) =="
if [ -n "${QUICK:-}" ]; then
    "$py" benchmarks/bench_layers.py --quick --markdown "$out/layers_gpu.md"
else
    "$py" benchmarks/bench_layers.py --markdown "$out/layers_gpu.md"
fi

echo "== evaluator trials (structsearch.evaluation on cuda, bfloat16 autocast) =="
QUICK=${QUICK:-} OUT_DIR="$out" "$py" - <<'PY'
import json, os, time
import torch
from rich.console import Console
from rich.table import Table
from structsearch.evaluation import evaluate

quick = bool(os.environ.get("QUICK"))
width, budget = (256, 3e10) if quick else (1024, 1e12)
trials = [(s, "mlp-regression", width, budget) for s in ("dense", "btt", "kronecker", "low-rank:1/2")]
trials.append(("btt", "char-lm", 128 if quick else 256, 2e11 if quick else 2e12))
# the GPU's dense matmul peak, bfloat16 (what autocast runs the layers in) and float32
peaks = {}
for dtype in (torch.bfloat16, torch.float32):
    n = 8192
    a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
    peaks[str(dtype)] = 20 * 2 * n**3 / (time.perf_counter() - t0) / 1e12
    print(f"dense matmul peak {dtype}: {peaks[str(dtype)]:.1f} TFLOP/s (8192^3)")
peak = peaks["torch.bfloat16"]
table = Table(title=f"evaluate() on {torch.cuda.get_device_name(0)}", header_style="bold")
cols = ("structure", "task", "width", "status", "final loss", "steps", "train s", "data s", "eval s",
        "achieved TFLOP/s", "% of bf16 peak", "dtype")
for col in cols:
    table.add_column(col, justify="right")
rows = []
for spec, task, w, c in trials:
    t0 = time.perf_counter()
    r = evaluate(spec, task, budget=c, width=w, device="cuda")
    rate = r.flops_per_second / 1e12  # model training FLOPs over model time (data and evaluation apart)
    rows.append({**r.to_dict(), "achieved_tflops": rate, "peak_tflops": peaks, "total_seconds": time.perf_counter() - t0})
    loss = f"{r.final_loss:.4f}" if r.final_loss is not None else (r.reason or "-")
    table.add_row(spec, task, str(w), r.status, loss, str(r.steps), f"{r.wall_seconds:.1f}", f"{r.data_seconds:.1f}",
                  f"{r.eval_seconds:.1f}", f"{rate:.2f}", f"{100 * rate / peak:.1f}", r.dtype)
    assert r.status == "ok", r.reason
# seed batching on the GPU: four seeds in one vectorised run against one seed, same steps
one = evaluate("btt", "mlp-regression", steps=200, width=width, device="cuda", eval_points=1)
four = evaluate("btt", "mlp-regression", steps=200, width=width, device="cuda", eval_points=1, seeds=[0, 1, 2, 3])
print(f"seed batching on cuda (btt, width {width}, 200 steps): 1 seed {one.wall_seconds:.2f} s, "
      f"4 seeds {four.wall_seconds:.2f} s ({four.wall_seconds / one.wall_seconds:.2f}x); "
      f"seed 0 final {one.final_loss:.5f} vs batched {four.runs[0].final_loss:.5f}")
# the default proxy (two runs, extrapolated to 10x) must work on the GPU too
from structsearch.evaluation import proxy
p = proxy("btt", "mlp-regression", device="cuda")
print(f"proxy(btt) on cuda: score {p.score:.4f}, final {p.final_loss:.4f}, {p.wall_seconds:.1f} s")
# determinism is only promised on CPU; on CUDA check that a rerun lands close
again = evaluate("btt", "mlp-regression", budget=budget, width=width, device="cuda")
first = rows[1]["final_loss"]
print(f"btt rerun on cuda: {again.final_loss:.5f} vs {first:.5f} (relative gap {abs(again.final_loss - first) / first:.2%})")
Console().print(table)
with open(os.path.join(os.environ["OUT_DIR"], "evaluate_gpu.json"), "w") as f:
    json.dump(rows, f, indent=1)
PY
echo "gpu_check: done; outputs in $out"
