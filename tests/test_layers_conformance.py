"""The conformance suite every structure family passes (style.md 8).

For each family and size: the output equals the materialised dense matrix (numpy, straight
from taxonomy.md 1), the counts equal the taxonomy and the measured FLOPs, the state_dict
round-trips, gradients reach every core, fast paths equal the general one, padding behaves.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from structsearch.errors import SizeError, SpecError
from structsearch.layers import EinsumLinear
from structsearch.layers._fast_paths import MATERIALISE_AT, has_unit_contraction
from structsearch.sizes import class_sizes
from structsearch.spec import Spec, parse_spec
from structsearch.taxonomy import analyze
from tests.helpers import canonical_thetas, closed_form_counts, materialise

FAMILIES = [
    "dense",
    "low-rank:0.5",
    "kronecker",
    "sum-kronecker:0.25",
    "btt",
    "btt:0.25",
    "tt:0",
    "tt:0.25",
    "(0|0|1|0|1/6|5/6|0)",  # alpha = 1: the btt path's step 1 is an outer product (broadcast multiply)
    "(0|1/2|1/2|1/2|1/2|0|0)",  # alpha = 1 off the fast families: the broadcast path
]
SIZES = [(16, 16), (24, 20), (21, 33), (48, 64)]


def _random_canonical(seed: int) -> Spec:
    """A seeded random canonical theta on the grid of twelfths (as tests.helpers draws them)."""
    rng = np.random.default_rng(seed)
    while True:
        a, b = sorted(rng.integers(0, 13, size=2))
        d, e = sorted(rng.integers(0, 13, size=2))
        ins = (a, b - a, 12 - b)
        outs = (d, e - d, 12 - e)
        al, be, ga = ins
        de, ep, ph = outs
        if min(al, ep) < min(be, de):
            al, be, de, ep = be, al, ep, de
        if min(al, ep) == 0:
            continue  # keep the random points away from the dense/degenerate corners
        r = int(rng.integers(0, min(al, ep) + 1))
        return Spec.from_theta([v / 12 for v in (al, be, ga, de, ep, ph, r)])


RANDOM = [_random_canonical(seed).paper for seed in range(4)]


def _cases() -> list:
    cases = []
    for spec in FAMILIES + RANDOM:
        for d_in, d_out in SIZES:
            try:
                class_sizes(parse_spec(spec), d_in, d_out)
            except SizeError:
                continue
            cases.append(pytest.param(spec, d_in, d_out, id=f"{spec}-{d_in}x{d_out}"))
    return cases


CASES = _cases()


def _layer(spec: str, d_in: int, d_out: int, seed: int = 0, **kwargs) -> EinsumLinear:
    torch.manual_seed(seed)
    layer = EinsumLinear(spec, d_in, d_out, **kwargs)
    with torch.no_grad():
        layer.bias.normal_()
        for core in layer.cores:
            if core.is_gain:  # a 1x1 gain starts at exactly 1; randomise it too
                core.param.normal_()
    return layer


def _taxonomy_cores(layer: EinsumLinear) -> tuple[np.ndarray, np.ndarray]:
    """The cores in taxonomy.md's layouts: A ~ (f, d, r, g, a), B ~ (f, e, r, g, b)."""
    a, b, g, d, e, f, r = (layer.dims[c] for c in ("alpha", "beta", "gamma", "delta", "epsilon", "phi", "rho"))
    # a core with no index (the dense point's second core) is the scalar 1
    core_a = torch.ones(g, a, r, f, d) if layer.A is None else layer.A.detach()
    core_b = torch.ones(f, g, b, r, e) if layer.B is None else layer.B.detach()
    core_a = core_a.double().permute(3, 4, 2, 0, 1).numpy()  # (g,a,r,f,d) -> (f,d,r,g,a)
    core_b = core_b.double().permute(0, 4, 3, 1, 2).numpy()  # (f,g,b,r,e) -> (f,e,r,g,b)
    return core_a, core_b


def test_suite_covers_every_family_and_padding() -> None:
    specs = {case.values[0] for case in CASES}
    assert set(FAMILIES) <= specs and set(RANDOM) <= specs
    assert any(class_sizes(parse_spec(c.values[0]), c.values[1], c.values[2]).padding > 0 for c in CASES)


def _path(spec: str, d_in: int, d_out: int, which: str) -> str:
    """The layer's structural path (its fast path or general), or "materialised"."""
    return EinsumLinear(spec, d_in, d_out, device="meta").structural_path if which == "structural" else which


@pytest.mark.parametrize("path", ["structural", "materialised"])
@pytest.mark.parametrize(("spec", "d_in", "d_out"), CASES)
def test_output_equals_materialised_matrix(spec: str, d_in: int, d_out: int, path: str) -> None:
    if path == "materialised" and spec == "dense":
        pytest.skip("the dense point has one core: nothing to materialise")
    layer = _layer(spec, d_in, d_out, path=_path(spec, d_in, d_out, path))
    w = materialise(layer.dims, *_taxonomy_cores(layer))[:d_out, :d_in]  # independent numpy reference
    np.testing.assert_allclose(layer.to_dense().detach().double().numpy(), w, rtol=1e-5, atol=1e-5)
    x = torch.randn(2, 3, d_in)
    expected = x.double().numpy() @ w.T + layer.bias.detach().double().numpy()
    np.testing.assert_allclose(layer(x).detach().double().numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("spec", "d_in", "d_out"), CASES)
def test_counts_equal_taxonomy_and_flop_counter(spec: str, d_in: int, d_out: int) -> None:
    layer = _layer(spec, d_in, d_out)
    tax = analyze(spec, d_in, d_out)
    assert (layer.params, layer.macs) == (tax.params, tax.macs)
    if layer.path != "dense":  # the closed forms count the dense point's scalar core; the taxonomy folds it
        assert (layer.params, layer.macs) == closed_form_counts(layer.dims)
    assert layer.params == sum(core.param.numel() for core in layer.cores)
    if has_unit_contraction(layer.dims) and layer.path != "dense":
        # an outer-product step is a broadcast multiply there, which the counter does not see (elementwise);
        # the evaluator charges the taxonomy's MACs either way, and the general path's bmm shows them
        layer = _layer(spec, d_in, d_out, path="general")
    else:  # the structure's own contraction, also where the layer runs on the materialised weight
        layer = _layer(spec, d_in, d_out, path=layer.structural_path)
    n = 5
    x = torch.randn(n, d_in, requires_grad=True)
    with FlopCounterMode(display=False) as forward:
        y = layer(x)
    with FlopCounterMode(display=False) as backward:
        y.sum().backward()
    fwd, bwd = forward.get_total_flops(), backward.get_total_flops()
    assert (fwd, bwd) == (2 * n * layer.macs, 4 * n * layer.macs)


@pytest.mark.parametrize(("spec", "d_in", "d_out"), CASES)
def test_state_dict_round_trip(spec: str, d_in: int, d_out: int) -> None:
    layer = _layer(spec, d_in, d_out, seed=1)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    other = EinsumLinear(spec, d_in, d_out)
    other.load_state_dict(torch.load(buffer))
    x = torch.randn(4, d_in)
    torch.testing.assert_close(other(x), layer(x), rtol=0, atol=0)
    assert set(layer.state_dict()) == {core.name for core in layer.cores} | {"bias"}


@pytest.mark.parametrize("path", ["structural", "materialised"])
@pytest.mark.parametrize(("spec", "d_in", "d_out"), CASES)
def test_gradients_reach_every_core_and_match_general_path(spec: str, d_in: int, d_out: int, path: str) -> None:
    if path == "materialised" and spec == "dense":
        pytest.skip("the dense point has one core: nothing to materialise")
    layer = _layer(spec, d_in, d_out, seed=2, path=_path(spec, d_in, d_out, path))
    general = _layer(spec, d_in, d_out, seed=2, path="general")
    x = torch.randn(6, d_in, requires_grad=True)
    x_general = x.detach().clone().requires_grad_(True)
    target = torch.randn(6, d_out)
    for module, inp in ((layer, x), (general, x_general)):
        ((module(inp) - target) ** 2).sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
        torch.testing.assert_close(param.grad, general.get_parameter(name).grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x.grad, x_general.grad, rtol=1e-4, atol=1e-4)
    assert x.grad.shape == (6, d_in)


@pytest.mark.parametrize(("spec", "d_in", "d_out"), CASES)
def test_padding_behaves(spec: str, d_in: int, d_out: int) -> None:
    layer = _layer(spec, d_in, d_out)
    sizes = class_sizes(parse_spec(spec), d_in, d_out)
    assert (layer.padded_in, layer.padded_out) == (sizes.padded_in, sizes.padded_out)
    assert layer.to_dense().shape == (d_out, d_in) and layer(torch.randn(3, d_in)).shape == (3, d_out)
    if sizes.padding > 0:
        assert f"padding in {sizes.padding_in:.1%} out {sizes.padding_out:.1%}" in repr(layer)
        # the zero-padded input columns never reach the output: only the first d_in features matter
        full = layer.to_dense()
        x = torch.randn(3, d_in)
        torch.testing.assert_close(layer(x), x @ full.T + layer.bias)
    else:
        assert "no padding" in repr(layer)


def test_too_much_padding_is_refused_with_the_sizes() -> None:
    with pytest.raises(SizeError, match=r"d_in=30, d_out=45: input classes multiply to 36, 20.0% padding"):
        EinsumLinear("(1/3|1/3|1/3|1/3|1/3|1/3|1/4)", 30, 45)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=canonical_thetas(), d_in=st.integers(4, 40), d_out=st.integers(4, 40))
def test_random_canonical_theta_matches_materialisation(spec: Spec, d_in: int, d_out: int) -> None:
    try:
        layer = _layer(spec, d_in, d_out)
    except SizeError:
        return
    w = materialise(layer.dims, *_taxonomy_cores(layer))[:d_out, :d_in]
    x = torch.randn(3, d_in)
    expected = x.double().numpy() @ w.T + layer.bias.detach().double().numpy()
    np.testing.assert_allclose(layer(x).detach().double().numpy(), expected, rtol=1e-4, atol=1e-4)
    if layer.structural_path != "dense":  # most of these small layers materialise: check their contraction too
        structural = _layer(spec, d_in, d_out, path=layer.structural_path)
        np.testing.assert_allclose(structural(x).detach().double().numpy(), expected, rtol=1e-4, atol=1e-4)
    tax = analyze(spec, d_in, d_out)
    assert (layer.params, layer.macs) == (tax.params, tax.macs)


@pytest.mark.parametrize(("spec", "d_in", "d_out"), CASES)
def test_materialised_path_is_chosen_by_its_cost_and_the_call_size(spec: str, d_in: int, d_out: int) -> None:
    layer = _layer(spec, d_in, d_out)
    rho, entries = layer.dims["rho"], layer.padded_in * layer.padded_out
    # structural: macs per vector at MATERIALISE_AT of dense speed; materialised: build rho * entries, then d_in d_out
    saving = Fraction(layer.macs) / Fraction(str(MATERIALISE_AT)) - d_in * d_out
    expected = None if spec == "dense" or saving <= 0 else max(1, math.ceil(rho * entries / saving))
    assert layer.materialise_from == expected and (layer.path == "materialised") == (expected is not None)
    assert layer.structural_path != "materialised" and f"path={layer.path}" in repr(layer)
    if spec == "dense":
        with pytest.raises(SpecError, match="does not apply"):
            EinsumLinear(spec, d_in, d_out, path="materialised")
        return
    structural = _layer(spec, d_in, d_out, path=layer.structural_path)
    calls = [(layer, expected), (layer, expected - 1)] if expected else []
    calls.append((_layer(spec, d_in, d_out, path="materialised"), 1))  # a forced path materialises every call
    for module, n in calls:
        if n < 1:
            continue
        x = torch.randn(n, d_in)
        with FlopCounterMode(display=False) as counter:
            y = module(x)
        torch.testing.assert_close(y, structural(x), rtol=1e-4, atol=1e-4)
        materialised = module.materialise_from is not None and n >= module.materialise_from
        # one GEMM by the d_out x d_in weight per vector, plus the weight's rho contraction (a bmm when rho > 1)
        dense_work = 2 * n * d_in * d_out + (2 * rho * entries if rho > 1 else 0)
        if materialised:
            assert counter.get_total_flops() == dense_work
        elif not has_unit_contraction(layer.dims):  # the structure's own contraction (outer products uncounted)
            assert counter.get_total_flops() == 2 * n * layer.macs


def test_materialising_stops_at_the_measured_size() -> None:
    heavy = "(1/4|7/12|1/6|1/12|1/6|3/4|1/12)"  # MACs above 0.8 of dense's at every width here
    assert EinsumLinear(heavy, 128, 128).path == "materialised"
    assert EinsumLinear(heavy, 1024, 1024, device="meta").path == "materialised"  # the largest width measured
    big = EinsumLinear(heavy, 1024, 1100, device="meta")
    assert big.macs >= MATERIALISE_AT * 1024 * 1100
    assert big.path == big.structural_path == "general" and big.materialise_from is None
