"""The dense layers :func:`structurize` can replace: ``nn.Linear`` and Hugging Face's ``Conv1D``.

GPT-2 (and GPT, and a few other Hugging Face models) use ``transformers.pytorch_utils.Conv1D``
for every projection: ``y = x @ weight + bias`` with ``weight`` stored (d_in, d_out), the
transpose of ``nn.Linear``'s (d_out, d_in). :func:`dense_layer` gives either one the same view.
transformers is optional and never imported here: a Conv1D is recognised as an instance of
the class when transformers is already loaded, or by its layout (a class named ``Conv1D`` with
an integer ``nf`` and a 2-D ``weight`` of ``nf`` columns), which also covers copies of it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["REPLACEABLE", "DenseLayer", "dense_layer", "is_conv1d"]

REPLACEABLE = "nn.Linear, transformers Conv1D"


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is a Hugging Face ``Conv1D`` (weight stored (d_in, d_out)).

    >>> is_conv1d(nn.Linear(4, 3))
    False
    """
    hf = sys.modules.get("transformers.pytorch_utils")  # loaded iff the model could hold one
    cls = getattr(hf, "Conv1D", None)
    if isinstance(cls, type) and isinstance(module, cls):
        return True
    weight, nf = getattr(module, "weight", None), getattr(module, "nf", None)
    return (
        type(module).__name__ == "Conv1D"
        and isinstance(nf, int)
        and isinstance(weight, Tensor)
        and weight.dim() == 2
        and weight.shape[1] == nf
    )


@dataclass(frozen=True)
class DenseLayer:
    """A replaceable dense layer seen as y = x W^T + b with W of shape (d_out, d_in)."""

    module: nn.Module
    kind: str  # "Linear" or "Conv1D"
    d_in: int
    d_out: int

    @property
    def weight(self) -> Tensor:
        """The stored parameter (Conv1D: (d_in, d_out); Linear: (d_out, d_in))."""
        return self.module.weight

    @property
    def matrix(self) -> Tensor:
        """W as (d_out, d_in), a view of the stored weight."""
        return self.module.weight.T if self.kind == "Conv1D" else self.module.weight

    @property
    def bias(self) -> Tensor | None:
        return getattr(self.module, "bias", None)


def dense_layer(module: nn.Module) -> DenseLayer | None:
    """The (d_out, d_in) view of an ``nn.Linear`` or Conv1D; ``None`` for any other module.

    >>> view = dense_layer(nn.Linear(4, 3))
    >>> view.kind, view.d_in, view.d_out, tuple(view.matrix.shape)
    ('Linear', 4, 3, (3, 4))
    """
    if isinstance(module, nn.Linear):
        return DenseLayer(module, "Linear", module.in_features, module.out_features)
    if is_conv1d(module):
        d_in, d_out = module.weight.shape
        return DenseLayer(module, "Conv1D", int(d_in), int(d_out))
    return None
