"""What a candidate costs and how expressive it is: pure functions over (spec, d_in, d_out).

Every number here is read off the index graph (:mod:`structsearch.graph`):

- exact counts at concrete sizes: parameters, MACs of the layer's order, the cheapest order;
- the exponents of a square layer for large d, derived once from the symbolic template
  graph: FLOPs ~ d^(1+nu), params ~ d^(1+nu-omega), rank ~ d^psi;
- the canonical flags: non-redundant (the layer's order is the cheaper of the two
  sequential orders) and non-degenerate (no more FLOPs than dense, nu <= 1), with the
  canonical equivalent where one exists;
- the rank upper bound at concrete sizes.

The exponent formulas are lambdified to numpy once, so :func:`batch_taxonomy` scores
millions of candidates per second. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cache, lru_cache
from typing import Any

import numpy as np
import sympy

from structsearch.graph import (
    A_LAYOUT,
    B_LAYOUT,
    CLASS_OF_LETTER,
    D_IN,
    D_OUT,
    LETTER,
    X_LAYOUT,
    Y_LAYOUT,
    IndexGraph,
    RankBound,
    T,
    class_values,
    exponent_of,
    two_core_graph,
)
from structsearch.sizes import MAX_PADDING, ClassSizes, check_layer_sizes, class_sizes
from structsearch.spec import CLASSES, Spec, parse_spec

__all__ = [
    "CHEAPEST_ORDER_BATCH",
    "EXPONENT_TOLERANCE",
    "Exponents",
    "RoutedCounts",
    "Taxonomy",
    "analyze",
    "batch_taxonomy",
    "canonical_equivalent",
    "exponents",
    "symbolic_formulas",
]

EXPONENT_TOLERANCE = 1e-9
CHEAPEST_ORDER_BATCH = 1024  # input vectors per batch when comparing contraction orders
_D = sympy.Symbol("d", positive=True)


# -- exponent formulas derived from the template graph -------------------------------
@dataclass(frozen=True)
class _ExponentFormulas:
    """Leading exponents in d of a square layer, as sympy expressions of the t symbols."""

    flops: sympy.Expr  # of the layer's order x.A.B
    flops_relabelled: sympy.Expr  # of the other sequential order x.B.A
    params: sympy.Expr
    rank: sympy.Expr
    bond_cap: sympy.Expr  # largest useful exponent of the rank class rho

    @property
    def nu(self) -> sympy.Expr:
        return self.flops - 1

    @property
    def omega(self) -> sympy.Expr:
        return self.flops - self.params

    @property
    def psi(self) -> sympy.Expr:
        return sympy.Min(1, self.rank)


@cache
def _formulas() -> _ExponentFormulas:
    graph = two_core_graph()  # exponents stay the symbols T
    square = {D_OUT: D_IN}

    def exp(expr: sympy.Expr) -> sympy.Expr:
        return exponent_of(sympy.sympify(expr).subs(square), D_IN)

    rank = sympy.Min(*(exp(b.expr(graph.sizes)) for b in graph.rank_bounds()))
    # sizes are d^t, so the exponent of a product of indices is the sum of their t's
    t_of = {LETTER[c]: T[c] for c in CLASSES}
    caps = [sympy.Add(*(t_of[i] for i in others)) for others in graph.bond_caps()["r"]]
    return _ExponentFormulas(
        flops=exp(graph.macs_expr(("A", "B"))),
        flops_relabelled=exp(graph.macs_expr(("B", "A"))),
        params=exp(graph.params_expr()),
        rank=rank,
        bond_cap=sympy.Min(*caps),
    )


_SYMBOLS = [T[c] for c in CLASSES]


@cache
def _vectorised() -> dict[str, Callable[..., np.ndarray]]:
    f = _formulas()
    exprs = {
        "nu": f.nu,
        "omega": f.omega,
        "psi": f.psi,
        "flops_relabelled": f.flops_relabelled,
        "flops": f.flops,
        "bond_cap": f.bond_cap,
    }
    return {k: sympy.lambdify(_SYMBOLS, v, modules="numpy", cse=True) for k, v in exprs.items()}


@cache
def _exact() -> dict[str, Callable[..., Fraction]]:
    """The same formulas as plain Python over Fractions: exact and fast for one spec."""
    f = _formulas()
    exprs = {
        "nu": f.nu,
        "omega": f.omega,
        "psi": f.psi,
        "nu_relabelled": f.flops_relabelled - 1,
        "bond_cap": f.bond_cap,
    }
    return {k: sympy.lambdify(_SYMBOLS, v, modules=[{"Max": max, "Min": min}]) for k, v in exprs.items()}


@dataclass(frozen=True)
class Exponents:
    """omega, psi, nu of a square layer, exact where theta is made of simple fractions."""

    omega: Fraction
    psi: Fraction
    nu: Fraction
    nu_relabelled: Fraction
    bond_cap: Fraction

    @property
    def non_redundant(self) -> bool:
        return bool(self.nu <= self.nu_relabelled + EXPONENT_TOLERANCE)

    @property
    def non_degenerate(self) -> bool:
        return bool(self.nu <= 1 + EXPONENT_TOLERANCE)


def exponents(spec: Spec) -> Exponents:
    """The taxonomy exponents of a spec, from the graph's symbolic formulas.

    >>> e = exponents(Spec.parse("kronecker"))
    >>> (str(e.omega), str(e.psi), str(e.nu))
    ('1/2', '1', '1/2')
    """
    theta = spec.fractions
    return Exponents(**{k: Fraction(fn(*theta)) for k, fn in _exact().items()})


def canonical_equivalent(spec: Spec) -> Spec | None:
    """The canonical theta computing the same operator family, or None where none exists.

    A redundant theta is relabelled (the cores swap roles). A degenerate one has its rank
    class cut to the bond cap read off the graph (a larger bond adds nothing); if it is
    still degenerate, no canonical point represents the family (dense dominates it).

    >>> canonical_equivalent(Spec.parse("(0|1/2|1/2|1/2|0|1/2|0)")).name
    'btt'
    >>> canonical_equivalent(Spec.parse("(1/2|0|1/2|0|1/2|1/2|3/4)")).name
    'btt:1/2'
    """
    candidate = spec if exponents(spec).non_redundant else spec.relabelled()
    if exponents(candidate).non_degenerate:
        return candidate
    cap = float(exponents(candidate).bond_cap)
    if cap >= candidate.rho:
        return None
    capped = Spec(**{**candidate.as_dict(), "rho": cap})
    return capped if exponents(capped).non_degenerate else None


# -- the full report --------------------------------------------------------------------
@dataclass(frozen=True)
class RoutedCounts:
    """What routing (BTT-MoE, taxonomy.md 6) does to the counts: one expert, the router, the totals.

    Per token, k of the E rank-one terms run, plus the router (d_in x E). ``params`` and
    ``macs`` of the :class:`Taxonomy` are the whole layer's parameters and the MACs per token.
    """

    experts: int
    k: int
    params_per_expert: int
    macs_per_expert: int
    router_params: int
    router_macs: int
    macs_all_experts: int  # per token if every expert ran: the dense-materialised rank-E BTT's order
    omega_at_size: float  # log_d(MACs per token / params) at these sizes; < 0: each weight serves k/E of tokens
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Taxonomy:
    """Everything the taxonomy says about one spec at concrete layer sizes."""

    spec: Spec
    d_in: int
    d_out: int
    dims: ClassSizes
    params: int
    macs: int
    omega: float
    psi: float
    nu: float
    non_redundant: bool
    non_degenerate: bool
    canonical_equivalent: Spec | None
    rank_bound: int
    rank_bound_reason: str
    einsum: list[str]
    cheapest_order: list[str]
    cheapest_macs: float
    warnings: list[str] = field(default_factory=list)
    moe: RoutedCounts | None = None  # set for a routed spec; params and macs are then per token, router included

    @property
    def flops(self) -> int:
        """Forward FLOPs per input vector (2 per MAC)."""
        return 2 * self.macs

    @property
    def canonical(self) -> bool:
        return self.non_redundant and self.non_degenerate

    @property
    def name(self) -> str | None:
        return self.spec.name

    @property
    def padding(self) -> float:
        return self.dims.padding

    @property
    def dense_macs(self) -> int:
        return self.d_in * self.d_out

    def to_json_dict(self) -> dict[str, Any]:
        """The ``structsearch taxonomy --json`` object (exactly these keys, and ``moe`` for a routed spec)."""
        out = {
            "theta": self.spec.as_dict(),
            "dims": self.dims.as_dict,
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "omega": self.omega,
            "psi": self.psi,
            "nu": self.nu,
            "canonical": self.canonical,
            "warnings": list(self.warnings),
            "einsum": list(self.einsum),
        }
        if self.moe is not None:
            out["moe"] = self.moe.as_dict()
        return out


def _warnings(spec: Spec, dims: ClassSizes, exp: Exponents, equivalent: Spec | None, t: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if not exp.non_redundant:
        out.append(
            f"redundant: min(alpha, epsilon) < min(beta, delta), so contracting B with x first is cheaper "
            f"(nu' = {float(exp.nu_relabelled):.4g} < nu = {float(exp.nu):.4g})"
        )
    if not exp.non_degenerate:
        out.append(
            f"degenerate: nu = {float(exp.nu):.4g} > 1, more FLOPs than a dense layer, which represents every matrix"
        )
    if not (exp.non_redundant and exp.non_degenerate):
        if equivalent is None:
            out.append("no canonical equivalent: dense (1|0|0|1|0|0|0) dominates this family")
        else:
            out.append(
                f"canonical equivalent: {equivalent.paper}" + (f" ({equivalent.name})" if equivalent.name else "")
            )
    if dims.padded_in > dims.d_in:
        out.append(
            f"input classes multiply to {dims.padded_in} > d_in = {dims.d_in}: x zero-padded by {dims.padding_in:.2%}"
        )
    if dims.padded_out > dims.d_out:
        out.append(
            f"output classes multiply to {dims.padded_out} > d_out = {dims.d_out}: "
            f"y truncated, {dims.padding_out:.2%} wasted"
        )
    for c in CLASSES:
        if getattr(spec, c) > 0 and getattr(dims, c) == 1:
            out.append(f"class {c} has exponent {getattr(spec, c):.4g} but rounds to size 1 at these sizes")
    if t["cheapest_macs"] < 0.9 * t["macs"]:
        out.append(
            f"computed wastefully: the cheapest order ({'; '.join(t['cheapest_order'])}) needs "
            f"{t['cheapest_macs']:,.0f} MACs per vector at batch {CHEAPEST_ORDER_BATCH}, vs {t['macs']:,} for x.A.B"
        )
    dense = dims.d_in * dims.d_out
    macs = min(t["macs"], t["cheapest_macs"])  # in its cheapest order, too
    if t["params"] >= dense and macs >= dense and t["params"] + macs > 2 * dense:
        out.append(
            f"costlier than dense at this size: {t['params'] / dense:.3g}x its params and {macs / dense:.3g}x "
            "its MACs, for no more expressivity (a dense layer represents every matrix)"
        )
    if t["rank_bound"] < min(dims.d_in, dims.d_out):
        out.append(f"rank-deficient: rank <= {t['rank_bound']:,} < min(d_in, d_out) = {min(dims.d_in, dims.d_out):,}")
    return out


def analyze(spec: Spec | str, d_in: int, d_out: int, max_padding: float | None = MAX_PADDING) -> Taxonomy:
    """The full taxonomy of ``spec`` for a d_in -> d_out layer.

    >>> t = analyze("btt", 1024, 1024)
    >>> t.params, t.macs, t.omega, t.psi, t.nu, t.canonical
    (65536, 65536, 0.0, 1.0, 0.5, True)
    >>> t.einsum
    ['ga,fga->fg', 'fg,feg->fe']
    """
    spec = parse_spec(spec)
    if spec.moe is not None:
        return _routed(analyze(spec.base, d_in, d_out, max_padding), spec)
    d_in, d_out = check_layer_sizes(d_in, d_out)
    report = _analyze(spec, d_in, d_out, max_padding)
    # the cached report's lists copied, so that a caller's edits stay its own
    return replace(
        report, einsum=list(report.einsum), cheapest_order=list(report.cheapest_order), warnings=list(report.warnings)
    )


# A search analyses the same (spec, sizes) many times: every layer it builds, every width a
# frontier ladder's iso-FLOP search tries (benchmarks/results/throughput.md, "Taxonomy cache").
@lru_cache(maxsize=4096)
def _analyze(spec: Spec, d_in: int, d_out: int, max_padding: float | None) -> Taxonomy:
    dims = class_sizes(spec, d_in, d_out, max_padding=max_padding)
    graph = two_core_graph(spec)
    values = {i: v for i, v in class_values(dims.as_dict).items() if i in graph.sizes}
    macs = graph.macs(values)
    # the graph's bounds hold for the padded operator; padding x and truncating y keep
    # only a d_out x d_in block of it
    bounds = [*graph.rank_bounds(), RankBound("d_in", ((),), ()), RankBound("d_out", ((),), ())]
    bound_values = [b.value(values) for b in bounds[:-2]] + [d_in, d_out]
    tightest = int(np.argmin(bound_values))
    cheapest_order, cheapest_macs = graph.cheapest_path(values, batch=CHEAPEST_ORDER_BATCH)
    exp = exponents(spec)
    equivalent = canonical_equivalent(spec)
    facts = {
        "params": graph.params(values),
        "macs": macs,
        "cheapest_macs": cheapest_macs,
        "cheapest_order": cheapest_order,
        "rank_bound": bound_values[tightest],
    }
    return Taxonomy(
        spec=spec,
        d_in=d_in,
        d_out=d_out,
        dims=dims,
        params=facts["params"],
        macs=macs,
        omega=float(exp.omega),
        psi=float(exp.psi),
        nu=float(exp.nu),
        non_redundant=exp.non_redundant,
        non_degenerate=exp.non_degenerate,
        canonical_equivalent=None if (exp.non_redundant and exp.non_degenerate) else equivalent,
        rank_bound=bound_values[tightest],
        rank_bound_reason=bounds[tightest].reason,
        einsum=[s.einsum for s in graph.steps()],
        cheapest_order=cheapest_order,
        cheapest_macs=cheapest_macs,
        warnings=_warnings(spec, dims, exp, equivalent, facts),
    )


def _routed(one: Taxonomy, spec: Spec) -> Taxonomy:
    """The taxonomy of a routed spec from that of one expert (its base theta, rank one).

    >>> t = analyze("btt-moe:experts=8,k=2", 1024, 1024)
    >>> t.params, t.macs, t.moe.macs_per_expert, t.moe.router_macs, t.dims.rho
    (532480, 139264, 65536, 8192, 8)
    """
    assert spec.moe is not None
    experts, k = spec.moe.experts, spec.moe.k
    router = one.d_in * experts
    params, macs = experts * one.params + router, k * one.macs + router
    note = (
        f"each token runs {k} of {experts} rank-one terms ({k} x {one.macs:,} MACs) plus the router ({router:,}); "
        f"omega, psi, nu are one expert's exponents (E, k fixed as d grows): no sharing (omega = {one.omega:g}), "
        f"psi = {one.psi:g} per token; at this size each weight serves k/E of the tokens (omega_at_size < 0)"
    )
    counts = RoutedCounts(
        experts=experts,
        k=k,
        params_per_expert=one.params,
        macs_per_expert=one.macs,
        router_params=router,
        router_macs=router,
        macs_all_experts=experts * one.macs + router,
        omega_at_size=float(np.log(macs / params) / np.log(max(2, min(one.d_in, one.d_out)))),
        note=note,
    )
    bound = min(k * one.rank_bound, one.d_in, one.d_out)
    return replace(
        one,
        spec=spec,
        dims=replace(one.dims, rho=experts),
        params=params,
        macs=macs,
        rank_bound=bound,
        rank_bound_reason=f"per token: a sum of k = {k} terms of rank <= {one.rank_bound:,} ({one.rank_bound_reason})",
        moe=counts,
    )


def symbolic_formulas(spec: Spec | str) -> dict[str, str]:
    """Exact symbolic counts in d_in, d_out and their leading order for a square layer.

    >>> symbolic_formulas("btt")["params_square_leading"]
    '2*d**(3/2)'
    """
    spec = parse_spec(spec)
    graph = two_core_graph(spec)
    exp = exponents(spec)
    out: dict[str, str] = {}
    for key, expr in (("params", graph.params_expr()), ("macs", graph.macs_expr())):
        out[key] = str(expr)
        square = sympy.expand(expr.subs({D_IN: _D, D_OUT: _D}))
        lead = exponent_of(square, _D)
        coeff = sum(
            (
                term.as_coeff_exponent(_D)[0]
                for term in sympy.Add.make_args(square)
                if term.as_coeff_exponent(_D)[1] == lead
            ),
            sympy.Integer(0),
        )
        out[f"{key}_square_leading"] = str(coeff * _D**lead)
    out.update(omega=str(exp.omega), psi=str(exp.psi), nu=str(exp.nu))
    f = _formulas()
    constraints = {T["gamma"]: 1 - T["alpha"] - T["beta"], T["phi"]: 1 - T["delta"] - T["epsilon"]}
    for key, expr in (("nu", f.nu), ("omega", f.omega), ("psi", f.psi)):
        out[f"{key}_formula"] = str(sympy.simplify(expr.subs(constraints)))
    return out


# -- the vectorised batch path ------------------------------------------------------------
def _batch_sizes(columns: list[np.ndarray], d_in: int, d_out: int) -> list[np.ndarray]:
    """Rounded class sizes for many thetas at once; mirrors :func:`structsearch.sizes.class_sizes`."""
    bases = [d_in] * 3 + [d_out] * 3 + [min(d_in, d_out)]
    sizes = [
        np.maximum(1, np.rint(np.exp(t * np.log(base)))).astype(np.int64)
        for t, base in zip(columns, bases, strict=True)
    ]
    for side, target, partners in ((slice(0, 3), d_in, columns[3:5]), (slice(3, 6), d_out, columns[0:2])):
        t, n = columns[side], sizes[side]
        # the class with the largest exponent absorbs the remainder; ties as in sizes._absorber:
        # the first in class order, but a tie of the first two goes by their partners' exponents
        first = (t[0] >= t[1]) & (t[0] >= t[2])
        second = ~first & (t[1] >= t[2])
        second |= first & (t[0] == t[1]) & (partners[1] > partners[0])
        first &= ~second
        third = ~first & ~second
        for k, (mine, others) in enumerate(((first, n[1] * n[2]), (second, n[0] * n[2]), (third, n[0] * n[1]))):
            n[k] = np.where(mine, np.maximum(1, -(-target // others)), n[k])
        sizes[side] = n
    return sizes


@cache
def _count_functions() -> list[tuple[tuple[str, ...], Callable[..., np.ndarray], Callable[..., np.ndarray]]]:
    """Per core of the template graph: its classes, its parameter count and the MACs of its
    step, as numpy functions of the seven integer class sizes."""
    symbols = {c: sympy.Symbol(f"n_{c}", positive=True, integer=True) for c in CLASSES}
    graph = IndexGraph(
        *(tuple(LETTER[c] for c in layout) for layout in (X_LAYOUT, Y_LAYOUT)),
        {"A": tuple(LETTER[c] for c in A_LAYOUT), "B": tuple(LETTER[c] for c in B_LAYOUT)},
        {LETTER[c]: symbols[c] for c in CLASSES},
    )
    args = [symbols[c] for c in CLASSES]
    functions = []
    for core, step in zip(graph.core_names, graph.steps(), strict=True):
        held = tuple(CLASS_OF_LETTER[i] for i in graph.indices_of(core))
        params = sympy.Mul(*(graph.sizes[i] for i in graph.indices_of(core)))
        macs = sympy.Mul(*(graph.sizes[i] for i in step.all_indices))
        functions.append((held, sympy.lambdify(args, params, "numpy"), sympy.lambdify(args, macs, "numpy")))
    return functions


def batch_taxonomy(thetas: np.ndarray, d_in: int, d_out: int) -> dict[str, np.ndarray]:
    """Taxonomy of many candidates at once (rows of theta in the order alpha..rho).

    Returns arrays: omega, psi, nu (exponents), non_redundant, non_degenerate, canonical,
    valid (entries >= 0, both sums 1), sizes (N x 7), params, macs, padding.

    >>> out = batch_taxonomy(np.array([[0.5, 0, 0.5, 0, 0.5, 0.5, 0], [1, 0, 0, 1, 0, 0, 0]]), 1024, 1024)
    >>> out["params"].tolist(), out["omega"].tolist(), out["nu"].tolist()
    ([65536, 1048576], [0.0, 0.0], [0.5, 1.0])
    """
    d_in, d_out = check_layer_sizes(d_in, d_out)
    thetas = np.asarray(thetas, dtype=np.float64)
    if thetas.ndim != 2 or thetas.shape[1] != 7:
        raise ValueError(f"thetas: expected an array of shape (N, 7), got {thetas.shape}")
    out: dict[str, np.ndarray] = {}
    # Column-contiguous chunks that fit in cache: numpy's temporaries then stay cheap.
    for start in range(0, len(thetas), _CHUNK):
        part = _batch_chunk(np.ascontiguousarray(thetas[start : start + _CHUNK].T), d_in, d_out)
        for key, value in part.items():
            out.setdefault(key, []).append(value)  # type: ignore[arg-type]
    if not out:
        return _batch_chunk(np.zeros((7, 0)), d_in, d_out)
    return {key: np.concatenate(parts) for key, parts in out.items()}  # type: ignore[arg-type]


_CHUNK = 1 << 15


def _batch_chunk(columns_array: np.ndarray, d_in: int, d_out: int) -> dict[str, np.ndarray]:
    fns = _vectorised()
    cols = list(columns_array)
    n = columns_array.shape[1]
    out = {k: np.broadcast_to(fns[k](*cols), (n,)).astype(np.float64) for k in ("omega", "psi", "nu")}
    out["non_redundant"] = fns["flops"](*cols) <= fns["flops_relabelled"](*cols) + EXPONENT_TOLERANCE
    out["non_degenerate"] = out["nu"] <= 1 + EXPONENT_TOLERANCE
    out["canonical"] = out["non_redundant"] & out["non_degenerate"]
    a, b, g, d, e, f, r = cols
    sums_ok = (np.abs(a + b + g - 1) <= 1e-6) & (np.abs(d + e + f - 1) <= 1e-6)
    out["valid"] = sums_ok & (columns_array >= 0).all(0) & (columns_array <= 1).all(0)
    sizes = _batch_sizes(cols, d_in, d_out)
    present = columns_array > 0
    out["sizes"] = np.stack(sizes, axis=1)
    out["params"] = np.zeros(n, dtype=np.int64)
    out["macs"] = np.zeros(n, dtype=np.int64)
    for core, params_fn, macs_fn in _count_functions():
        # a core whose classes all have exponent 0 is a folded scalar (see two_core_graph)
        held = present[[CLASSES.index(c) for c in core]].any(0)
        out["params"] += np.where(held, params_fn(*sizes), 0)
        out["macs"] += np.where(held, macs_fn(*sizes), 0)
    sa, sb, sg, sd, se, sf, _ = sizes
    out["padding"] = np.maximum(sa * sb * sg / d_in, sd * se * sf / d_out) - 1.0
    return out
