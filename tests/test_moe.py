"""BTT-MoE (taxonomy.md 6) and the standard MoE baseline: routing, sparse compute, counts, losses, specs, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from structsearch import evaluate
from structsearch.errors import SpecError, TaskError
from structsearch.layers import BTTMoE, EinsumLinear, MoEFFN, aux_loss, param_groups, structurize
from structsearch.layers._moe import balancing_loss
from structsearch.spec import parse_spec
from structsearch.taxonomy import analyze


def _spread(layer: nn.Module, seed: int = 0) -> None:
    """Give the router random weights, so tokens spread over the experts."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.router.weight.copy_(torch.randn(layer.router.weight.shape, generator=gen))


def _reference(layer: BTTMoE, x: torch.Tensor) -> torch.Tensor:
    """Per token, the k top experts' materialised weights, softmax-weighted (a dense loop)."""
    logits = x @ layer.router.weight.T  # (n, E)
    out = []
    for xn, ln in zip(x, logits, strict=True):
        top, idx = ln.topk(layer.k)
        w = top.softmax(-1)
        out.append(sum(wj * (layer.expert_dense(int(e)) @ xn) for wj, e in zip(w, idx, strict=True)) + layer.bias)
    return torch.stack(out)


@pytest.mark.parametrize(("d_in", "d_out", "experts", "k"), [(64, 64, 8, 2), (48, 40, 4, 1), (30, 50, 5, 3)])
def test_routing_picks_exactly_k_experts_and_matches_the_dense_loop(d_in, d_out, experts, k):
    torch.manual_seed(0)
    layer = BTTMoE(d_in, d_out, experts, k)
    _spread(layer)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(37, d_in)
    weights, chosen = layer.router(x)
    assert chosen.shape == (37, k) and weights.shape == (37, k)
    assert all(len(set(row.tolist())) == k for row in chosen)  # k distinct experts per token
    assert torch.allclose(weights.sum(-1), torch.ones(37))
    torch.testing.assert_close(layer(x), _reference(layer, x), rtol=1e-4, atol=1e-5)


def test_float64_routing_is_exact_and_passes_gradcheck():
    """The router upcasts low-precision logits to float32; float64 ones must stay float64."""
    torch.manual_seed(0)
    layer = BTTMoE(36, 20, experts=4, k=2, dtype=torch.float64)
    _spread(layer)
    x = torch.randn(6, 36, dtype=torch.float64, requires_grad=True)
    weights, _ = layer.router(x)
    assert weights.dtype == torch.float64
    torch.testing.assert_close(layer(x), _reference(layer, x), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(layer, (x,))


def test_gradients_reach_the_router_and_every_selected_core():
    torch.manual_seed(1)
    layer = BTTMoE(64, 64, experts=8, k=2)
    _spread(layer, seed=3)
    x = torch.randn(6, 64)  # few tokens: some experts stay unselected
    selected = set(layer.router(x)[1].reshape(-1).tolist())
    (layer(x).square().sum() + aux_loss(layer)).backward()
    assert layer.router.weight.grad is not None and layer.router.weight.grad.abs().sum() > 0
    for e in range(8):
        touched = bool(layer.A.grad[e].abs().sum() > 0 and layer.B.grad[e].abs().sum() > 0)
        assert touched == (e in selected), e
    assert len(selected) < 8  # the check above covered unselected experts too


def test_zero_router_still_trains_the_router():
    layer = BTTMoE(32, 32, experts=4, k=2)
    assert not layer.router.weight.detach().any()  # zero-initialised
    (layer(torch.randn(16, 32)).square().sum() + aux_loss(layer)).backward()
    assert layer.router.weight.grad.abs().sum() > 0


def test_balancing_loss_is_minimal_for_uniform_routing():
    uniform = balancing_loss(torch.zeros(64, 8), torch.full((8,), 16))
    assert float(uniform) == pytest.approx(1.0)
    skewed_logits = torch.zeros(64, 8)
    skewed_logits[:, :2] = 3.0
    skewed = balancing_loss(skewed_logits, torch.tensor([64, 64, 0, 0, 0, 0, 0, 0]))
    assert float(skewed) > 3.0
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # routing consistent with the logits never beats uniform
        logits = torch.randn(64, 8, generator=gen) * 2
        counts = torch.bincount(logits.topk(2, -1).indices.reshape(-1), minlength=8)
        assert float(balancing_loss(logits, counts)) >= float(uniform) - 1e-6


def test_k_equal_e_with_uniform_weights_is_the_dense_rank_e_btt():
    torch.manual_seed(2)
    layer = BTTMoE(64, 64, experts=8, k=8)  # zero router: every gate is 1/E
    rank_e = EinsumLinear("btt:1/2", 64, 64)  # rank index of size 8 at d = 64
    assert rank_e.dims["rho"] == 8
    with torch.no_grad():
        rank_e.A.copy_(layer.A.permute(1, 2, 0, 3).unsqueeze(-1))  # (E, g, a, f) -> (g, a, r, f, 1)
        rank_e.B.copy_(layer.B.permute(1, 2, 0, 3).unsqueeze(2))  # (E, f, g, e) -> (f, g, 1, r, e)
        rank_e.bias.copy_(layer.bias)
    x = torch.randn(10, 64)
    torch.testing.assert_close(layer(x), x @ (rank_e.to_dense() / 8).T + layer.bias, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("experts", "k", "message"),
    [
        (8, 9, "k must be between 1 and experts=8, got k=9"),
        (8, 0, "k must be between 1 and experts=8, got k=0"),
        (0, 1, "experts must be >= 1, got experts=0"),
        (4, 1.5, "k must be an integer"),
    ],
)
def test_bad_k_or_e_is_a_one_line_spec_error(experts, k, message):
    for build in (lambda: BTTMoE(16, 16, experts, k), lambda: MoEFFN(16, 32, 16, experts, k)):
        with pytest.raises(SpecError, match=message) as err:
            build()
        assert "\n" not in str(err.value)
    if isinstance(k, int):
        with pytest.raises(SpecError, match=message):
            parse_spec(f"btt-moe:experts={experts},k={k}")


def test_a_routed_spec_needs_the_btt_family():
    with pytest.raises(SpecError, match="BTT-family theta"):
        parse_spec("(1/2|1/2|0|1/2|1/2|0|0) moe:experts=4,k=1")


@pytest.mark.parametrize("module", ["btt-moe", "moe-ffn"])
def test_macs_per_token_equal_flop_counter(module):
    torch.manual_seed(0)
    layer = BTTMoE(72, 60, experts=6, k=2) if module == "btt-moe" else MoEFFN(40, 96, 40, experts=4, k=2)
    _spread(layer)
    n = 50
    x = torch.randn(n, layer.d_in, requires_grad=True)
    forward = FlopCounterMode(display=False)
    with forward:
        y = layer(x)
    assert forward.get_total_flops() == 2 * layer.macs * n
    step = FlopCounterMode(display=False)
    with step:
        layer(x).backward(torch.ones_like(y))
    assert step.get_total_flops() == 6 * layer.macs * n  # forward 2 + input and weight gradients 4


def test_cost_per_token_grows_with_k_not_e():
    small, large = BTTMoE(256, 256, experts=4, k=2), BTTMoE(256, 256, experts=64, k=2)
    one = analyze("btt", 256, 256).macs
    assert small.macs == 2 * one + 256 * 4 and large.macs == 2 * one + 256 * 64
    _spread(large)
    counter = FlopCounterMode(display=False)
    with counter:
        large(torch.randn(8, 256))
    assert counter.get_total_flops() == 2 * 8 * large.macs  # 64 experts, yet only k terms per token


def test_taxonomy_of_the_named_structure():
    t = analyze("btt-moe:experts=8,k=2", 1024, 1024)
    assert t.spec.name == "btt-moe:experts=8,k=2"
    assert (t.moe.experts, t.moe.k, t.moe.macs_per_expert, t.moe.router_macs) == (8, 2, 65536, 8192)
    assert (t.params, t.macs) == (8 * 65536 + 8192, 2 * 65536 + 8192)
    assert (t.omega, t.psi, t.nu) == (0.0, 1.0, 0.5)  # one expert's exponents
    assert t.moe.omega_at_size < 0  # more parameters than MACs per token
    assert t.dims.rho == 8 and "moe" in t.to_json_dict()


@pytest.mark.parametrize(
    "text",
    [
        "btt-moe:experts=8,k=2",
        "btt-moe",
        "(1/3|0|2/3|0|2/3|1/3|0) moe:experts=4,k=1",
        '{"alpha": 0.5, "beta": 0, "gamma": 0.5, "delta": 0, "epsilon": 0.5, "phi": 0.5, "rho": 0,'
        ' "moe": {"experts": 8, "k": 2}}',
    ],
)
def test_routed_specs_round_trip(text):
    spec = parse_spec(text)
    assert spec.moe is not None
    assert parse_spec(spec.paper) == spec == parse_spec(spec.document())
    assert parse_spec("btt-moe") == parse_spec("btt-moe:experts=8,k=2")


def test_from_spec_structurize_and_export_documents(tmp_path):
    layer = EinsumLinear.from_spec("btt-moe:experts=4,k=2", 64, 32)
    assert isinstance(layer, BTTMoE) and (layer.experts, layer.k) == (4, 2)
    doc = {"specs": [{"theta": parse_spec("btt-moe:experts=4,k=1").document()}]}
    path = tmp_path / "best.json"
    path.write_text(json.dumps(doc))
    assert BTTMoE.from_spec(path, 64, 64).k == 1
    with pytest.raises(SpecError, match="routed spec builds a BTTMoE"):
        EinsumLinear("btt-moe", 64, 64)
    with pytest.raises(SpecError, match="expected a routed spec"):
        BTTMoE.from_spec("btt", 64, 64)
    model = nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 64))
    summary = structurize(model, "btt-moe:experts=8,k=2")
    assert len(summary.replaced) == 2 and all(isinstance(model[i], BTTMoE) for i in (0, 2))
    assert summary.spec == "btt-moe:experts=8,k=2"
    names = {n for g in param_groups(model, lr=1e-3, base_fan_in=64) for n in g["names"]}
    assert "0.router.weight" in names and "0.A" in names


def test_project_init_gives_the_rank_one_projection():
    torch.manual_seed(0)
    dense = nn.Linear(64, 64)
    model = nn.Sequential(dense)
    weight = dense.weight.detach().clone()
    summary = structurize(model, "btt-moe:experts=4,k=2", include="0", init="project")
    btt = EinsumLinear("btt", 64, 64)
    from structsearch.layers import project_dense

    assert summary.layers[0].projection_error == pytest.approx(project_dense(btt, weight), rel=1e-5)
    x = torch.randn(5, 64)
    _spread(model[0])  # any routing: the experts are identical and the gates sum to 1
    torch.testing.assert_close(model[0](x), btt(x) - btt.bias + dense.bias, rtol=1e-4, atol=1e-5)


def test_aux_loss_and_router_stats():
    layer = BTTMoE(32, 32, experts=4, k=1, balance_coef=1.0, z_coef=0.0)
    assert aux_loss(layer) == 0.0 and layer.router_stats() == {}
    layer(torch.randn(20, 32))
    stats = layer.router_stats()
    assert sorted(stats["load"]) == [0.0, 0.0, 0.0, 1.0]  # zero router: every token ties, one expert wins
    assert stats["entropy"] == pytest.approx(stats["max_entropy"])
    assert float(aux_loss(layer).detach()) == pytest.approx(stats["balancing_loss"]) == pytest.approx(1.0)
    assert aux_loss(layer) == 0.0  # collected once
    layer.eval()
    layer(torch.randn(4, 32))
    assert aux_loss(layer) == 0.0  # no auxiliary loss outside training


@pytest.mark.parametrize(
    ("spec", "task"), [("btt-moe:experts=4,k=2", "mlp-regression"), ("dense", "mlp-regression-moe")]
)
def test_evaluate_trains_routed_models(spec, task):
    r = evaluate(spec, task, budget=2e8, width=32, threads=1, eval_points=1, task_options={"val_size": 256})
    assert r.status == "ok" and r.steps > 1
    assert 0.85 < r.flops.measured_ratio <= 1.0 + 1e-9  # below 1: the dense input layer needs no input gradient


def test_standard_moe_tasks_check_their_options():
    from structsearch.tasks import get_task

    with pytest.raises(TaskError, match="k must be between"):
        get_task("char-lm-moe", experts=2, k=3)
    with pytest.raises(TaskError, match="depth - 1 must be even"):
        get_task("mlp-regression-moe", depth=4)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "structsearch", *args], capture_output=True, text=True, timeout=60)


def test_cli_taxonomy_on_the_name():
    out = _cli("taxonomy", "btt-moe:experts=8,k=2", "--json")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert (payload["params"], payload["macs"]) == (532480, 139264)
    assert payload["moe"]["experts"] == 8 and payload["moe"]["k"] == 2
    table = _cli("taxonomy", "btt-moe:experts=8,k=2")
    assert table.returncode == 0, table.stderr
    for word in ("MACs / token", "experts", "omega"):
        assert word in table.stdout
    bad = _cli("taxonomy", "btt-moe:experts=8,k=9")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "k must be between 1 and experts=8" in bad.stderr


def test_search_and_export_handle_a_routed_space(tmp_path):
    from structsearch.engine import search
    from structsearch.engine._space import load_space, space_from_mapping
    from structsearch.errors import SpaceError
    from structsearch.exporting import export

    assert load_space("btt-moe").moe.label == "experts=8,k=2"
    assert "moe" not in load_space("btt").model_dump(mode="json")  # unrouted spaces dump as before
    with pytest.raises(SpaceError, match="routed space needs zero"):
        space_from_mapping({"name": "x", "zero": ["beta"], "rho": [0, 0], "moe": {"experts": 4, "k": 1}})
    search("btt-moe", "mlp-regression", trials=4, evaluate_fn="toy", runs_dir=tmp_path, progress=False, study="m")
    doc = export("m", top=1, runs_dir=tmp_path, path=tmp_path / "best.json")
    assert doc["specs"][0]["theta"]["moe"] == {"experts": 8, "k": 2}
    layer = EinsumLinear.from_spec(tmp_path / "best.json", 64, 64)
    assert isinstance(layer, BTTMoE) and (layer.experts, layer.k) == (8, 2)
