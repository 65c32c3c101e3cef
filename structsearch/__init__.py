"""structsearch: search the space of einsum-structured linear layers.

Importing the package is cheap and torch-free; the torch-backed names
(``EinsumLinear``, ``structurize``, ``optimizer``, ``evaluate``, ...) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from structsearch.errors import (
    SizeError,
    SpaceError,
    SpecError,
    StructSearchError,
    StudyError,
    SurgeryError,
    TaskError,
)
from structsearch.sizes import ClassSizes, class_sizes
from structsearch.spec import Spec, known_name, named_structures, parse_spec

__version__ = "0.1.0"

# name -> module that defines it; imported lazily so `structsearch taxonomy` never loads torch.
_LAZY = {
    "IndexGraph": "structsearch.graph",
    "Taxonomy": "structsearch.taxonomy",
    "analyze": "structsearch.taxonomy",
    "batch_taxonomy": "structsearch.taxonomy",
    "EinsumLinear": "structsearch.layers",
    "BTTMoE": "structsearch.layers",
    "MoEFFN": "structsearch.layers",
    "aux_loss": "structsearch.layers",
    "StructurizeSummary": "structsearch.layers",
    "linear_factory": "structsearch.layers",
    "load_spec": "structsearch.spec",
    "param_groups": "structsearch.layers",
    "project_dense": "structsearch.layers",
    "structurize": "structsearch.layers",
    "optimizer": "structsearch.training",
    "evaluate": "structsearch.evaluation",
    "proxy": "structsearch.evaluation",
    "scale": "structsearch.scaling",
    "frontier_score": "structsearch.frontier",
    "confirm": "structsearch.confirmation",
    "search": "structsearch.engine",
    "report": "structsearch.reporting",
    "export": "structsearch.exporting",
}

__all__ = [
    "ClassSizes",
    "SizeError",
    "SpaceError",
    "Spec",
    "SpecError",
    "StructSearchError",
    "StudyError",
    "SurgeryError",
    "TaskError",
    "__version__",
    "class_sizes",
    "known_name",
    "named_structures",
    "parse_spec",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'structsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:  # the lazy names too, so that tab completion shows the whole API
    return sorted(set(globals()) | set(__all__))
