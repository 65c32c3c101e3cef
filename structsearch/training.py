"""How to train structured layers: the evaluator's optimiser recipe, for your own training loop.

Structured layers train well only with the whole recipe the evaluator uses (docs/evaluation.md
section 2); plain ``AdamW(param_groups(...))`` at a constant learning rate falls far short.
:func:`optimizer` returns it as an AdamW optimiser and a ``LambdaLR`` schedule:

- AdamW with betas (0.9, 0.95) and eps 1e-8;
- per-core muP learning rates, ``lr * base_fan_in / fan_in`` for every structured core and
  dense weight, ``lr`` for biases, norms and embeddings (:func:`structsearch.layers.param_groups`);
  weight decay on the matrices only;
- linear warmup over ``warmup_fraction`` of the steps, then cosine decay to 0 (:func:`lr_factor`);
- gradient clipping at global norm :data:`GRAD_CLIP`, applied by the loop::

      opt, schedule = structsearch.optimizer(model, lr=3e-3, steps=1000, base_fan_in=128)
      for step in range(1000):
          loss = ...
          loss.backward()
          torch.nn.utils.clip_grad_norm_(model.parameters(), structsearch.training.GRAD_CLIP)
          opt.step()
          schedule.step()
          opt.zero_grad()

The defaults are the built-in tasks' settings (``Task.weight_decay``, ``warmup_fraction``,
``grad_clip``). Importing this module is cheap: torch loads inside :func:`optimizer`.
"""

from __future__ import annotations

import math
from typing import Any

from structsearch.errors import SizeError

__all__ = ["BETAS", "EPS", "GRAD_CLIP", "WARMUP_FRACTION", "lr_factor", "optimizer"]

BETAS = (0.9, 0.95)
EPS = 1e-8
WARMUP_FRACTION = 0.05
GRAD_CLIP = 1.0  # global gradient norm the evaluator clips to (Task.grad_clip)


def _warmup_steps(steps: int, warmup_fraction: float) -> int:
    return max(1, round(warmup_fraction * steps)) if warmup_fraction > 0 else 0


def lr_factor(step: int, steps: int, warmup_fraction: float = WARMUP_FRACTION) -> float:
    """Learning-rate multiplier after ``step`` optimiser steps of ``steps``: warmup, then cosine to 0.

    Warmup lasts ``max(1, round(warmup_fraction * steps))`` steps (none when the fraction is 0)
    and rises linearly to 1; the cosine then falls from 1 to 0 over the remaining steps.

    >>> [round(lr_factor(s, 10, 0.2), 3) for s in range(10)]
    [0.5, 1.0, 1.0, 0.962, 0.854, 0.691, 0.5, 0.309, 0.146, 0.038]
    """
    warmup = _warmup_steps(steps, warmup_fraction)
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def optimizer(
    model: Any,
    lr: float,
    steps: int,
    *,
    base_fan_in: int,
    weight_decay: float = 0.0,
    warmup_fraction: float = WARMUP_FRACTION,
    betas: tuple[float, float] = BETAS,
    eps: float = EPS,
) -> tuple[Any, Any]:
    """The evaluator's AdamW and warmup + cosine schedule for ``model``: ``(optimizer, scheduler)``.

    ``lr`` is the Adam learning rate of a matrix with fan-in ``base_fan_in`` (the width it
    was tuned at; the built-in tasks tune at 64); every structured core and dense weight gets
    ``lr * base_fan_in / fan_in``. Call ``scheduler.step()`` after every ``optimizer.step()``,
    ``steps`` times in all, and clip gradients to :data:`GRAD_CLIP` before each step.

    >>> from torch import nn
    >>> opt, schedule = optimizer(nn.Linear(256, 8), lr=1e-3, steps=100, base_fan_in=64)
    >>> [(g["names"], g["initial_lr"]) for g in opt.param_groups]
    [(['weight'], 0.00025), (['bias'], 0.001)]
    """
    import torch

    from structsearch.layers import param_groups

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise SizeError(f"steps: expected a positive integer, got {steps!r}")
    if not (isinstance(warmup_fraction, (int, float)) and 0 <= warmup_fraction < 1):
        raise SizeError(f"warmup_fraction: expected a number in [0, 1), got {warmup_fraction!r}")
    groups = param_groups(model, lr, base_fan_in=base_fan_in, weight_decay=weight_decay)
    opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, steps, warmup_fraction))
    return opt, schedule
