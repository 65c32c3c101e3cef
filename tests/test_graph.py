"""The index graph: structure read off networkx, chains of three or more cores."""

import math

import numpy as np
import pytest

from structsearch import SpecError, parse_spec
from structsearch.graph import IndexGraph, two_core_graph


def test_two_core_graph_holds_the_taxonomy_layouts():
    g = two_core_graph(parse_spec("(2/5|1/5|2/5|1/5|2/5|2/5|1/10)"))
    assert g.x == tuple("gba") and g.y == tuple("fed")
    assert g.indices_of("A") == tuple("fdrga") and g.indices_of("B") == tuple("fergb")
    assert g.indices_of("Z") == tuple("fdrgb")  # the intermediate of the layer's order
    assert set(g.tensors("core")) == {"A", "B"} and g.tensors("intermediate") == ("Z",)
    assert set(g.holders("g")) == {"x", "A", "B"} and set(g.holders("r")) == {"A", "B"}


def test_absent_classes_disappear():
    g = two_core_graph(parse_spec("btt"))
    assert [s.einsum for s in g.steps()] == ["ga,fga->fg", "fg,feg->fe"]
    assert [s.einsum for s in two_core_graph(parse_spec("dense")).steps()] == ["a,da->d"]


def _tt3():
    # x (i j k) -> y (o p q) through a three-core Tensor-Train chain with bonds r, s
    sizes = {"i": 4, "j": 5, "k": 6, "o": 3, "p": 4, "q": 5, "r": 2, "s": 3}
    g = IndexGraph.from_einsum("ijk", "opq", {"G1": "oir", "G2": "rpjs", "G3": "sqk"}, sizes)
    return g, sizes


def test_three_core_chain_counts():
    g, n = _tt3()
    assert g.params() == 3 * 4 * 2 + 2 * 4 * 5 * 3 + 3 * 5 * 6
    steps = g.steps()
    assert [s.einsum for s in steps] == ["ijk,oir->orjk", "orjk,rpjs->psok", "psok,sqk->opq"]
    expected = (4 * 5 * 6 * 3 * 2) + (2 * 5 * 6 * 3 * 4 * 3) + (3 * 6 * 3 * 4 * 5)
    assert g.macs() == expected
    # the chain materialises to the same operator whatever the order
    rng = np.random.default_rng(0)
    cores = {c: rng.standard_normal([n[i] for i in g.indices_of(c)]) for c in g.core_names}
    x = rng.standard_normal((n["i"], n["j"], n["k"]))
    y_direct = np.einsum("ijk,oir,rpjs,sqk->opq", x, *cores.values())
    z = x
    for s in steps:
        z = np.einsum(s.einsum, z, cores[s.right])
    np.testing.assert_allclose(z, y_direct, rtol=1e-10)


def test_three_core_chain_rank_bound_holds():
    g, n = _tt3()
    rng = np.random.default_rng(1)
    cores = [rng.standard_normal([n[i] for i in g.indices_of(c)]) for c in g.core_names]
    w = np.einsum("oir,rpjs,sqk->opqijk", *cores).reshape(3 * 4 * 5, 4 * 5 * 6)
    assert np.linalg.matrix_rank(w) <= g.rank_bound()


def test_orders_and_cheapest_path():
    g, _ = _tt3()
    assert len(g.orders()) == 6
    costs = [g.macs(order=o) for o in g.orders()]
    assert g.macs() == costs[0]
    described, per_vector = g.cheapest_path(batch=1)
    assert per_vector <= min(costs) and described[-1].endswith("-> y")


def test_bad_graphs_are_refused():
    with pytest.raises(SpecError, match="no size"):
        IndexGraph.from_einsum("a", "b", {"A": "ab"}, {"a": 2})
    with pytest.raises(SpecError, match="held by no core"):
        IndexGraph.from_einsum("ac", "b", {"A": "ab"}, {"a": 2, "b": 2, "c": 2})
    g, _ = _tt3()
    with pytest.raises(SpecError, match="each core once"):
        g.steps(["G1", "G1", "G2"])


def test_params_expr_is_exact():
    g = two_core_graph(parse_spec("kronecker"))
    from structsearch.graph import D_IN, D_OUT

    assert g.params_expr().subs({D_IN: 4096, D_OUT: 4096}) == 2 * 64 * 64
    assert math.isclose(float(g.macs_expr().subs({D_IN: 4096, D_OUT: 4096})), 2 * 4096 * 64)
