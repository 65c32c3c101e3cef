"""The standard MoE baseline: E whole-FFN experts (d_in -> hidden -> d_out), top-k per token.

Same router, auxiliary losses and sparse dispatch as :class:`~structsearch.layers.BTTMoE`:
the (token, expert) assignments are sorted by expert and each expert runs its two dense
GEMMs on its own tokens only, so a token costs k FFNs plus the router:
MACs per token = k * (d_in * hidden + hidden * d_out) + d_in * E.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structsearch.errors import SpecError
from structsearch.layers._init import CoreInfo, init_core_
from structsearch.layers._moe import BALANCE_COEF, Z_COEF, Router, dispatch
from structsearch.sizes import check_layer_sizes
from structsearch.spec import routing

__all__ = ["ACTIVATIONS", "MoEFFN"]

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


class MoEFFN(nn.Module):
    """Top-k of E FFN experts ``W2_e act(W1_e x + b1_e) + b2_e`` per token, weighted by the router.

    >>> ffn = MoEFFN(16, 64, 16, experts=4, k=1)
    >>> ffn.macs, tuple(ffn(torch.randn(5, 16)).shape)
    (2112, (5, 16))
    """

    def __init__(
        self,
        d_in: int,
        hidden: int,
        d_out: int,
        experts: int = 8,
        k: int = 2,
        *,
        activation: str = "gelu",
        balance_coef: float = BALANCE_COEF,
        z_coef: float = Z_COEF,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.d_in, self.d_out = check_layer_sizes(d_in, d_out)
        self.hidden = check_layer_sizes(hidden, 1)[0]
        if activation not in ACTIVATIONS:
            raise SpecError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.experts, self.k = routing(experts, k).experts, k
        factory = {"device": device, "dtype": dtype}
        self.w1 = nn.Parameter(torch.empty(experts, d_in, hidden, **factory))  # (E, d_in, hidden)
        self.b1 = nn.Parameter(torch.zeros(experts, hidden, **factory))
        self.w2 = nn.Parameter(torch.empty(experts, hidden, d_out, **factory))  # (E, hidden, d_out)
        self.b2 = nn.Parameter(torch.zeros(experts, d_out, **factory))
        self.router = Router(d_in, experts, k, balance_coef=balance_coef, z_coef=z_coef, **factory)
        for core in self.cores[:2]:
            init_core_(core)

    @property
    def cores(self) -> tuple[CoreInfo, ...]:
        """The two expert weight stacks and the router, for :func:`param_groups` (muP learning rates)."""
        return (
            CoreInfo("w1", self.w1, self.d_in, self.hidden, self.experts),
            CoreInfo("w2", self.w2, self.hidden, self.d_out, self.experts),
            CoreInfo("router.weight", self.router.weight, self.d_in, self.experts, 1),
        )

    @property
    def params(self) -> int:
        """Weight parameters of the experts and the router (biases extra)."""
        return self.experts * (self.d_in * self.hidden + self.hidden * self.d_out) + self.d_in * self.experts

    @property
    def macs(self) -> int:
        """MACs per token: k expert FFNs plus the router."""
        return self.k * (self.d_in * self.hidden + self.hidden * self.d_out) + self.d_in * self.experts

    def router_stats(self) -> dict[str, Any]:
        return self.router.stats()

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[:-1]
        x = x.reshape(-1, self.d_in)  # (n, d_in)
        weights, experts = self.router(x)  # (n, k), (n, k)
        order, counts = dispatch(experts, self.experts)
        tokens = order // self.k  # (n*k,): the token of each assignment, grouped by expert
        gates = weights.reshape(-1)[order, None]  # (n*k, 1)
        act = ACTIVATIONS[self.activation]
        outs = [
            torch.addmm(b2, act(torch.addmm(b1, chunk, w1)), w2)  # (count_e, hidden) -> (count_e, d_out)
            for chunk, w1, b1, w2, b2 in zip(
                x[tokens].split(counts),
                self.w1.unbind(0),
                self.b1.unbind(0),
                self.w2.unbind(0),
                self.b2.unbind(0),
                strict=True,
            )
            if chunk.shape[0]
        ]
        y = x.new_zeros(x.shape[0], self.d_out).index_add_(0, tokens, torch.cat(outs) * gates)  # (n, d_out)
        return y.reshape(*batch, self.d_out)

    def extra_repr(self) -> str:
        return (
            f"d_in={self.d_in}, hidden={self.hidden}, d_out={self.d_out}, experts={self.experts}, k={self.k}, "
            f"activation={self.activation}, params={self.params:,}, macs/token={self.macs:,}"
        )
