"""Shared test helpers: random canonical theta and the closed forms of taxonomy.md."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from structsearch.spec import CLASSES, Spec

# Exponents on a grid of twelfths keep theta exact while covering the space densely.
_TWELFTHS = st.integers(min_value=0, max_value=12)


@st.composite
def simplex3(draw) -> tuple[float, float, float]:
    a = draw(_TWELFTHS)
    b = draw(st.integers(min_value=0, max_value=12 - a))
    return a / 12, b / 12, (12 - a - b) / 12


@st.composite
def canonical_thetas(draw) -> Spec:
    """A random canonical theta: non-redundant and non-degenerate (taxonomy.md 3)."""
    a, b, g = draw(simplex3())
    d, e, f = draw(simplex3())
    if min(a, e) < min(b, d):  # redundant: take the relabelled point, which is not
        a, b, d, e = b, a, e, d
    r = draw(st.integers(min_value=0, max_value=round(12 * min(a, e)))) / 12
    return Spec.from_theta((a, b, g, d, e, f, r))


@st.composite
def any_thetas(draw) -> Spec:
    a, b, g = draw(simplex3())
    d, e, f = draw(simplex3())
    r = draw(_TWELFTHS) / 12
    return Spec.from_theta((a, b, g, d, e, f, r))


def closed_form_counts(dims: dict[str, int]) -> tuple[int, int]:
    """params and MACs per input vector, exactly as taxonomy.md section 2 writes them."""
    a, b, g, d, e, f, r = (dims[c] for c in CLASSES)
    params = f * d * r * g * a + f * e * r * g * b
    macs = f * d * r * g * b * a + f * e * d * r * g * b
    return params, macs


def random_cores(dims: dict[str, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a, b, g, d, e, f, r = (dims[c] for c in CLASSES)
    core_a = rng.standard_normal((f, d, r, g, a))  # A ~ (phi, delta, rho, gamma, alpha)
    core_b = rng.standard_normal((f, e, r, g, b))  # B ~ (phi, epsilon, rho, gamma, beta)
    return core_a, core_b


def materialise(dims: dict[str, int], core_a: np.ndarray, core_b: np.ndarray) -> np.ndarray:
    """The operator as a (prod out) x (prod in) matrix, straight from taxonomy.md 1 with numpy."""
    w = np.einsum("fdrga,ferg b->fedgba".replace(" ", ""), core_a, core_b)  # W[(f,e,d),(g,b,a)]
    n_out = math.prod(dims[c] for c in ("phi", "epsilon", "delta"))
    n_in = math.prod(dims[c] for c in ("gamma", "beta", "alpha"))
    return w.reshape(n_out, n_in)
