"""Training tasks: the protocol, the registry and the built-in tasks.

- :class:`Task` -- the protocol (three methods and a few settings; see its docstring).
- :func:`get_task` -- resolve a registered name, a ``package.module:function`` plugin or a task object.
- ``mlp-regression`` (:class:`MLPRegression`) and ``char-lm`` (:class:`CharLM`) are built in;
  ``mlp-regression-moe`` and ``char-lm-moe`` are their standard-MoE versions (whole-FFN experts).

Importing this package does not import torch.
"""

from __future__ import annotations

from structsearch.tasks._protocol import (
    REQUIRED_METHODS,
    LinearFactory,
    Task,
    check_task,
    get_task,
    register_task,
    task_names,
)
from structsearch.tasks.char_lm import CharLM, char_lm
from structsearch.tasks.mlp_regression import MLPRegression, mlp_regression
from structsearch.tasks.moe_ffn import CharLMMoE, MLPRegressionMoE, char_lm_moe, mlp_regression_moe

__all__ = [
    "REQUIRED_METHODS",
    "CharLM",
    "CharLMMoE",
    "LinearFactory",
    "MLPRegression",
    "MLPRegressionMoE",
    "Task",
    "char_lm",
    "char_lm_moe",
    "check_task",
    "get_task",
    "mlp_regression",
    "mlp_regression_moe",
    "register_task",
    "task_names",
]
