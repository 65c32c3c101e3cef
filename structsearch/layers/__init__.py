"""How a structure runs in torch: the einsum-structured linear layer and its helpers.

- :class:`EinsumLinear`: the layer (one general contraction, measured fast paths);
- :func:`param_groups`: per-core Adam learning rates (structure-aware muP);
- :func:`structurize`: replace a model's ``nn.Linear`` modules, returning a
  :class:`StructurizeSummary`; ``init="project"`` fits each to the dense weight;
- :func:`project_dense`: the Frobenius-nearest structured layer to a dense matrix;
- :func:`linear_factory`: the layer constructor a task builds its model with;
- :class:`BTTMoE`: top-k of E rank-one BTT terms per token (taxonomy.md 6), with
  :func:`aux_loss` (load balancing + z-loss) for the training loop; :class:`MoEFFN`: the
  standard MoE baseline (whole-FFN experts).
"""

from structsearch.layers._einsum_linear import EinsumLinear
from structsearch.layers._init import CoreInfo, init_linear_, param_groups, spectral_std
from structsearch.layers._moe import BTTMoE, Router, aux_loss, make_layer
from structsearch.layers._moe_ffn import MoEFFN
from structsearch.layers._project import project_dense
from structsearch.layers._surgery import LayerChange, StructurizeSummary, linear_factory, structurize
from structsearch.spec import load_spec  # re-exported: layers.load_spec is where users met it first

__all__ = [
    "BTTMoE",
    "CoreInfo",
    "EinsumLinear",
    "LayerChange",
    "MoEFFN",
    "Router",
    "StructurizeSummary",
    "aux_loss",
    "init_linear_",
    "linear_factory",
    "load_spec",
    "make_layer",
    "param_groups",
    "project_dense",
    "spectral_std",
    "structurize",
]
