"""Structure-aware initialisation and learning rates (taxonomy.md section 5).

Each core is a batch of matrices with a fan-in and a fan-out:

- core A: fan-in d_alpha, fan-out d_delta d_phi d_rho (one matrix per gamma);
- core B: fan-in d_beta d_gamma d_rho, fan-out d_epsilon (one matrix per phi);
- a plain ``nn.Linear`` weight: fan-in in_features, fan-out out_features (the same for a
  Hugging Face ``Conv1D``, whose weight is stored transposed).

Initialisation: std = sqrt(min(fan_in, fan_out)) / fan_in (spectral scaling). Adam learning
rate: lr * base_fan_in / fan_in, so one learning rate tuned at the base width transfers.
A core whose matrices are all 1 x 1 (every class of it rounds to size 1, as at tiny layer
sizes) is a gain, not a weight matrix: it starts at 1 and trains at the base learning rate,
like biases and norms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from structsearch.errors import SizeError
from structsearch.layers._dense import dense_layer

__all__ = ["CoreInfo", "init_linear_", "lr_multiplier", "param_groups", "spectral_std"]


@dataclass(frozen=True)
class CoreInfo:
    """One weight core as the optimiser sees it: a batch of fan_in x fan_out matrices."""

    name: str
    param: nn.Parameter
    fan_in: int
    fan_out: int
    batch: int

    @property
    def is_gain(self) -> bool:
        """Every matrix is 1 x 1: a scalar gain rather than a weight matrix."""
        return self.fan_in == 1 and self.fan_out == 1

    @property
    def init_std(self) -> float:
        return spectral_std(self.fan_in, self.fan_out)


def spectral_std(fan_in: int, fan_out: int) -> float:
    """Initial standard deviation of a fan_in x fan_out matrix: sqrt(min(fan_in, fan_out)) / fan_in.

    >>> spectral_std(1024, 1024) == 1 / 32
    True
    """
    return math.sqrt(min(fan_in, fan_out)) / fan_in


def lr_multiplier(fan_in: int, base_fan_in: int) -> float:
    """Adam learning-rate multiplier of a matrix with this fan-in: base_fan_in / fan_in.

    >>> lr_multiplier(512, 256)
    0.5
    """
    return base_fan_in / fan_in if fan_in else 1.0  # an empty matrix (fan-in 0) has no entries to scale


@torch.no_grad()
def init_core_(core: CoreInfo, zero: bool = False) -> None:
    """Initialise one core in place (a 1 x 1 gain starts at 1; ``zero`` starts at 0)."""
    if core.param.is_meta:  # no values to set (a model built to count its MACs); meta's normal_ is slow Python
        return
    if zero:
        core.param.zero_()
    elif core.is_gain:
        core.param.fill_(1.0)
    else:
        core.param.normal_(0.0, core.init_std)


@torch.no_grad()
def init_linear_(linear: nn.Linear) -> nn.Linear:
    """Give a plain ``nn.Linear`` the same spectral initialisation (zero bias); returns it."""
    linear.weight.normal_(0.0, spectral_std(linear.in_features, linear.out_features))
    if linear.bias is not None:
        linear.bias.zero_()
    return linear


def _matrix_params(model: nn.Module) -> dict[int, tuple[str, nn.Parameter, int]]:
    """id(param) -> (qualified name, param, fan_in) for every structured core and dense (Linear, Conv1D) weight."""
    found: dict[int, tuple[str, nn.Parameter, int]] = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        cores = getattr(module, "cores", None)
        dense = dense_layer(module)
        if dense is not None:
            found.setdefault(id(dense.weight), (prefix + "weight", dense.weight, dense.d_in))
        elif isinstance(cores, tuple) and all(isinstance(c, CoreInfo) for c in cores):
            for core in cores:
                if not core.is_gain:
                    found.setdefault(id(core.param), (prefix + core.name, core.param, core.fan_in))
    return found


def param_groups(model: nn.Module, lr: float, base_fan_in: int, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups with per-core learning rates (for Adam/AdamW).

    Structured cores and dense weights (``nn.Linear``, Hugging Face ``Conv1D``) get
    ``lr * base_fan_in / fan_in`` and ``weight_decay``; everything else (biases, norms,
    embeddings, scalar gains) gets ``lr`` and no weight decay. Groups with equal settings are
    merged; each carries ``lr_mult`` and the parameter ``names``. A parameter shared by
    several modules appears once.

    >>> groups = param_groups(nn.Linear(512, 8), lr=1e-3, base_fan_in=256)
    >>> [(g["names"], g["lr"]) for g in groups]
    [(['weight'], 0.0005), (['bias'], 0.001)]
    """
    if isinstance(base_fan_in, bool) or not isinstance(base_fan_in, int) or base_fan_in <= 0:
        raise SizeError(f"base_fan_in: expected a positive integer, got {base_fan_in!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise SizeError(f"lr: expected a positive number, got {lr!r}")
    matrices = _matrix_params(model)
    groups: dict[tuple[float, float], dict] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if id(param) in seen or not param.requires_grad:
            continue
        seen.add(id(param))
        if id(param) in matrices:
            mult, decay = lr_multiplier(matrices[id(param)][2], base_fan_in), float(weight_decay)
        else:
            mult, decay = 1.0, 0.0
        group = groups.setdefault(
            (mult, decay), {"params": [], "names": [], "lr": lr * mult, "lr_mult": mult, "weight_decay": decay}
        )
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())
