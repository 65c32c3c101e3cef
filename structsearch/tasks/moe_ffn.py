"""The standard-MoE versions of the built-in tasks: whole-FFN experts, the baseline of BTT-MoE.

- ``char-lm-moe``: :class:`~structsearch.tasks.CharLM` whose MLP (fc, GELU, proj) in every
  block is an :class:`~structsearch.layers.MoEFFN` of E experts, each the size of the dense
  MLP (width -> 4 width -> width), top-k per token. The attention projections stay the
  structure under test (dense for the standard MoE).
- ``mlp-regression-moe``: :class:`~structsearch.tasks.MLPRegression` whose hidden layers,
  taken in pairs (linear, ReLU, linear), are MoEFFN blocks of E (width -> width -> width)
  ReLU experts; depth - 1 must be even (the default depth 3 gives one block).

Options: those of the parent task plus ``experts`` (default 8) and ``k`` (default 2). The
evaluator counts each MoEFFN as one linear layer of ``.macs`` per token (k experts plus
the router) and adds the routers' auxiliary losses, as for BTT-MoE.
"""

from __future__ import annotations

import functools
from typing import Any

from structsearch.errors import TaskError
from structsearch.spec import routing
from structsearch.tasks._protocol import LinearFactory, register_task
from structsearch.tasks.char_lm import CharLM
from structsearch.tasks.mlp_regression import MLPRegression

__all__ = ["CharLMMoE", "MLPRegressionMoE", "char_lm_moe", "mlp_regression_moe"]


def _routing_options(options: dict[str, Any]) -> tuple[int, int]:
    experts, k = options.pop("experts", 8), options.pop("k", 2)
    try:
        routing(experts, k)
    except ValueError as err:
        raise TaskError(str(err)) from None
    return experts, k


def _placeholder(*_: Any, **__: Any) -> Any:
    from torch import nn

    return nn.Identity()


class CharLMMoE(CharLM):
    """char-lm with a top-k mixture of whole-MLP experts in every block (module docstring)."""

    name = "char-lm-moe"

    def __init__(self, experts: int = 8, k: int = 2, **options: Any) -> None:
        super().__init__(**options)
        self.experts, self.k = _routing_options({"experts": experts, "k": k})
        self.options = {**self.options, "experts": self.experts, "k": self.k}

    def build_model(self, linear: LinearFactory, width: int) -> Any:
        from structsearch.layers import MoEFFN

        def attention_only(d_in: int, d_out: int, bias: bool = True) -> Any:
            return linear(d_in, d_out, bias) if d_in == d_out else _placeholder()  # the MLP is built below

        model = super().build_model(attention_only, width)
        for i, block in enumerate(model.blocks):
            del block.fc, block.proj
            ffn = MoEFFN(width, 4 * width, width, self.experts, self.k, activation="gelu")
            model.blocks[i] = _moe_block_class()(block, ffn)
        return model


@functools.cache
def _moe_block_class() -> type:
    import torch
    from torch import nn

    class MoEBlock(nn.Module):
        """A char-lm block whose MLP is a mixture of experts: h + attn(ln1 h), then + ffn(ln2 h)."""

        def __init__(self, block: nn.Module, ffn: nn.Module) -> None:
            super().__init__()
            self.attn, self.ffn = block, ffn  # the original block keeps ln1, ln2, q, k, v, o

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            h = h + self.attn.attention(self.attn.ln1(h))
            return h + self.ffn(self.attn.ln2(h))

    return MoEBlock


class MLPRegressionMoE(MLPRegression):
    """mlp-regression whose hidden layers, in pairs, are top-k mixtures of FFN experts."""

    name = "mlp-regression-moe"

    def __init__(self, experts: int = 8, k: int = 2, **options: Any) -> None:
        super().__init__(**options)
        if (self.depth - 1) % 2:
            raise TaskError(f"mlp-regression-moe.depth: depth - 1 must be even (pairs of layers), got {self.depth}")
        self.experts, self.k = _routing_options({"experts": experts, "k": k})
        self.options = {**self.options, "experts": self.experts, "k": self.k}

    def build_model(self, linear: LinearFactory, width: int) -> Any:
        from torch import nn

        from structsearch.layers import MoEFFN

        model = super().build_model(_placeholder, width)
        blocks = (self.depth - 1) // 2
        model.hidden = nn.ModuleList(
            MoEFFN(width, width, width, self.experts, self.k, activation="relu") for _ in range(blocks)
        )
        return model


def char_lm_moe(**options: Any) -> CharLMMoE:
    """Factory registered as ``char-lm-moe``."""
    return CharLMMoE(**options)


def mlp_regression_moe(**options: Any) -> MLPRegressionMoE:
    """Factory registered as ``mlp-regression-moe``."""
    return MLPRegressionMoE(**options)


register_task("char-lm-moe", char_lm_moe)
register_task("mlp-regression-moe", mlp_regression_moe)
