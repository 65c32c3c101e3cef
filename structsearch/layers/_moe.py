"""BTT-MoE (taxonomy.md 6): a mixture of E rank-one BTT terms inside one linear layer.

A BTT layer of BTT-rank E is the sum of E rank-one BTT terms. BTT-MoE reads each term as
an expert: a router (a d_in -> E linear map, zero-initialised) picks the top-k experts per
token and only their terms run, weighted by the softmax of the selected logits::

    logits = x R^T                          (n, E)
    top, idx = topk(logits, k)              (n, k)
    y_n = sum_j softmax(top_n)_j BTT_{idx_nj}(x_n) + bias

Sparse compute: the n*k (token, expert) assignments are sorted by expert; each expert
gathers its tokens and runs the rank-one BTT fast path on them (two batched GEMMs), and its
weighted output is added back with ``index_add_``. So a token costs k terms plus the router,
whatever E is: MACs per token = k * MACs(one term) + d_in * E, what FlopCounterMode measures.

Training adds two auxiliary losses (collected by :func:`aux_loss`, which the evaluator adds
to the task loss): the switch load-balancing loss ``E * sum_e f_e P_e`` (f_e: fraction of
assignments routed to e, P_e: mean router probability of e; 1 for uniform routing, larger
otherwise) and the router z-loss ``mean(logsumexp(logits)^2)``. :meth:`BTTMoE.router_stats`
gives the expert load and the routing entropy of the last training forward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structsearch.errors import SpecError
from structsearch.layers._einsum_linear import check_input_width
from structsearch.layers._fast_paths import btt_contract
from structsearch.layers._init import CoreInfo, init_core_
from structsearch.sizes import MAX_PADDING, check_layer_sizes
from structsearch.spec import Spec, parse_spec, routing
from structsearch.taxonomy import Taxonomy, analyze

__all__ = ["BALANCE_COEF", "Z_COEF", "BTTMoE", "Router", "aux_loss", "dispatch", "make_layer"]

BALANCE_COEF = 1e-2  # weight of the load-balancing loss (Switch Transformer)
Z_COEF = 1e-3  # weight of the router z-loss (ST-MoE)


def dispatch(experts: Tensor, n_experts: int) -> tuple[Tensor, list[int]]:
    """Assignments (n, k) -> their flat indices sorted by expert (n*k,), and the count per expert.

    >>> order, counts = dispatch(torch.tensor([[2, 0], [0, 1]]), 3)
    >>> order.tolist(), counts
    ([1, 2, 3, 0], [2, 1, 1])
    """
    flat = experts.reshape(-1)  # (n*k,)
    order = torch.argsort(flat, stable=True)  # (n*k,)
    return order, torch.bincount(flat, minlength=n_experts).tolist()


class Router(nn.Module):
    """Top-k routing of tokens over E experts, with the auxiliary losses and statistics.

    ``forward(x)`` returns (weights (n, k), experts (n, k)); in training mode it also sets
    ``aux_loss`` (balance_coef * balancing + z_coef * z-loss) and the statistics.
    """

    def __init__(
        self,
        d_in: int,
        experts: int,
        k: int,
        *,
        balance_coef: float = BALANCE_COEF,
        z_coef: float = Z_COEF,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.experts, self.k = routing(experts, k).experts, k
        self.balance_coef, self.z_coef = float(balance_coef), float(z_coef)
        self.weight = nn.Parameter(torch.zeros(experts, d_in, device=device, dtype=dtype))  # zero init
        self.aux_loss: Tensor | None = None
        self._last: tuple[Tensor, Tensor] | None = None  # (counts (E,), logits (n, E)) of the last training forward

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits = F.linear(x, self.weight)  # (n, E)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 up, float64 kept
        top, experts = logits.topk(self.k, dim=-1)  # (n, k), (n, k)
        weights = top.softmax(-1)  # (n, k): softmax over the selected logits
        if self.training:
            counts = torch.bincount(experts.reshape(-1), minlength=self.experts)  # (E,)
            self.aux_loss = self.balance_coef * balancing_loss(logits, counts) + self.z_coef * z_loss(logits)
            self._last = (counts, logits.detach())
        return weights.to(x.dtype), experts

    def stats(self) -> dict[str, Any]:
        """Expert load (fraction of assignments each expert got) and the mean routing entropy
        (nats; ln E is uniform) of the last training forward; empty before one."""
        if self._last is None:
            return {}
        counts, logits = self._last
        probs = logits.softmax(-1)  # (n, E)
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1).mean()
        return {
            "load": (counts.float() / counts.sum()).tolist(),
            "entropy": float(entropy),
            "max_entropy": float(torch.log(torch.tensor(float(self.experts)))),
            "balancing_loss": float(balancing_loss(logits, counts)),
            "z_loss": float(z_loss(logits)),
        }


def balancing_loss(logits: Tensor, counts: Tensor) -> Tensor:
    """Switch load-balancing loss E * sum_e f_e P_e: 1 when routing is uniform, up to E when skewed.

    >>> float(balancing_loss(torch.zeros(4, 2), torch.tensor([4, 4])))
    1.0
    """
    experts = logits.shape[-1]
    fraction = counts.to(logits.dtype) / counts.sum().clamp_min(1)  # (E,) f_e, no gradient
    return experts * (fraction * logits.softmax(-1).mean(0)).sum()


def z_loss(logits: Tensor) -> Tensor:
    """Router z-loss: mean over tokens of logsumexp(logits)^2 (keeps the logits small)."""
    return torch.logsumexp(logits, -1).square().mean()


def aux_loss(model: nn.Module) -> Tensor | float:
    """The auxiliary losses the model's routers set in their last training forward, summed
    (and cleared, so none is added twice); 0.0 for a model without routing."""
    total: Tensor | float = 0.0
    for module in model.modules():
        loss = getattr(module, "aux_loss", None)
        if isinstance(module, Router) and loss is not None:
            total = total + loss
            module.aux_loss = None
    return total


class BTTMoE(nn.Module):
    """A d_in -> d_out layer: top-k of E rank-one BTT terms per token (taxonomy.md 6).

    ``theta`` is the BTT-family structure of one expert (default ``btt``: square-root
    blocks). Cores ``A ~ (E, gamma, alpha, phi)`` and ``B ~ (E, phi, gamma, epsilon)``: expert
    e is the rank-one BTT layer ``(A[e], B[e])``. ``params`` and ``macs`` (per token, router
    included) are the taxonomy's; ``router_stats()`` reports load and entropy.

    >>> layer = BTTMoE(64, 64, experts=4, k=2)
    >>> layer.params, layer.macs, tuple(layer(torch.randn(3, 64)).shape)
    (4352, 2304, (3, 64))
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        experts: int = 8,
        k: int = 2,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        theta: Spec | str = "btt",
        balance_coef: float = BALANCE_COEF,
        z_coef: float = Z_COEF,
        max_padding: float | None = MAX_PADDING,
    ) -> None:
        super().__init__()
        self.d_in, self.d_out = check_layer_sizes(d_in, d_out)
        self.spec = parse_spec(theta).base.routed(routing(experts, k))
        self.taxonomy: Taxonomy = analyze(self.spec, self.d_in, self.d_out, max_padding=max_padding)
        dims = self.taxonomy.dims
        self.dims = {**dims.as_dict, "rho": 1}  # one expert: a rank-one BTT layer
        self.padded_in, self.padded_out = dims.padded_in, dims.padded_out
        self.padding_in, self.padding_out = dims.padding_in, dims.padding_out
        self.experts, self.k = experts, k
        g, a, f, e = (self.dims[c] for c in ("gamma", "alpha", "phi", "epsilon"))
        factory = {"device": device, "dtype": dtype}
        self.A = nn.Parameter(torch.empty(experts, g, a, f, **factory))  # per expert, per gamma: alpha x phi
        self.B = nn.Parameter(torch.empty(experts, f, g, e, **factory))  # per expert, per phi: gamma x epsilon
        self.bias = nn.Parameter(torch.empty(self.d_out, **factory)) if bias else None
        self.router = Router(self.d_in, experts, k, balance_coef=balance_coef, z_coef=z_coef, **factory)
        self._fans = (("A", a, f, experts * g), ("B", g, e, experts * f))
        self.reset_parameters()

    @classmethod
    def from_spec(cls, spec_or_path: Any, d_in: int, d_out: int, *, index: int = 0, **kwargs: Any) -> BTTMoE:
        """Build from a routed spec (``btt-moe:experts=8,k=2``, a theta with ``moe``, or an exported file)."""
        from structsearch.spec import load_spec

        spec = load_spec(spec_or_path, index=index)
        if spec.moe is None:
            raise SpecError(f"BTTMoE: expected a routed spec such as btt-moe:experts=8,k=2, got {spec.paper}")
        return cls(d_in, d_out, spec.moe.experts, spec.moe.k, theta=spec.base, **kwargs)

    def reset_parameters(self) -> None:
        """Spectral init of every expert's cores (as a rank-one BTT layer), zero router and bias."""
        for core in self.cores[:2]:
            init_core_(core)
        nn.init.zeros_(self.router.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @property
    def cores(self) -> tuple[CoreInfo, ...]:
        """A, B (batches of fan_in x fan_out matrices) and the router, for init and :func:`param_groups`."""
        mats = tuple(CoreInfo(name, getattr(self, name), fi, fo, bt) for name, fi, fo, bt in self._fans)
        return (*mats, CoreInfo("router.weight", self.router.weight, self.d_in, self.experts, 1))

    @property
    def params(self) -> int:
        """Parameters of the experts and the router (the taxonomy's count; the bias is extra)."""
        return self.taxonomy.params

    @property
    def macs(self) -> int:
        """MACs per token: k rank-one terms plus the router (the taxonomy's count)."""
        return self.taxonomy.macs

    @property
    def padding(self) -> float:
        return max(self.padding_in, self.padding_out)

    def router_stats(self) -> dict[str, Any]:
        """Expert load and routing entropy of the last training forward (see :meth:`Router.stats`)."""
        return self.router.stats()

    def forward(self, x: Tensor) -> Tensor:
        check_input_width(self, x)
        batch = x.shape[:-1]
        cores = (self.A, self.B, self.bias)
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
            x, cores = x.to(dtype), tuple(None if t is None else t.to(dtype) for t in cores)
        with torch.autocast(x.device.type, enabled=False):
            y = self._mix(x.reshape(-1, self.d_in), *cores)  # (n, d_out)
        return y.reshape(*batch, self.d_out)

    def _mix(self, x: Tensor, core_a: Tensor, core_b: Tensor, bias: Tensor | None) -> Tensor:
        """x (n, d_in) -> y (n, d_out): each token's k selected terms, weighted, plus the bias."""
        n = x.shape[0]
        weights, experts = self.router(x)  # (n, k), (n, k)
        if self.padded_in != self.d_in:
            x = F.pad(x, (0, self.padded_in - self.d_in))  # (n, padded_in)
        order, counts = dispatch(experts, self.experts)  # (n*k,), E counts
        tokens = order // self.k  # (n*k,): the token of each assignment, grouped by expert
        gates = weights.reshape(-1)[order, None]  # (n*k, 1)
        chunks = x[tokens].split(counts)  # E views of (count_e, padded_in): one gather, one scatter back
        terms = [
            btt_contract(chunk, a, b, None, self.dims)  # (count_e, padded_out): two batched GEMMs
            for chunk, a, b in zip(chunks, core_a.unbind(0), core_b.unbind(0), strict=True)
            if chunk.shape[0]
        ]
        y = x.new_zeros(n, self.padded_out).index_add_(0, tokens, torch.cat(terms) * gates)  # (n, padded_out)
        if self.padded_out != self.d_out:
            y = y[:, : self.d_out]  # (n, d_out)
        return y + bias if bias is not None else y

    def project_(self, weight: Tensor, bias: Tensor | None = None, *, fit_steps: int = 100) -> float:
        """Set every expert to the rank-one BTT projection of ``weight``; returns its relative error.

        The gates of a token sum to 1, so with identical experts the layer computes exactly
        that projection whatever the routing; the experts then diverge in training, since
        each gets different tokens (and the balancing loss spreads the tokens out).
        """
        from structsearch.layers._einsum_linear import EinsumLinear
        from structsearch.layers._project import project_dense

        one = EinsumLinear(self.spec.base, self.d_in, self.d_out, bias=self.bias is not None, max_padding=None)
        one = one.to(device=self.A.device, dtype=self.A.dtype)
        error = project_dense(one, weight, bias, fit_steps=fit_steps)
        with torch.no_grad():
            self.A.copy_(one.A.reshape(self.A.shape[1:]).expand_as(self.A))  # (g, a, 1, f, 1) -> each (g, a, f)
            self.B.copy_(one.B.reshape(self.B.shape[1:]).expand_as(self.B))  # (f, g, 1, 1, e) -> each (f, g, e)
            if self.bias is not None:
                self.bias.copy_(one.bias)
        return error

    def expert_dense(self, e: int) -> Tensor:
        """Expert e's d_out x d_in weight (its rank-one BTT term, materialised)."""
        w = torch.einsum("gaf,fge->fega", self.A[e], self.B[e])  # (f, e, g, a)
        return w.reshape(self.padded_out, self.padded_in)[: self.d_out, : self.d_in]

    def extra_repr(self) -> str:
        name = self.spec.name or self.spec.paper
        return (
            f"{name}, d_in={self.d_in}, d_out={self.d_out}, bias={self.bias is not None}, "
            f"params={self.params:,}, macs/token={self.macs:,}, padding {self.padding:.1%}"
        )


def make_layer(spec: Spec, d_in: int, d_out: int, **kwargs: Any) -> nn.Module:
    """The layer a spec builds: :class:`BTTMoE` for a routed spec, :class:`EinsumLinear` otherwise."""
    from structsearch.layers._einsum_linear import EinsumLinear

    if spec.moe is None:
        return EinsumLinear(spec, d_in, d_out, **kwargs)
    kwargs.pop("zero_init", None)
    kwargs.pop("path", None)
    return BTTMoE(d_in, d_out, spec.moe.experts, spec.moe.k, theta=spec.base, **kwargs)
