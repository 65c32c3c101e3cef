"""How a structure runs in torch: the einsum-structured linear layer and its helpers.

- :class:`EinsumLinear`: the layer (one general contraction, measured fast paths);
- :func:`param_groups`: per-core Adam learning rates (structure-aware muP);
- :func:`structurize`: replace a model's ``nn.Linear`` modules, returning a
  :class:`StructurizeSummary`; ``init="project"`` fits each to the dense weight;
- :func:`project_dense`: the Frobenius-nearest structured layer to a dense matrix;
- :func:`linear_factory`: the layer constructor a task builds its model with.
"""

from structsearch.layers._einsum_linear import EinsumLinear, load_spec
from structsearch.layers._init import CoreInfo, init_linear_, param_groups, spectral_std
from structsearch.layers._project import project_dense
from structsearch.layers._surgery import LayerChange, StructurizeSummary, linear_factory, structurize

__all__ = [
    "CoreInfo",
    "EinsumLinear",
    "LayerChange",
    "StructurizeSummary",
    "init_linear_",
    "linear_factory",
    "load_spec",
    "param_groups",
    "project_dense",
    "spectral_std",
    "structurize",
]
