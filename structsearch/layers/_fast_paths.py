"""The contractions behind :class:`EinsumLinear`: one general path and three measured fast paths.

Core layouts (shared by every path, chosen so each step is one batched matmul):

- ``A ~ (gamma, alpha, rho, phi, delta)``: for each gamma an (alpha) x (rho phi delta) matrix;
- ``B ~ (phi, gamma, beta, rho, epsilon)``: for each phi a (gamma beta rho) x (epsilon) matrix.

Both are the taxonomy's cores (taxonomy.md 1) with their axes reordered; ``materialise_weight``
contracts them into the d_out x d_in weight (what ``to_dense`` and the ``materialised`` path use).

Paths:

- ``general``: any theta. Two ``torch.bmm`` calls with explicit permutes (plain autograd).
- ``btt``: beta = delta = 1 with gamma or phi > 1 (BTT / Monarch, BTT with rank). A custom
  autograd Function that keeps the intermediate feature-major, so the forward pass makes
  one copy (the output's permutation): the input and the intermediate are strided views
  that the BLAS batched GEMM reads directly. (Low rank, gamma = phi = 1, needs no copies on
  the general path either, and the fast path measured no faster there.)
- ``kronecker``: gamma = phi = 1 with beta or delta > 1 (Kronecker, sum of Kronecker). A
  custom autograd Function with no copies at all in the forward pass: Z = x A is one GEMM
  whose (n, beta rho, delta) result is, per sample, exactly the matrix that B^T multiplies.
- ``dense``: the dense point, where one core has no index at all (the taxonomy folds that
  scalar away): ``F.linear`` with the other core as the weight.
- ``broadcast``: the general layout when a step contracts an index of size 1 (alpha = 1, or
  gamma beta rho = 1): that step is an outer product, a broadcast multiply instead of a K = 1
  ``bmm`` (which torch's CPU bmm runs 10-30x slower). The ``btt`` path does the same for
  alpha = 1. Also what the seed-batched trainer runs under ``vmap`` in place of the fast paths.
- ``materialised``: any theta whose MACs are above ``MATERIALISE_AT`` of dense's, for calls of
  at least ``materialise_from`` vectors (fewer run the structural path): the d_out x d_in
  weight W = A . B is built from the cores on every call and ``F.linear`` runs one well-shaped
  GEMM. The same function and gradients (up to float rounding); it does
  d_in d_out MACs per vector where the structure does its own, which at such ratios a single
  GEMM does faster than two batched GEMMs with awkward shapes and permuting copies
  (``benchmarks/bench_materialise.py``). The evaluator still charges the structure's MACs.

``benchmarks/bench_layers.py`` measures each fast path against the general one, and
``tests/test_layers_conformance.py`` tests them equal.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "PATHS",
    "broadcast_contract",
    "btt_contract",
    "dense_contract",
    "general_contract",
    "has_unit_contraction",
    "kronecker_contract",
    "materialise_from",
    "materialise_weight",
    "materialised_contract",
    "select_path",
]

PATHS = ("general", "btt", "kronecker", "dense", "broadcast", "materialised")

# The structural path runs its MACs at about this fraction of a dense GEMM's speed, and the
# weight is materialised up to d_in x d_out = this many entries: benchmarks/results/materialise_cpu.md
# (the sweep's fastest threshold, and its largest width, 1024, whose weights pad to a few % more).
MATERIALISE_AT = 0.4
MATERIALISE_MAX_ENTRIES = 1024 * 1024


def select_path(dims: dict[str, int], present: dict[str, bool]) -> str:
    """The fastest contraction through the cores at these class sizes (the structural path, set in ``__init__``)."""
    if not (present["A"] and present["B"]):
        return "dense"
    if dims["beta"] == 1 and dims["delta"] == 1 and (dims["gamma"] > 1 or dims["phi"] > 1):
        return "btt"
    if dims["gamma"] == 1 and dims["phi"] == 1 and (dims["beta"] > 1 or dims["delta"] > 1):
        return "kronecker"
    if has_unit_contraction(dims):
        return "broadcast"
    return "general"


def materialise_from(macs: int, rho: int, d_in: int, d_out: int, padded_in: int, padded_out: int) -> int | None:
    """Fewest vectors per call from which one GEMM by the materialised weight is faster (None: never).

    Per call, the weight costs rho * padded_in * padded_out MACs to build and d_in * d_out per
    vector to apply; the structural path costs ``macs`` per vector at about ``MATERIALISE_AT``
    of a dense GEMM's speed. So materialise when n (macs / MATERIALISE_AT - d_in d_out) covers
    the build: from a handful of vectors for a structure well above the threshold, never for one
    below it, and not for a single vector (inference) unless the structure costs more than dense.

    >>> materialise_from(macs=14_080, rho=1, d_in=128, d_out=128, padded_in=132, padded_out=128)
    1
    >>> materialise_from(macs=2_904, rho=1, d_in=128, d_out=128, padded_in=132, padded_out=132) is None
    True
    """
    if d_in * d_out > MATERIALISE_MAX_ENTRIES or not math.isfinite(MATERIALISE_AT):  # inf: never
        return None
    speed = Fraction(str(MATERIALISE_AT))  # exact, so the crossover is not off by one from rounding
    saving = macs / speed - d_in * d_out  # per vector, in dense-GEMM MACs
    if saving <= 0:
        return None
    return max(1, math.ceil(rho * padded_in * padded_out / saving))


def has_unit_contraction(dims: dict[str, int]) -> bool:
    """Whether a step contracts an index of size 1: alpha = 1 (x.A) or gamma beta rho = 1 (Z.B)."""
    return dims["alpha"] == 1 or dims["gamma"] * dims["beta"] * dims["rho"] == 1


def general_contract(x: Tensor, core_a: Tensor, core_b: Tensor, dims: dict[str, int]) -> Tensor:
    """y = (x . A) . B for any theta; x (n, g*b*a) -> y (n, f*e*d), padded sizes."""
    a, b, g, d, e, f, r = (dims[c] for c in ("alpha", "beta", "gamma", "delta", "epsilon", "phi", "rho"))
    n = x.shape[0]
    # step 1 (x.A): batch gamma, contract alpha, free (n, beta) and (rho, phi, delta)
    xs = x.view(n, g, b, a).transpose(0, 1).reshape(g, n * b, a)  # (g, n*b, a)
    z = torch.bmm(xs, core_a.view(g, a, r * f * d))  # (g, n*b, r*f*d)
    # step 2 (Z.B): batch phi, contract (gamma, beta, rho), free (n, delta) and epsilon
    z = z.view(g, n, b, r, f, d).permute(4, 1, 5, 0, 2, 3)  # (f, n, d, g, b, r)
    z = z.reshape(f, n * d, g * b * r)  # (f, n*d, g*b*r)
    y = torch.bmm(z, core_b.view(f, g * b * r, e))  # (f, n*d, e)
    return y.view(f, n, d, e).permute(1, 0, 3, 2).reshape(n, f * e * d)  # (n, f*e*d)


def broadcast_contract(x: Tensor, core_a: Tensor, core_b: Tensor, dims: dict[str, int]) -> Tensor:
    """``general_contract`` where a step contracts an index of size 1 (alpha = 1, or gamma beta rho = 1).

    Such a step is an outer product: as a K = 1 ``bmm`` it runs at a fraction of the BLAS's
    speed (and its backward as GEMVs), so it is a broadcast multiply here; the other step
    stays a ``bmm``. Plain autograd, so it also runs under ``torch.func.vmap``.
    """
    a, b, g, d, e, f, r = (dims[c] for c in ("alpha", "beta", "gamma", "delta", "epsilon", "phi", "rho"))
    n = x.shape[0]
    xs = x.view(n, g, b, a).transpose(0, 1).reshape(g, n * b, a)  # (g, n*b, a)
    # (g, n*b, a) @ (g, a, r*f*d) -> (g, n*b, r*f*d); for a = 1 the broadcast (g, n*b, 1) * (g, 1, r*f*d)
    z = xs * core_a.view(g, 1, r * f * d) if a == 1 else torch.bmm(xs, core_a.view(g, a, r * f * d))
    z = z.view(g, n, b, r, f, d).permute(4, 1, 5, 0, 2, 3)  # (f, n, d, g, b, r)
    z = z.reshape(f, n * d, g * b * r)  # (f, n*d, g*b*r)
    # (f, n*d, g*b*r) @ (f, g*b*r, e) -> (f, n*d, e); for g*b*r = 1 the broadcast (f, n*d, 1) * (f, 1, e)
    y = z * core_b.view(f, 1, e) if g * b * r == 1 else torch.bmm(z, core_b.view(f, g * b * r, e))
    return y.view(f, n, d, e).permute(1, 0, 3, 2).reshape(n, f * e * d)  # (n, f*e*d)


def materialise_weight(core_a: Tensor, core_b: Tensor, dims: dict[str, int], d_in: int, d_out: int) -> Tensor:
    """The d_out x d_in weight W = A . B (taxonomy.md 1): built at the padded sizes, then sliced."""
    a, b, g, d, e, f, r = (dims[c] for c in ("alpha", "beta", "gamma", "delta", "epsilon", "phi", "rho"))
    left = core_a.permute(3, 0, 4, 1, 2).reshape(f * g, d * a, r)  # (f*g, d*a, r)
    right = core_b.permute(0, 1, 3, 4, 2).reshape(f * g, r, e * b)  # (f*g, r, e*b)
    # contract rho; rho = 1 is an outer product, a broadcast multiply (a K = 1 bmm is slow on CPU)
    w = left * right if r == 1 else torch.bmm(left, right)  # (f*g, d*a, e*b)
    w = w.view(f, g, d, a, e, b).permute(0, 4, 2, 1, 5, 3).reshape(f * e * d, g * b * a)  # (f*e*d, g*b*a)
    return w[:d_out, :d_in]  # (d_out, d_in)


def materialised_contract(
    x: Tensor, core_a: Tensor, core_b: Tensor, bias: Tensor | None, dims: dict[str, int], d_in: int, d_out: int
) -> Tensor:
    """y = x W^T + bias with W built for this call; x (n, d_in) -> y (n, d_out), no padding, no truncation."""
    return F.linear(x, materialise_weight(core_a, core_b, dims, d_in, d_out), bias)  # (n, d_out)


def dense_contract(x: Tensor, core: Tensor, bias: Tensor | None) -> Tensor:
    """The dense point: the only core is a d_in x d_out matrix (A ~ (1, a, 1, 1, d) or B ~ (1, 1, b, 1, e))."""
    weight = core.view(x.shape[1], -1)  # (d_in, d_out)
    return F.linear(x, weight.t(), bias)  # (n, d_out)


def _bmm_into_rows(left: Tensor, right: Tensor, n: int, k: int, m: int) -> Tensor:
    """bmm of (k, n, p) by (k, p, m), returned row-major as (n, k*m): one batched GEMM, one copy.

    Writing the GEMMs straight into the (n, k, m) rows through a strided ``out=`` view saves
    the copy, but torch then runs one GEMM (and one OpenMP region) per batch item, which
    was as fast on an idle CPU and up to 10x slower on a shared one (median, d = 4096);
    it also breaks the torch.compile graph. So: the batched GEMM, then a permuting copy.
    """
    return torch.bmm(left, right).transpose(0, 1).reshape(n, k * m)  # (k, n, m) -> (n, k, m) -> (n, k*m)


class _BTTFunction(torch.autograd.Function):
    """beta = delta = 1: y[n,f,e] = sum_{g,r} B[f,g,r,e] sum_a A[g,a,r,f] x[n,g,a].

    Forward, feature-major (one copy, the output's permutation):
      x (n, g*a)            viewed as (g, a, n)                       strided, n outer
      Zt = A^T x            (g, r*f, n)                                contiguous
      Zt viewed per phi     (f, n, g*r)                                strided: (g, r) merge
      y = Zt_f^T B_f        (f, n, e), then one permuting copy to (n, f*e)
    Backward: a permuting copy of dZ (a view when rho = 1) and of dx; every other GEMM
    operand is a strided view that the BLAS reads directly.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, core_a: Tensor, core_b: Tensor, bias: Tensor | None, sizes: tuple[int, ...]
    ) -> Tensor:
        g, a, r, f, e = sizes
        n = x.shape[0]
        xt = x.view(n, g, a).permute(1, 2, 0)  # (g, a, n)
        at = core_a.view(g, a, r * f).transpose(1, 2)  # (g, r*f, a)
        zt = at * xt if a == 1 else torch.bmm(at, xt)  # (g, r*f, n); alpha = 1: an outer product, broadcast
        zf = zt.view(g * r, f, n).permute(1, 2, 0)  # (f, n, g*r)
        y = _bmm_into_rows(zf, core_b.view(f, g * r, e), n, f, e)  # (n, f*e)
        if bias is not None:
            y.add_(bias)
        ctx.save_for_backward(x, zt, core_a, core_b)
        ctx.sizes = sizes
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        x, zt, core_a, core_b = ctx.saved_tensors
        g, a, r, f, e = ctx.sizes
        n = x.shape[0]
        need_x, need_a, need_b = ctx.needs_input_grad[:3]
        gyf = grad_y.reshape(n, f, e).transpose(0, 1)  # (f, n, e), a view when grad_y is row-major
        grad_x = grad_a = grad_b = grad_bias = None
        if need_b:
            zfn = zt.view(g * r, f, n).transpose(0, 1)  # (f, g*r, n)
            grad_b = torch.bmm(zfn, gyf).view(core_b.shape)  # (f, g*r, e)
        if need_x or need_a:
            gz = torch.bmm(core_b.view(f, g * r, e), gyf.transpose(1, 2))  # (f, g*r, n)
            gzt = gz.view(f, g, r, n).permute(1, 2, 0, 3).reshape(g, r * f, n)  # (g, r*f, n): the one copy
            if need_a:  # as (g, r*f, a) then a small transpose: measurably faster than (g, a, n) @ (g, n, r*f)
                xs = x.view(n, g, a).transpose(0, 1)  # (g, n, a)
                if a == 1:  # a K = 1 GEMV as a broadcast multiply and a sum over the samples
                    grad_a = (gzt * xs.transpose(1, 2)).sum(2).reshape(core_a.shape)  # (g, r*f) -> (g, 1, r*f)
                else:
                    grad_a = torch.bmm(gzt, xs).transpose(1, 2).reshape(core_a.shape)  # (g, r*f, a) -> (g, a, r*f)
            if need_x:
                at = core_a.view(g, a, r * f).transpose(1, 2)  # (g, r*f, a)
                # (g, n, r*f) @ (g, r*f, a) -> (g, n, a); for a = 1 a broadcast multiply and a sum over r*f
                grad_xg = (gzt * at).sum(1).unsqueeze(2) if a == 1 else torch.bmm(gzt.transpose(1, 2), at)
                del gz, gzt  # freed before the copy: the backward's peak is then one activation lower
                grad_x = grad_xg.transpose(0, 1).reshape(n, g * a)  # (n, g*a)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_bias = grad_y.sum(0)
        return grad_x, grad_a, grad_b, grad_bias, None


def btt_contract(x: Tensor, core_a: Tensor, core_b: Tensor, bias: Tensor | None, dims: dict[str, int]) -> Tensor:
    """The BTT family (beta = delta = 1); x (n, g*a) -> y (n, f*e), bias added when given."""
    sizes = (dims["gamma"], dims["alpha"], dims["rho"], dims["phi"], dims["epsilon"])
    return _BTTFunction.apply(x, core_a, core_b, bias, sizes)


class _KroneckerFunction(torch.autograd.Function):
    """gamma = phi = 1: y[n,e,d] = sum_{b,r} B[b,r,e] sum_a x[n,b,a] A[a,r,d].

    Forward (no copies):
      Z = x A               (n*b, a) @ (a, r*d) -> (n, b*r, d)      one GEMM
      y_n = B^T Z_n         (e, b*r) @ (b*r, d) per sample -> (n, e, d) = y, row-major
    Backward: dZ, dA and dx are GEMMs of views; dB sums per-sample products (one temporary).
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, core_a: Tensor, core_b: Tensor, bias: Tensor | None, sizes: tuple[int, ...]
    ) -> Tensor:
        a, b, r, d, e = sizes
        n = x.shape[0]
        z = torch.mm(x.view(n * b, a), core_a.view(a, r * d)).view(n, b * r, d)  # (n, b*r, d)
        bt = core_b.view(b * r, e).t().expand(n, e, b * r)  # (n, e, b*r), batch stride 0
        y = torch.bmm(bt, z).view(n, e * d)  # (n, e, d) -> (n, e*d)
        if bias is not None:
            y.add_(bias)
        ctx.save_for_backward(x, z, core_a, core_b)
        ctx.sizes = sizes
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        x, z, core_a, core_b = ctx.saved_tensors
        a, b, r, d, e = ctx.sizes
        n = x.shape[0]
        need_x, need_a, need_b = ctx.needs_input_grad[:3]
        gy = grad_y.reshape(n, e, d)  # (n, e, d)
        grad_x = grad_a = grad_b = grad_bias = None
        if need_b:  # sum over samples of gy_n z_n^T
            grad_b = torch.bmm(gy, z.transpose(1, 2)).sum(0).t().reshape(core_b.shape)  # (n, e, b*r) -> (b*r, e)
        if need_x or need_a:
            gz = torch.bmm(core_b.view(b * r, e).expand(n, b * r, e), gy).view(n * b, r * d)  # (n*b, r*d)
            if need_a:
                grad_a = torch.mm(x.view(n * b, a).t(), gz).view(core_a.shape)  # (a, r*d)
            if need_x:
                grad_x = torch.mm(gz, core_a.view(a, r * d).t()).view(n, b * a)  # (n*b, a) -> (n, b*a)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_bias = grad_y.sum(0)
        return grad_x, grad_a, grad_b, grad_bias, None


def kronecker_contract(x: Tensor, core_a: Tensor, core_b: Tensor, bias: Tensor | None, dims: dict[str, int]) -> Tensor:
    """The Kronecker family (gamma = phi = 1); x (n, b*a) -> y (n, e*d), bias added when given."""
    sizes = (dims["alpha"], dims["beta"], dims["rho"], dims["delta"], dims["epsilon"])
    return _KroneckerFunction.apply(x, core_a, core_b, bias, sizes)
