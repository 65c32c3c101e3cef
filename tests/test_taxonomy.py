"""The taxonomy against independent computations: closed forms, log ratios, numerical rank."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from structsearch import SizeError, class_sizes, parse_spec
from structsearch.spec import CLASSES, Spec
from structsearch.taxonomy import analyze, batch_taxonomy, canonical_equivalent, exponents, symbolic_formulas

from .helpers import any_thetas, canonical_thetas, closed_form_counts, materialise, random_cores


def _has_empty_core(spec: Spec) -> bool:
    held_a = ("phi", "delta", "rho", "gamma", "alpha")
    held_b = ("phi", "epsilon", "rho", "gamma", "beta")
    return all(getattr(spec, c) == 0 for c in held_a) or all(getattr(spec, c) == 0 for c in held_b)


@settings(max_examples=300, deadline=None)
@given(canonical_thetas(), st.sampled_from([(64, 64), (256, 128), (100, 300), (1024, 1024)]))
def test_counts_equal_closed_forms(spec, sizes):
    d_in, d_out = sizes
    t = analyze(spec, d_in, d_out, max_padding=None)
    params, macs = closed_form_counts(t.dims.as_dict)
    if _has_empty_core(spec):
        # a core with no index is a scalar folded into the other (the closed form counts it
        # as 1 parameter and one MAC per output element)
        params, macs = params - 1, macs - t.dims.padded_out if spec.alpha == 1 else macs - t.dims.padded_in
    assert (t.params, t.macs, t.flops) == (params, macs, 2 * macs)


def test_dense_counts_are_the_matrix():
    t = analyze("dense", 300, 200)
    assert (t.params, t.macs) == (60_000, 60_000)


@settings(max_examples=200, deadline=None)
@given(canonical_thetas())
def test_exponents_equal_taxonomy_formulas(spec):
    a, b, g, d, e, f, r = spec.fractions
    e_ = exponents(spec)
    assert e_.nu == 1 + r - min(a, e)
    assert e_.omega == min(a + d, b + e) - min(a, e)
    assert e_.psi == min(1, 2 + r - a - e)


@settings(max_examples=150, deadline=None)
@given(canonical_thetas())
def test_omega_and_nu_are_log_ratios_of_exact_counts_at_large_d(spec):
    d = 2**60
    t = analyze(spec, d, d, max_padding=None)
    log_d = math.log(d)
    # MACs ~ d^(1+nu) and MACs/params ~ d^omega, up to constant factors of at most 2
    nu_measured = math.log(t.macs) / log_d - 1
    omega_measured = math.log(t.macs / t.params) / log_d
    assert abs(nu_measured - t.nu) <= 0.02
    assert abs(omega_measured - t.omega) <= 0.02


@settings(max_examples=200, deadline=None)
@given(any_thetas())
def test_canonical_flags_match_the_conditions(spec):
    a, b, g, d, e, f, r = spec.theta
    t = analyze(spec, 256, 256, max_padding=None)
    assert t.non_redundant == (min(a, e) >= min(b, d) - 1e-12)
    assert t.non_degenerate == (1 + r - min(a, e) <= 1 + 1e-9 if t.non_redundant else t.nu <= 1 + 1e-9)
    if not t.canonical and t.canonical_equivalent is not None:
        assert analyze(t.canonical_equivalent, 256, 256, max_padding=None).canonical


KNOWN = [
    # name, theta, omega, psi, nu  (taxonomy.md section 4)
    ("dense", "(1|0|0|1|0|0|0)", 0, 1, 1),
    ("low-rank:1/4", "(1|0|0|0|1|0|1/4)", 0, Fraction(1, 4), Fraction(1, 4)),
    ("low-rank:3/4", "(1|0|0|0|1|0|3/4)", 0, Fraction(3, 4), Fraction(3, 4)),
    ("kronecker", "(1/2|1/2|0|1/2|1/2|0|0)", Fraction(1, 2), 1, Fraction(1, 2)),
    ("sum-kronecker:1/4", "(1/2|1/2|0|1/2|1/2|0|1/4)", Fraction(1, 2), 1, Fraction(3, 4)),
    ("btt", "(1/2|0|1/2|0|1/2|1/2|0)", 0, 1, Fraction(1, 2)),
    ("btt:1/4", "(1/2|0|1/2|0|1/2|1/2|1/4)", 0, 1, Fraction(3, 4)),
    ("tt", "(1/2|1/4|1/4|1/4|1/2|1/4|0)", Fraction(1, 4), 1, Fraction(1, 2)),
    ("tt:1/4", "(1/2|1/4|1/4|1/4|1/2|1/4|1/4)", Fraction(1, 4), 1, Fraction(3, 4)),
]


@pytest.mark.parametrize(("name", "theta", "omega", "psi", "nu"), KNOWN)
def test_known_structures_table(name, theta, omega, psi, nu):
    spec = parse_spec(theta)
    assert spec.name == name
    e = exponents(spec)
    assert (e.omega, e.psi, e.nu) == (omega, psi, nu)
    assert analyze(spec, 4096, 4096).canonical


def test_symbolic_leading_orders():
    assert symbolic_formulas("btt")["params_square_leading"] == "2*d**(3/2)"
    assert symbolic_formulas("kronecker")["params_square_leading"] == "2*d"
    assert symbolic_formulas("dense")["params_square_leading"] == "d**2"
    assert symbolic_formulas("low-rank:1/2")["macs_square_leading"] == "2*d**(3/2)"


RANK_SIZES = [(16, 16), (24, 18), (12, 30), (64, 64)]


def _numerical_rank(spec, d_in, d_out, seed=0):
    dims = class_sizes(spec, d_in, d_out, max_padding=None)
    core_a, core_b = random_cores(dims.as_dict, np.random.default_rng(seed))
    w = materialise(dims.as_dict, core_a, core_b)[:d_out, :d_in]  # pad x, truncate y
    return np.linalg.matrix_rank(w)


@pytest.mark.parametrize("name", ["dense", "low-rank:1/4", "low-rank:1/2", "kronecker", "btt", "monarch"])
@pytest.mark.parametrize(("d_in", "d_out"), RANK_SIZES)
def test_rank_bound_is_reached_by_the_named_structures(name, d_in, d_out):
    spec = parse_spec(name)
    t = analyze(spec, d_in, d_out, max_padding=None)
    assert _numerical_rank(spec, d_in, d_out) == t.rank_bound


@settings(max_examples=60, deadline=None)
@given(any_thetas(), st.sampled_from(RANK_SIZES), st.integers(0, 2**16))
def test_rank_never_exceeds_the_bound(spec, sizes, seed):
    d_in, d_out = sizes
    t = analyze(spec, d_in, d_out, max_padding=None)
    assert _numerical_rank(spec, d_in, d_out, seed) <= t.rank_bound


def test_low_rank_bound_is_the_rank_class():
    t = analyze("low-rank:1/2", 1024, 1024)
    assert t.rank_bound == 32 and t.psi == 0.5
    assert any("rank-deficient" in w for w in t.warnings)


def test_redundant_theta_maps_to_its_relabelling():
    t = analyze("(0|1/2|1/2|1/2|0|1/2|0)", 1024, 1024)
    assert not t.non_redundant and not t.canonical
    assert t.canonical_equivalent == parse_spec("btt")
    assert any("redundant" in w for w in t.warnings)
    assert t.cheapest_macs < t.macs  # the engine knows the cheaper order
    assert t.cheapest_order[0].startswith("x.B")


def test_degenerate_btt_rank_is_cut_to_the_bond_cap():
    t = analyze("(1/2|0|1/2|0|1/2|1/2|3/4)", 1024, 1024)
    assert not t.non_degenerate and t.nu == 1.25
    assert t.canonical_equivalent == parse_spec("btt:0.5")


def test_degenerate_kronecker_sum_has_no_canonical_equivalent():
    t = analyze("(1/2|1/2|0|1/2|1/2|0|3/4)", 1024, 1024)
    assert t.canonical_equivalent is None
    assert any("dense (1|0|0|1|0|0|0) dominates" in w for w in t.warnings)


def test_canonical_equivalent_of_canonical_is_itself():
    spec = parse_spec("btt")
    assert canonical_equivalent(spec) == spec


def test_padding_is_reported_and_refused_past_15_percent():
    t = analyze("tt", 1024, 1024)
    assert 0 < t.padding <= 0.15
    assert any("zero-padded" in w for w in t.warnings)
    with pytest.raises(SizeError, match=r"input classes multiply to 9, 28\.6% padding over 7"):
        analyze("kronecker", 7, 7)


@settings(max_examples=100, deadline=None)
@given(any_thetas(), st.sampled_from([(64, 64), (1000, 768), (4096, 1024)]))
def test_class_sizes_cover_both_sides(spec, sizes):
    dims = class_sizes(spec, *sizes, max_padding=None)
    assert dims.padded_in >= sizes[0] and dims.padded_out >= sizes[1]
    assert all(v >= 1 for v in dims.as_dict.values())


def test_batch_path_equals_single_path():
    rng = np.random.default_rng(0)
    specs = []
    while len(specs) < 300:
        inp, out = rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(3))
        specs.append(Spec.from_theta((*inp, *out, rng.uniform(0, 0.6))))
    specs += [parse_spec(n) for n in ("dense", "btt", "kronecker", "low-rank:0.5", "(0|1|0|0|1|0|0)")]
    thetas = np.array([s.theta for s in specs])
    for d_in, d_out in ((1024, 1024), (768, 3072)):
        batch = batch_taxonomy(thetas, d_in, d_out)
        for k, spec in enumerate(specs):
            t = analyze(spec, d_in, d_out, max_padding=None)
            assert batch["sizes"][k].tolist() == [t.dims.as_dict[c] for c in CLASSES]
            assert (batch["params"][k], batch["macs"][k]) == (t.params, t.macs)
            assert batch["omega"][k] == pytest.approx(t.omega, abs=1e-9)
            assert batch["psi"][k] == pytest.approx(t.psi, abs=1e-9)
            assert batch["nu"][k] == pytest.approx(t.nu, abs=1e-9)
            assert bool(batch["canonical"][k]) == t.canonical
            assert batch["padding"][k] == pytest.approx(t.padding)


def test_batch_path_flags_invalid_rows():
    out = batch_taxonomy(np.array([[0.5, 0.5, 0.5, 1, 0, 0, 0], [1, 0, 0, 1, 0, 0, 0]]), 64, 64)
    assert out["valid"].tolist() == [False, True]
    with pytest.raises(ValueError, match=r"shape \(N, 7\)"):
        batch_taxonomy(np.zeros((3, 6)), 64, 64)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(SizeError, match="d_in"):
        analyze("btt", bad, 64)


def test_a_relabelled_theta_gets_exactly_swapped_sizes_and_equal_counts():
    """Rounding ties between alpha and beta (or delta and epsilon) follow the relabelling, found by an audit:
    (1/6|5/6|0|1/3|1/3|1/3|1/6) at 100 had 2580 parameters against its equivalent's 2100."""
    import itertools

    import numpy as np

    from structsearch.sizes import class_sizes
    from structsearch.spec import Spec
    from structsearch.taxonomy import batch_taxonomy

    swap = {"alpha": "beta", "beta": "alpha", "delta": "epsilon", "epsilon": "delta"}
    thetas = []
    for a, b, d, e, r in itertools.product(range(13), range(13), range(13), range(13), (0, 2, 4)):
        if a + b <= 12 and d + e <= 12 and (a == b or d == e):  # the ties where the rule matters
            thetas.append(
                Spec(
                    alpha=a / 12,
                    beta=b / 12,
                    gamma=(12 - a - b) / 12,
                    delta=d / 12,
                    epsilon=e / 12,
                    phi=(12 - d - e) / 12,
                    rho=r / 12,
                )
            )
    checked = 0
    for size in (64, 100, 256, 1000):
        rows = np.array([[float(getattr(s, c)) for c in CLASSES] for s in thetas])
        batch = batch_taxonomy(rows, size, size)["sizes"]
        for spec, row in zip(thetas, batch, strict=True):
            mine = class_sizes(spec, size, size, max_padding=None).as_dict
            assert [mine[c] for c in CLASSES] == row.tolist()  # the batch path agrees
            if spec.relabelled().paper == spec.paper:
                continue  # the relabelling leaves theta as it is: nothing to swap
            theirs = class_sizes(spec.relabelled(), size, size, max_padding=None).as_dict
            assert theirs == {swap.get(c, c): n for c, n in mine.items()}, (spec.paper, size)
            checked += 1
    assert checked > 4000
    a, b = analyze("(1/6|5/6|0|1/3|1/3|1/3|1/6)", 100, 100), analyze("(5/6|1/6|0|1/3|1/3|1/3|1/6)", 100, 100)
    assert a.params == b.params == 2100


def test_analyze_is_cached_per_spec_and_sizes_but_each_caller_owns_its_lists():
    from structsearch.taxonomy import _analyze

    first = analyze("(1/2|0|1/2|0|1/2|1/2|0)", 100, 300)  # padded: it carries warnings
    assert first.warnings and _analyze.cache_info().currsize >= 1
    first.warnings.append("a caller's own note")
    first.einsum.clear()
    again = analyze("(1/2|0|1/2|0|1/2|1/2|0)", 100, 300)
    assert "a caller's own note" not in again.warnings and again.einsum == ["ga,fga->fg", "fg,feg->fe"]
    assert again == analyze(parse_spec("(1/2|0|1/2|0|1/2|1/2|0)"), 100, 300)
    # a different size or padding limit is a different report, not the cached one
    assert (analyze("btt", 100, 300).d_in, analyze("btt", 300, 100).d_in) == (100, 300)
    with pytest.raises(SizeError):
        analyze("(1/2|0|1/2|0|1/2|1/2|0)", 100, 300, max_padding=0.0)


def test_a_structure_costlier_than_dense_at_its_size_says_so():
    # low rank at full rank (rho = 1): rank d for 2 d^2 params and MACs, nu = 1 yet twice dense's cost
    full_rank = analyze("(1|0|0|0|1|0|1)", 256, 256)
    assert (full_rank.params, full_rank.macs) == (2 * 256 * 256, 2 * 256 * 256)
    # its cheapest order (W = A.B once per 1024-vector batch, then x.W) costs 1.25x dense's MACs: still costlier
    assert full_rank.cheapest_macs == 256**3 // 1024 + 256 * 256
    costlier = "costlier than dense at this size: 2x its params and 1.25x its MACs"
    assert any(w.startswith(costlier) for w in full_rank.warnings)
    for cheaper in ("dense", "btt", "low-rank:0.5", "kronecker"):
        assert not any("costlier than dense" in w for w in analyze(cheaper, 256, 256).warnings), cheaper
