"""The symbolic index graph of an einsum layer: tensors, indices and who holds what.

A layer y = x . C1 . C2 ... is a bipartite networkx graph: tensor nodes (the input x,
the weight cores, the intermediates of the layer's contraction order, the output y)
and index nodes, with an edge for every index a tensor holds (the edge's ``axis`` is
the index's position in that tensor's layout). Index sizes are sympy expressions, of
``d_in`` / ``d_out`` for the two-core space, or plain integers for any other chain.

Everything the taxonomy reports — parameter and MAC counts, einsum strings, rank
bounds, exponents — is read off this graph by the functions here; nothing is typed in
per structure. The two-core space of taxonomy.md is :func:`two_core_graph`; chains of
three or more cores come from :meth:`IndexGraph.from_einsum`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import networkx as nx
import sympy

from structsearch.errors import SpecError
from structsearch.spec import CLASSES, Spec

__all__ = [
    "A_LAYOUT",
    "B_LAYOUT",
    "CLASS_OF_LETTER",
    "D_IN",
    "D_OUT",
    "LETTER",
    "X_LAYOUT",
    "Y_LAYOUT",
    "IndexGraph",
    "RankBound",
    "Step",
    "T",
    "class_values",
    "exponent_of",
    "two_core_graph",
]

LETTER: dict[str, str] = {
    "alpha": "a",
    "beta": "b",
    "gamma": "g",
    "delta": "d",
    "epsilon": "e",
    "phi": "f",
    "rho": "r",
}
CLASS_OF_LETTER = {v: k for k, v in LETTER.items()}
D_IN, D_OUT = sympy.symbols("d_in d_out", positive=True, integer=True)
# Symbolic exponents t_alpha .. t_rho: the graph's exponent formulas are functions of these.
T: dict[str, sympy.Symbol] = {c: sympy.Symbol(f"t_{c}", nonnegative=True) for c in CLASSES}

TensorKind = Literal["input", "core", "intermediate", "output"]
Size = int | sympy.Expr


@dataclass(frozen=True)
class RankBound:
    """rank <= prod(sizes of ``factors``) * prod over ``mins`` of min(prod(left), prod(right))."""

    reason: str
    factors: tuple[tuple[str, ...], ...]
    mins: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]

    def value(self, size: Mapping[str, int]) -> int:
        prod = lambda idx: math.prod(size[i] for i in idx)  # noqa: E731
        return math.prod(prod(f) for f in self.factors) * math.prod(min(prod(a), prod(b)) for a, b in self.mins)

    def expr(self, size: Mapping[str, sympy.Expr]) -> sympy.Expr:
        prod = lambda idx: sympy.Mul(*(size[i] for i in idx))  # noqa: E731
        return sympy.Mul(*(prod(f) for f in self.factors)) * sympy.Mul(
            *(sympy.Min(prod(a), prod(b)) for a, b in self.mins)
        )


@dataclass(frozen=True)
class Step:
    """One pairwise contraction: ``left . right -> result`` (index tuples in layout order)."""

    left: str
    right: str
    result: str
    left_indices: tuple[str, ...]
    right_indices: tuple[str, ...]
    result_indices: tuple[str, ...]

    @property
    def all_indices(self) -> tuple[str, ...]:
        """Every index the step touches: its MACs are the product of their sizes."""
        seen = dict.fromkeys((*self.left_indices, *self.right_indices))
        return tuple(seen)

    @property
    def einsum(self) -> str:
        return f"{''.join(self.left_indices)},{''.join(self.right_indices)}->{''.join(self.result_indices)}"


class IndexGraph:
    """A tensor network computing y from x through weight cores, in a fixed order.

    >>> g = IndexGraph.from_einsum("ga", "fe", {"A": "fga", "B": "feg"}, {"a": 4, "g": 4, "f": 4, "e": 4})
    >>> [s.einsum for s in g.steps()]
    ['ga,fga->fg', 'fg,feg->fe']
    >>> g.params(), g.macs()
    (128, 128)
    """

    def __init__(
        self,
        x: Sequence[str],
        y: Sequence[str],
        cores: Mapping[str, Sequence[str]],
        sizes: Mapping[str, Size],
    ) -> None:
        indices = [*x, *y, *itertools.chain.from_iterable(cores.values())]
        missing = sorted(set(indices) - set(sizes))
        if missing:
            raise SpecError(f"index graph: no size given for index(es) {', '.join(missing)}")
        for name, held in {"x": x, "y": y, **cores}.items():
            if len(set(held)) != len(held):
                raise SpecError(f"index graph: tensor {name} repeats an index in {''.join(held)!r}")
        orphans = sorted((set(x) | set(y)) - set(itertools.chain.from_iterable(cores.values())))
        if orphans:
            raise SpecError(f"index graph: index(es) {', '.join(orphans)} of x/y are held by no core")
        self.core_names: tuple[str, ...] = tuple(cores)
        self.graph = nx.Graph()
        for index in dict.fromkeys(indices):
            self.graph.add_node(("index", index), size=sympy.sympify(sizes[index]))
        self._add_tensor("x", "input", x)
        for name, held in cores.items():
            self._add_tensor(name, "core", held)
        self._add_tensor("y", "output", y)
        # Intermediates of the layer's own order, so the graph shows what is materialised.
        for step in self.steps()[:-1]:
            self._add_tensor(step.result, "intermediate", step.result_indices)

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_einsum(cls, x: str, y: str, cores: Mapping[str, str], sizes: Mapping[str, Size]) -> IndexGraph:
        """A graph from single-letter index strings, e.g. a three-core Tensor-Train chain."""
        return cls(tuple(x), tuple(y), {k: tuple(v) for k, v in cores.items()}, sizes)

    def _add_tensor(self, name: str, kind: TensorKind, indices: Sequence[str]) -> None:
        node = ("tensor", name)
        self.graph.add_node(node, kind=kind)
        for axis, index in enumerate(indices):
            self.graph.add_edge(node, ("index", index), axis=axis)

    # -- reading the graph -------------------------------------------------------------
    def tensors(self, kind: TensorKind | None = None) -> tuple[str, ...]:
        return tuple(
            n[1]
            for n, data in self.graph.nodes(data=True)
            if n[0] == "tensor" and (kind is None or data["kind"] == kind)
        )

    def indices_of(self, tensor: str) -> tuple[str, ...]:
        """A tensor's indices in layout order."""
        node = ("tensor", tensor)
        edges = sorted(self.graph.edges(node, data="axis"), key=lambda e: e[2])
        return tuple(e[1][1] for e in edges)

    def holders(self, index: str) -> tuple[str, ...]:
        """The tensors (x, cores, y; no intermediates) that hold an index."""
        return tuple(
            n[1] for n in self.graph.neighbors(("index", index)) if self.graph.nodes[n]["kind"] != "intermediate"
        )

    @cached_property
    def sizes(self) -> dict[str, sympy.Expr]:
        return {n[1]: d["size"] for n, d in self.graph.nodes(data=True) if n[0] == "index"}

    @property
    def x(self) -> tuple[str, ...]:
        return self.indices_of("x")

    @property
    def y(self) -> tuple[str, ...]:
        return self.indices_of("y")

    # -- contraction orders ------------------------------------------------------------
    def steps(self, order: Sequence[str] | None = None) -> list[Step]:
        """Sequential contraction x . C_order[0] . C_order[1] ... -> y.

        After each step the result keeps only the indices still needed: those of y and
        of the cores not yet contracted, in a stable layout (cores' order, then y's).
        """
        order = tuple(order or self.core_names)
        if sorted(order) != sorted(self.core_names):
            raise SpecError(f"contraction order {order} must name each core once: {self.core_names}")
        current_name, current = "x", self.x
        steps: list[Step] = []
        for k, core in enumerate(order):
            core_indices = self.indices_of(core)
            later = [*itertools.chain.from_iterable(self.indices_of(c) for c in order[k + 1 :]), *self.y]
            # Core first, so Z keeps the core's layout: Z ~ (phi, delta, rho, gamma, beta).
            touched = dict.fromkeys((*core_indices, *current))
            if k == len(order) - 1:
                result, result_name = self.y, "y"
            else:
                needed = set(later)
                result = tuple(i for i in touched if i in needed)
                result_name = f"Z{k + 1}" if len(order) > 2 else "Z"
            steps.append(Step(current_name, core, result_name, current, core_indices, result))
            current_name, current = result_name, result
        return steps

    def orders(self) -> list[tuple[str, ...]]:
        """Every sequential order (x absorbs the cores one at a time)."""
        return list(itertools.permutations(self.core_names))

    # -- counts at concrete sizes --------------------------------------------------------
    def concrete(self, values: Mapping[str, int] | None = None) -> dict[str, int]:
        """Integer index sizes; ``values`` overrides the symbolic sizes (e.g. rounded class sizes)."""
        if values is not None:
            return {i: int(values[i]) for i in self.sizes}
        return {i: int(s) for i, s in self.sizes.items()}

    def params(self, values: Mapping[str, int] | None = None) -> int:
        """Total entries of the weight cores."""
        size = self.concrete(values)
        return sum(math.prod(size[i] for i in self.indices_of(c)) for c in self.core_names)

    def macs(self, values: Mapping[str, int] | None = None, order: Sequence[str] | None = None) -> int:
        """Multiply-accumulates per input vector of a sequential order (default: the layer's)."""
        size = self.concrete(values)
        return sum(math.prod(size[i] for i in s.all_indices) for s in self.steps(order))

    # -- symbolic counts ---------------------------------------------------------------
    def params_expr(self) -> sympy.Expr:
        return sympy.Add(*(sympy.Mul(*(self.sizes[i] for i in self.indices_of(c))) for c in self.core_names))

    def macs_expr(self, order: Sequence[str] | None = None) -> sympy.Expr:
        return sympy.Add(*(sympy.Mul(*(self.sizes[i] for i in s.all_indices)) for s in self.steps(order)))

    # -- rank ---------------------------------------------------------------------------
    def rank_bounds(self) -> list[RankBound]:
        """Upper bounds on the rank of the materialised operator, each with its reason.

        Two kinds, both read off the graph:
        - every step of every sequential order is a map from the indices before it to the
          indices after it; indices on both sides pass through block-diagonally, so
          rank <= prod(through) * min(prod(consumed), prod(produced));
        - indices of x or y held by several cores split the operator into a grid of blocks,
          each a sum over the bond indices (held by cores only) of Kronecker products of
          the cores' private maps: rank <= prod(shared) * prod(bonds) * prod_c min(in_c, out_c).
        """
        bounds = [RankBound("d_in", (self.x,), ()), RankBound("d_out", (self.y,), ())]
        seen: set[tuple] = set()
        for order in self.orders():
            for s in self.steps(order):
                before, after = set(s.left_indices), set(s.result_indices)
                through = tuple(i for i in s.left_indices if i in after)
                consumed = tuple(i for i in s.left_indices if i not in after)
                produced = tuple(i for i in s.result_indices if i not in before)
                key = (frozenset(through), frozenset(consumed), frozenset(produced))
                if key not in seen:
                    seen.add(key)
                    label = f"step {s.einsum} of order {'.'.join(order)}"
                    bounds.append(RankBound(label, (through,), ((consumed, produced),)))
        external = set(self.x) | set(self.y)
        shared = tuple(i for i in self.sizes if i in external and len(self.holders(i)) > 2)
        bonds = tuple(i for i in self.sizes if i not in external)
        private = tuple(
            (
                tuple(i for i in self.indices_of(c) if i in self.x and i not in shared),
                tuple(i for i in self.indices_of(c) if i in self.y and i not in shared),
            )
            for c in self.core_names
        )
        bounds.append(RankBound("blocks of Kronecker sums", (shared, bonds), private))
        return bounds

    def rank_bound(self, values: Mapping[str, int] | None = None) -> int:
        """The smallest rank bound at concrete sizes."""
        size = self.concrete(values)
        return min(b.value(size) for b in self.rank_bounds())

    def bond_caps(self) -> dict[str, list[tuple[str, ...]]]:
        """For each bond index (held by cores only), the index sets that cap its useful size.

        With the shared indices fixed, a core is a matrix from the bond to its other
        private indices, of rank at most their product: a larger bond can be compressed to
        that size without changing the operator family.
        """
        external = set(self.x) | set(self.y)
        shared = {i for i in self.sizes if i in external and len(self.holders(i)) > 2}
        caps: dict[str, list[tuple[str, ...]]] = {}
        for bond in (i for i in self.sizes if i not in external):
            caps[bond] = [
                tuple(i for i in self.indices_of(c) if i != bond and i not in shared)
                for c in self.core_names
                if bond in self.indices_of(c)
            ]
        return caps

    # -- cheapest order ------------------------------------------------------------------
    def cheapest_path(self, values: Mapping[str, int] | None = None, batch: int = 1024) -> tuple[list[str], float]:
        """The cheapest pairwise contraction path for ``batch`` input vectors (opt_einsum's
        optimal search, which may contract cores with each other first) and its MACs per vector.
        """
        import opt_einsum

        size = self.concrete(values)
        letters = _letters_for(self.sizes)
        batch_letter = next(ch for ch in "nNBZ" if ch not in letters.values())
        operands = [("x", (batch_letter, *[letters[i] for i in self.x]))]
        operands += [(c, tuple(letters[i] for i in self.indices_of(c))) for c in self.core_names]
        output = (batch_letter, *[letters[i] for i in self.y])
        dims = {letters[i]: n for i, n in size.items()} | {batch_letter: batch}
        eq = ",".join("".join(ix) for _, ix in operands) + "->" + "".join(output)
        shapes = [tuple(dims[ch] for ch in ix) for _, ix in operands]
        path, _ = opt_einsum.contract_path(eq, *shapes, shapes=True, optimize="optimal")
        names = [name for name, _ in operands]
        held = [set(ix) for _, ix in operands]
        total, described = 0, []
        for k, pair in enumerate(path):
            picked = sorted(pair, reverse=True)
            left_names = [names.pop(p) for p in picked][::-1]
            left_held = [held.pop(p) for p in picked][::-1]
            union = set().union(*left_held)
            total += math.prod(dims[ch] for ch in union)
            remaining = set(output).union(*held)
            result_name = "y" if not names else f"T{k + 1}"
            names.append(result_name)
            held.append(union & remaining)
            described.append(f"{'.'.join(left_names)} -> {result_name}")
        return described, total / batch


def _letters_for(sizes: Mapping[str, sympy.Expr]) -> dict[str, str]:
    return {i: (i if len(i) == 1 else LETTER.get(i, i[0])) for i in sizes}


# -- the two-core space ------------------------------------------------------------------
# Layouts of taxonomy.md 1: x ~ (gamma, beta, alpha), y ~ (phi, epsilon, delta),
# A ~ (phi, delta, rho, gamma, alpha), B ~ (phi, epsilon, rho, gamma, beta).
X_LAYOUT = ("gamma", "beta", "alpha")
Y_LAYOUT = ("phi", "epsilon", "delta")
A_LAYOUT = ("phi", "delta", "rho", "gamma", "alpha")
B_LAYOUT = ("phi", "epsilon", "rho", "gamma", "beta")


def _class_size_expr(name: str, exponent: sympy.Expr) -> sympy.Expr:
    if name in ("alpha", "beta", "gamma"):
        return D_IN**exponent
    if name in ("delta", "epsilon", "phi"):
        return D_OUT**exponent
    return sympy.Min(D_IN, D_OUT) ** exponent


def two_core_graph(spec: Spec | None = None, *, keep_absent: bool = False) -> IndexGraph:
    """The index graph of a point of the 7-class space.

    With a spec, sizes are ``d_in**t`` with the spec's exponents as exact fractions and
    classes of exponent 0 are left out (they have size 1 and disappear). Without one,
    the exponents stay the symbols ``T`` — the template every exponent formula is
    derived from.

    >>> [s.einsum for s in two_core_graph(Spec.parse("btt")).steps()]
    ['ga,fga->fg', 'fg,feg->fe']
    >>> two_core_graph(Spec.parse("btt")).params_expr().subs({D_IN: 1024, D_OUT: 1024})
    65536
    """
    if spec is None:
        exponents = {c: T[c] for c in CLASSES}
        present = set(CLASSES)
    else:
        exponents = {
            c: sympy.Rational(f.numerator, f.denominator) for c, f in zip(CLASSES, spec.fractions, strict=True)
        }
        present = {c for c in CLASSES if keep_absent or exponents[c] != 0}

    def letters(layout: Iterable[str]) -> tuple[str, ...]:
        return tuple(LETTER[c] for c in layout if c in present)

    sizes = {LETTER[c]: _class_size_expr(c, exponents[c]) for c in present}
    # A core left with no index is a scalar, folded into the other core (dense is a single
    # matrix); the closed forms of taxonomy.md 2 would count it as 1 parameter and d_out MACs.
    cores = {name: held for name, held in (("A", letters(A_LAYOUT)), ("B", letters(B_LAYOUT))) if held}
    return IndexGraph(letters(X_LAYOUT), letters(Y_LAYOUT), cores, sizes)


def class_values(sizes: Mapping[str, int]) -> dict[str, int]:
    """Rounded class sizes keyed by class name -> keyed by the graph's index letters."""
    return {LETTER[c]: int(v) for c, v in sizes.items() if c in LETTER}


def exponent_of(expr: sympy.Expr, d: sympy.Symbol) -> sympy.Expr:
    """Leading exponent in d of a sum/product/min of powers of d (symbolic exponents allowed)."""
    expr = sympy.expand_power_base(expr, force=True)
    if expr.is_Add:
        return sympy.Max(*(exponent_of(t, d) for t in expr.args))
    if isinstance(expr, sympy.Min):
        return sympy.Min(*(exponent_of(t, d) for t in expr.args))
    if isinstance(expr, sympy.Max):
        return sympy.Max(*(exponent_of(t, d) for t in expr.args))
    if expr.is_Mul:
        return sympy.Add(*(exponent_of(t, d) for t in expr.args))
    if expr.is_Pow:
        base, power = expr.as_base_exp()
        return exponent_of(base, d) * power
    if expr == d:
        return sympy.Integer(1)
    if expr.is_number:
        return sympy.Integer(0)
    raise SpecError(f"cannot read an exponent in {d} off {expr}")
