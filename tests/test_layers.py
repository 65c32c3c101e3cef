"""EinsumLinear's API: construction from specs and files, dtypes, batch shapes, init, groups, compile."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from structsearch.errors import SizeError, SpecError
from structsearch.layers import EinsumLinear, init_linear_, linear_factory, param_groups, spectral_std
from structsearch.spec import parse_spec

BTT_THETA = {"alpha": 0.5, "beta": 0, "gamma": 0.5, "delta": 0, "epsilon": 0.5, "phi": 0.5, "rho": 0}
# At these small sizes many structures would run on the materialised weight by default: each
# property below is checked on the structure's own contraction and on the materialised weight.
PATHS = ["structural", "materialised"]


def _layer(spec: str, d_in: int, d_out: int, path: str, **kwargs) -> EinsumLinear:
    """``spec`` on its structural path (fast or general) or on the materialised weight."""
    structural = EinsumLinear(spec, d_in, d_out, device="meta").structural_path
    if path == "materialised" and structural == "dense":
        pytest.skip("the dense point has one core: nothing to materialise")
    return EinsumLinear(spec, d_in, d_out, path=structural if path == "structural" else path, **kwargs)


# -- construction ---------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["btt", "(1/2|0|1/2|0|1/2|1/2|0)", parse_spec("monarch"), BTT_THETA])
def test_from_spec_accepts_strings_specs_and_mappings(source) -> None:
    layer = EinsumLinear.from_spec(source, 16, 16, bias=False)
    assert layer.spec == parse_spec("btt") and layer.bias is None


def test_from_spec_loads_bare_theta_and_export_documents(tmp_path) -> None:
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(BTT_THETA))
    export = tmp_path / "export.json"
    low_rank = {"alpha": 1, "beta": 0, "gamma": 0, "delta": 0, "epsilon": 1, "phi": 0, "rho": 0.5}
    export.write_text(json.dumps({"version": 1, "specs": [{"theta": BTT_THETA}, {"theta": low_rank, "loss": 0.1}]}))
    assert EinsumLinear.from_spec(bare, 16, 16).spec.name == "btt"
    assert EinsumLinear.from_spec(str(export), 16, 16).spec.name == "btt"
    assert EinsumLinear.from_spec(export, 16, 16, index=1).spec.name == "low-rank:1/2"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON"),
        ('{"specs": []}', "'specs' must be a non-empty list"),
        ('{"specs": [{"loss": 1}]}', r"specs\[0\] needs a 'theta' object"),
        ('{"specs": [{"theta": {"alpha": 2}}]}', r"specs\[0\].theta: theta: unknown key|missing key"),
    ],
)
def test_from_spec_file_errors_name_the_file(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "spec.json"
    path.write_text(content)
    with pytest.raises(SpecError, match=message) as info:
        EinsumLinear.from_spec(path, 16, 16)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_bad_sizes_raise_one_line_errors(tmp_path) -> None:
    with pytest.raises(SpecError, match="cannot read spec file"):
        EinsumLinear.from_spec(tmp_path / "nope.json", 16, 16)
    with pytest.raises(SizeError, match="d_in: must be > 0, got 0"):
        EinsumLinear("btt", 0, 16)
    with pytest.raises(SpecError, match="path: 'btt' does not apply") as info:
        EinsumLinear("kronecker", 16, 16, path="btt")
    assert "expected one of general, kronecker, materialised" in str(info.value)
    with pytest.raises(SpecError, match=r"expected one of dense, general$"):  # one core: no outer product
        EinsumLinear("dense", 16, 16, path="broadcast")


# -- forward ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("batch", [(), (1,), (2, 3), (2, 1, 3)])
@pytest.mark.parametrize("spec", ["btt", "kronecker", "dense", "tt:0.25"])
def test_any_leading_batch_shape(spec: str, batch: tuple[int, ...], path: str) -> None:
    layer = _layer(spec, 24, 20, path)
    x = torch.randn(*batch, 24)
    y = layer(x)
    assert y.shape == (*batch, 20)
    torch.testing.assert_close(y, x @ layer.to_dense().T + layer.bias)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("spec", ["btt", "kronecker", "dense", "btt:0.25", "tt:0.25"])
def test_bfloat16_and_autocast(spec: str, path: str) -> None:
    layer = _layer(spec, 32, 32, path)
    x = torch.randn(4, 32)
    ref = layer(x)
    half = _layer(spec, 32, 32, path, dtype=torch.bfloat16)
    half.load_state_dict(layer.state_dict())
    y = half(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, rtol=5e-2, atol=5e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = layer(x)
    assert auto.dtype == torch.bfloat16
    torch.testing.assert_close(auto.float(), ref, rtol=5e-2, atol=5e-2)
    auto.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in layer.parameters())


@pytest.mark.parametrize("path", PATHS)
def test_zero_batch_and_input_without_grad(path: str) -> None:
    layer = _layer("btt", 16, 16, path)
    assert layer(torch.randn(0, 16)).shape == (0, 16)
    layer(torch.randn(3, 16)).sum().backward()  # x needs no gradient: no input gradient is computed
    assert layer.A.grad is not None and layer.B.grad is not None


@pytest.mark.parametrize("path", PATHS)
def test_output_is_contiguous_row_major(path: str) -> None:
    for spec in ("btt", "btt:0.25", "tt:0.25", "kronecker"):
        assert _layer(spec, 24, 20, path)(torch.randn(5, 24)).is_contiguous()


def test_repr_states_structure_sizes_and_padding() -> None:
    text = repr(EinsumLinear("btt", 30, 45))
    assert "(1/2|0|1/2|0|1/2|1/2|0) btt" in text and "padding in" in text and "path=btt" in text
    assert "alpha=6" in text and "params=" in text


# -- initialisation and learning rates --------------------------------------------------------
def test_cores_carry_fan_in_and_fan_out() -> None:
    layer = EinsumLinear("tt:0.25", 256, 256)
    dims = layer.dims
    core_a, core_b = layer.cores
    assert (core_a.fan_in, core_a.fan_out) == (dims["alpha"], dims["delta"] * dims["phi"] * dims["rho"])
    assert (core_b.fan_in, core_b.fan_out) == (dims["beta"] * dims["gamma"] * dims["rho"], dims["epsilon"])
    assert [c.name for c in EinsumLinear("dense", 8, 4).cores] == ["A"]


@pytest.mark.parametrize("spec", ["btt", "low-rank:0.5", "kronecker", "dense"])
def test_init_std_follows_spectral_rule(spec: str) -> None:
    torch.manual_seed(0)
    layer = EinsumLinear(spec, 1024, 1024)
    for core in layer.cores:
        expected = math.sqrt(min(core.fan_in, core.fan_out)) / core.fan_in
        assert core.init_std == pytest.approx(expected)
        assert core.param.std().item() == pytest.approx(expected, rel=0.05)
    # a full-rank structure keeps a unit-variance input at unit scale; rank r keeps ~sqrt(r/d) of it
    y = layer(torch.randn(256, 1024))
    expected = math.sqrt(layer.dims["rho"] / 1024) if spec.startswith("low-rank") else 1.0
    assert y.std().item() == pytest.approx(expected, rel=0.2)
    assert torch.count_nonzero(layer.bias) == 0


def test_zero_init_starts_at_zero_but_still_learns() -> None:
    layer = EinsumLinear("btt", 16, 16, zero_init=True)
    x = torch.randn(4, 16)
    assert torch.count_nonzero(layer(x)) == 0
    layer(x).pow(2).sum().add(layer(x).sum()).backward()
    assert layer.B.grad.abs().sum() > 0


def test_param_groups_scale_lr_by_fan_in_for_cores_and_linear_weights() -> None:
    model = nn.Sequential(
        EinsumLinear("btt", 256, 256), nn.LayerNorm(256), nn.Linear(256, 512), EinsumLinear("low-rank:0.5", 512, 64)
    )
    groups = param_groups(model, lr=1e-3, base_fan_in=64, weight_decay=0.1)
    by_name = {name: g for g in groups for name in g["names"]}
    assert by_name["0.A"]["lr"] == pytest.approx(1e-3 * 64 / 16)  # alpha = 16
    assert by_name["0.B"]["lr"] == pytest.approx(1e-3 * 64 / 16)  # gamma * rho * beta = 16
    assert by_name["2.weight"]["lr"] == pytest.approx(1e-3 * 64 / 256)
    assert by_name["3.A"]["lr"] == pytest.approx(1e-3 * 64 / 512)
    assert by_name["3.B"]["lr"] == pytest.approx(1e-3 * 64 / 8)  # rank min(512, 64)^0.5 = 8
    for name in ("0.bias", "1.weight", "1.bias", "2.bias", "3.bias"):
        assert by_name[name]["lr"] == 1e-3 and by_name[name]["weight_decay"] == 0.0
    assert by_name["2.weight"]["weight_decay"] == 0.1
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    torch.optim.AdamW(groups, lr=1e-3)  # the groups are valid optimizer input


def test_param_groups_shared_weight_once_and_bad_input() -> None:
    shared = nn.Linear(8, 8)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    groups = param_groups(model, lr=1e-2, base_fan_in=8)
    assert sum(len(g["params"]) for g in groups) == 2
    with pytest.raises(SizeError, match="base_fan_in"):
        param_groups(model, lr=1e-2, base_fan_in=0)


def test_linear_factory_dense_is_nn_linear_with_spectral_init() -> None:
    torch.manual_seed(0)
    dense = linear_factory("dense")(512, 256, True)
    assert type(dense) is nn.Linear
    assert dense.weight.std().item() == pytest.approx(spectral_std(512, 256), rel=0.05)
    assert torch.count_nonzero(dense.bias) == 0
    structured = linear_factory("btt")(16, 16, False)
    assert isinstance(structured, EinsumLinear) and structured.bias is None
    assert init_linear_(nn.Linear(4, 4)).bias.abs().sum() == 0


# -- torch.compile ----------------------------------------------------------------------------
# torch 2.13's dynamo builds the ctx of any autograd.Function by instantiating it, which warns
# (a torch-internal DeprecationWarning, not ours); filterwarnings=error would turn it into a failure.
_DYNAMO_CTX_WARNING = "ignore:.*should not be instantiated:DeprecationWarning"


@pytest.mark.filterwarnings(_DYNAMO_CTX_WARNING)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("spec", ["btt:0.25", "sum-kronecker:0.25", "tt:0.25", "dense"])
def test_compiles_without_graph_breaks(spec: str, path: str) -> None:
    torch._dynamo.reset()
    layer = _layer(spec, 24, 20, path)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(3, 2, 24, requires_grad=True)
    y = compiled(x)
    torch.testing.assert_close(y, layer(x))
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in layer.parameters())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch-internal (dynamo ctx, inductor's jit import)
def test_compiles_with_inductor(request: pytest.FixtureRequest) -> None:
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("about 30 s of inductor compilation: run with -m slow")
    torch._dynamo.reset()
    layer = _layer("btt:0.25", 24, 20, "structural")  # the btt fast path's autograd Function
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(4, 24, requires_grad=True)
    y = compiled(x)
    torch.testing.assert_close(y, layer(x))
    y.sum().backward()
    assert x.grad is not None and layer.A.grad is not None


# -- the committed benchmark runs -----------------------------------------------------------
def _run_benchmark(tmp_path, script: str, *args: str) -> str:
    """Run ``benchmarks/<script>`` with ``args``, whose last is the flag naming the markdown file; return the table."""
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    out = tmp_path / "table.md"
    done = subprocess.run(
        [sys.executable, str(path), *args, str(out)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return out.read_text()


def test_benchmark_smoke_run(tmp_path) -> None:
    text = _run_benchmark(tmp_path, "bench_layers.py", "--sizes", "64", "--batch", "16", "--reps", "1", "--markdown")
    assert "| btt | 64 | btt |" in text and "| kronecker | 64 | kronecker |" in text and "Machine:" in text


def test_materialise_benchmark_smoke_run(tmp_path) -> None:
    text = _run_benchmark(tmp_path, "bench_materialise.py", "--widths", "64", "--random", "2", "--reps", "1", "--out")
    assert "| 64 | btt | btt |" in text and "the rule in use" in text and "Machine:" in text


def test_benchmark_peak_memory_matches_closed_form_for_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    """nn.Linear's forward+backward allocates y, dL/dx and dL/dW: the tracker's peak is exactly their sum."""
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_layers.py"
    monkeypatch.syspath_prepend(str(script.parent))  # as when run as a script: its sibling modules import
    spec = importlib.util.spec_from_file_location("bench_layers", script)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_layers", bench)  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    n, d_in, d_out = 32, 48, 40
    dense = torch.nn.Linear(d_in, d_out, bias=False)
    x = torch.randn(n, d_in, requires_grad=True)
    grad = torch.randn(n, d_out)
    assert bench.peak_bytes(dense, x, grad) == 4 * (n * d_out + n * d_in + d_in * d_out)
    # a structured layer: the peak holds at least what autograd saves beyond the input, and the gradients
    layer = EinsumLinear("btt", 64, 64, bias=False)
    x = torch.randn(n, 64, requires_grad=True)
    peak = bench.peak_bytes(layer, x, torch.randn(n, 64))
    grads = 4 * (n * 64 + layer.params)
    assert peak >= grads + bench.saved_bytes(layer, x) - 4 * n * 64


@pytest.mark.parametrize("spec", ["btt", "kronecker", "btt-moe:experts=4,k=2"])
def test_wrong_input_width_names_the_expected_one(spec):
    layer = EinsumLinear.from_spec(spec, 64, 32)
    with pytest.raises(RuntimeError, match=r"expected inputs \(\.\.\., 64\), got \(3, 63\)"):
        layer(torch.randn(3, 63))
    assert layer(torch.randn(2, 5, 64)).shape == (2, 5, 32)
