"""Projection from a dense weight: the structured layer nearest to W in Frobenius norm.

The operator of any theta is block-structured. Split W (zero-padded to padded_out x
padded_in) into its (phi, gamma) blocks W_fg, each (epsilon delta) x (beta alpha). Inside a
block, W_fg = sum_r B_fg[r] (x) A_fg[r], a sum of rho Kronecker products of an epsilon x beta
and a delta x alpha factor, and different blocks use disjoint slices of the cores. The Van
Loan-Pitsianis rearrangement R_fg[(e, b), (d, a)] = W_fg[(e, d), (b, a)] turns each block
into a rank-rho matrix problem, so a truncated SVD of every R_fg (Eckart-Young) gives the
exact minimiser, for every theta at once:

- low rank (one block, e x a, rank rho): the truncated SVD of W itself;
- Kronecker / sum of Kronecker (one block): Van Loan-Pitsianis, rank 1 / rank rho;
- BTT (beta = delta = 1): each (gamma, phi) block is an epsilon x alpha rank-rho problem.

With padding only the top-left d_out x d_in part of the padded operator counts: a masked
low-rank problem. Where the padded positions are whole rows or columns of every rearranged
block (zero rows do not move a truncated SVD), the SVD of the zero-padded W is still optimal;
otherwise there is no closed form, and that SVD solution starts a short L-BFGS
least-squares fit of the masked error (which stops at once when the start is stationary).
"""

from __future__ import annotations

import torch
from torch import Tensor

from structsearch.errors import SizeError
from structsearch.spec import CLASSES

__all__ = ["closed_form_cores", "project_dense", "relative_error"]


def closed_form_cores(weight: Tensor, dims: dict[str, int]) -> tuple[Tensor, Tensor]:
    """Cores (A, B) in the layer's layouts nearest to a padded_out x padded_in ``weight`` (float64)."""
    a, b, g, d, e, f, r = (dims[c] for c in CLASSES)
    w = weight.to(torch.float64)
    blocks = w.view(f, e, d, g, b, a).permute(0, 3, 1, 4, 2, 5).reshape(f, g, e * b, d * a)  # R_fg: (f, g, e*b, d*a)
    u, s, vh = torch.linalg.svd(blocks, full_matrices=False)  # (f, g, eb, k), (f, g, k), (f, g, k, da)
    k = min(r, s.shape[-1])
    root = s[..., :k].sqrt()  # (f, g, k): split each singular value evenly between the cores
    b_vec = w.new_zeros(f, g, r, e * b)  # (f, g, r, e*b)
    a_vec = w.new_zeros(f, g, r, d * a)  # (f, g, r, d*a)
    b_vec[:, :, :k] = (u[..., :k] * root[..., None, :]).transpose(-1, -2)
    a_vec[:, :, :k] = root[..., None] * vh[..., :k, :]
    core_a = a_vec.view(f, g, r, d, a).permute(1, 4, 2, 0, 3)  # (g, a, r, f, d)
    core_b = b_vec.view(f, g, r, e, b).permute(0, 1, 4, 2, 3)  # (f, g, b, r, e)
    return core_a, core_b


def _dense_of(core_a: Tensor, core_b: Tensor, shape: tuple[int, int, int, int]) -> Tensor:
    padded_out, padded_in, d_out, d_in = shape
    w = torch.einsum("garfd,fgbre->fedgba", core_a, core_b)  # (f, e, d, g, b, a)
    return w.reshape(padded_out, padded_in)[:d_out, :d_in]


def relative_error(approx: Tensor, weight: Tensor) -> float:
    """||approx - weight||_F / ||weight||_F, in float64 (0 when both are zero)."""
    w = weight.detach().to(torch.float64)
    diff = torch.linalg.matrix_norm(approx.detach().to(torch.float64) - w)
    norm = torch.linalg.matrix_norm(w)
    return float(diff / norm) if float(norm) > 0 else float(diff)


def project_dense(layer, weight: Tensor, bias: Tensor | None = None, *, fit_steps: int = 100) -> float:
    """Set ``layer``'s cores to the structured matrix nearest ``weight`` (d_out x d_in); returns the relative error.

    Exact (SVD) without padding; with padding the SVD start is refined by ``fit_steps``
    L-BFGS iterations on the masked least-squares error. ``bias`` is copied when given
    (else the layer's bias is zeroed). A layer with its own ``project_`` (BTT-MoE) projects itself.
    """
    if hasattr(layer, "project_"):
        return layer.project_(weight, bias, fit_steps=fit_steps)
    shape = (layer.d_out, layer.d_in)
    if tuple(weight.shape) != shape:
        raise SizeError(f"weight: expected shape {shape} (d_out, d_in), got {tuple(weight.shape)}")
    if bias is not None and layer.bias is not None and tuple(bias.shape) != (layer.d_out,):
        raise SizeError(f"bias: expected shape ({layer.d_out},), got {tuple(bias.shape)}")
    target = weight.detach().to(device=layer.cores[0].param.device, dtype=torch.float64)
    padded = target.new_zeros(layer.padded_out, layer.padded_in)
    padded[: layer.d_out, : layer.d_in] = target
    core_a, core_b = closed_form_cores(padded, layer.dims)
    if layer.padding > 0 and fit_steps > 0:
        core_a, core_b = _refine(core_a, core_b, target, layer, fit_steps)
    with torch.no_grad():
        if layer.A is None:  # a core with no index: fold its scalar into the other one
            layer.B.copy_(core_b * core_a.reshape(()))
        elif layer.B is None:
            layer.A.copy_(core_a * core_b.reshape(()))
        else:
            layer.A.copy_(core_a)
            layer.B.copy_(core_b)
        if layer.bias is not None and bias is not None:
            layer.bias.copy_(bias.detach())
        elif layer.bias is not None:
            layer.bias.zero_()
        return relative_error(layer.to_dense(), target)


def _refine(core_a: Tensor, core_b: Tensor, target: Tensor, layer, steps: int) -> tuple[Tensor, Tensor]:
    """L-BFGS on ||(A . B)[:d_out, :d_in] - W||^2 from the SVD start (float64)."""
    shape = (layer.padded_out, layer.padded_in, layer.d_out, layer.d_in)
    start = (core_a.detach().contiguous(), core_b.detach().contiguous())
    params = [start[0].clone().requires_grad_(True), start[1].clone().requires_grad_(True)]
    scale = float(torch.linalg.matrix_norm(target)) ** 2 or 1.0
    optimizer = torch.optim.LBFGS(params, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def loss() -> Tensor:
        return (_dense_of(params[0], params[1], shape) - target).pow(2).sum() / scale

    def closure() -> Tensor:
        optimizer.zero_grad()
        value = loss()
        value.backward()
        return value

    with torch.no_grad():
        before = float(loss())
    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        after = float(loss())
    if not after < before:
        return start
    return params[0].detach(), params[1].detach()
