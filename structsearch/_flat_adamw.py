"""AdamW over flat buffers: torch's foreach AdamW (and gradient clipping) in a handful of ops per step.

A proxy training's model is small (10-20 tensors of a few thousand entries) and runs thousands
of steps, so the optimiser's per-tensor work, not its arithmetic, sets its cost: on the CPU,
torch's ``foreach`` AdamW runs every op once per tensor, and ``clip_grad_norm_`` and
``zero_grad`` add Python loops of their own (benchmarks/results/throughput.md, "Flat AdamW": a
width-128 BTT step takes 2.03 ms with them, 1.53 ms with this). Here every parameter is a view
into one flat buffer, the first and second moments are flat buffers too, and one step is

- one ``_foreach_copy_`` that gathers the gradients;
- clipping (optional): the per-tensor norms and their norm as ``clip_grad_norm_`` computes
  them, then one multiply of the flat gradient;
- the moment updates and the denominator, each one op over the whole buffer;
- the parameter update, one op per parameter group (the groups' learning rates differ).

Each element goes through exactly the ops, scalars and order of torch's foreach AdamW with
``clip_grad_norm_``, so the trained parameters are bit-identical to theirs
(tests/test_flat_adamw.py), and every recorded score and benchmark cache stays valid. A step in
which some parameter has no gradient, or after which the parameters' step counts differ, runs
per parameter, as torch does (such a parameter is skipped and its count not advanced).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["FlatAdamW", "flat_adamw_applies"]


# In bfloat16 and float16 torch's _foreach_mul_ rounds differently from Tensor.mul_, so only
# these dtypes keep foreach's bits.
_DTYPES = (torch.float32, torch.float64)


def flat_adamw_applies(groups: list[dict[str, Any]]) -> bool:
    """Whether every parameter is a dense float32 (or float64) tensor of one dtype on one device."""
    params = [p for g in groups for p in g["params"]]
    if not params:
        return False
    first = params[0]
    return first.dtype in _DTYPES and all(
        p.layout == torch.strided and p.dtype == first.dtype and p.device == first.device for p in params
    )


class FlatAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, no amsgrad) whose parameters are views into one flat buffer.

    Construction moves each parameter's values into the buffer (``param.data`` becomes a view),
    so build it after the model is on its device. ``max_grad_norm`` clips the global gradient
    norm inside :meth:`step`, as ``clip_grad_norm_(clip_order, max_grad_norm)`` before it would
    (``clip_order``: the parameters in the order that call would see them, which decides how the
    per-tensor norms are summed; by default the groups' order); the ``param.grad`` tensors
    themselves are left as backward made them.
    """

    def __init__(
        self,
        groups: list[dict[str, Any]],
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = None,
        clip_order: list[Tensor] | None = None,
    ) -> None:
        super().__init__(groups, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.max_grad_norm = max_grad_norm
        self._params = [p for g in self.param_groups for p in g["params"]]
        # The global norm sums the per-tensor norms in this order (clip_grad_norm_ over model.parameters()).
        self._clip_order = list(clip_order) if clip_order is not None else self._params
        if not flat_adamw_applies(self.param_groups):
            raise ValueError("FlatAdamW needs dense float32 or float64 parameters of one dtype on one device")
        if any((tuple(g["betas"]), g["eps"]) != (tuple(betas), eps) for g in self.param_groups):
            raise ValueError("FlatAdamW: every group must use the optimiser's betas and eps (one op updates them all)")
        if not {id(p) for p in self._params} <= {id(p) for p in self._clip_order}:
            raise ValueError("FlatAdamW: clip_order must hold every parameter the optimiser updates")
        first = self._params[0]
        # Each parameter starts on a 64-byte boundary, as its own allocation did: the BLAS's
        # rounding can depend on its operands' alignment, and the gaps stay zero throughout.
        align = max(1, 64 // first.element_size())
        total = sum(-(-p.numel() // align) * align for p in self._params)
        self._flat = torch.zeros(total, dtype=first.dtype, device=first.device)
        self._grad = torch.zeros_like(self._flat)
        self._exp_avg = torch.zeros_like(self._flat)
        self._exp_avg_sq = torch.zeros_like(self._flat)
        self._denom = torch.zeros_like(self._flat)  # reused: a fresh buffer of this size costs page faults every step
        self._spans: list[tuple[int, int]] = []  # each group's range of the buffers
        self._ranges: list[tuple[int, int]] = []  # each parameter's
        offset = 0
        with torch.no_grad():
            for group in self.param_groups:
                start = offset
                for p in group["params"]:
                    self._ranges.append((offset, offset + p.numel()))
                    self._flat[offset : offset + p.numel()].copy_(p.reshape(-1))
                    p.data = self._flat[offset : offset + p.numel()].view_as(p)
                    offset += -(-p.numel() // align) * align
                self._spans.append((start, offset))
        self._grad_views = [self._grad[a:b].view_as(p) for (a, b), p in zip(self._ranges, self._params, strict=True)]
        # each group's (parameters, first moments, denominators): views made once, not per step
        self._group_views = [(self._flat[a:b], self._exp_avg[a:b], self._denom[a:b]) for a, b in self._spans]
        self._steps = [0] * len(self._params)  # optimiser steps each parameter has taken
        self._data_ptrs = [p.data_ptr() for p in self._params]

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError(
            "FlatAdamW keeps its state in flat buffers and does not checkpoint; "
            "train with structsearch.optimizer() (torch's AdamW) to save optimiser state"
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.state_dict()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params:  # the gradients are gathered from param.grad at each step
            p.grad = None if set_to_none else (p.grad.zero_() if p.grad is not None else None)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("FlatAdamW.step takes no closure")
        if [p.data_ptr() for p in self._params] != self._data_ptrs:
            raise RuntimeError(
                "FlatAdamW: a parameter was moved, cast or replaced after the optimiser was built; "
                "build it after the model is on its device and in its dtype"
            )
        grads = [p.grad for p in self._params]
        if any(g is None for g in grads) or len(set(self._steps)) > 1:
            return self._step_per_parameter(grads)
        torch._foreach_copy_(self._grad_views, grads)
        if self.max_grad_norm is not None:
            self._grad.mul_(self._clip_coef())  # the views cover the buffer in order: one op
        step = self._steps[0] + 1
        self._steps = [step] * len(self._params)
        views = [(self._flat, self._grad, self._exp_avg, self._exp_avg_sq)]
        self._moments(views, step)
        self._denominator(self._exp_avg_sq, step, self._denom)
        for group, (param, exp_avg, denom) in zip(self.param_groups, self._group_views, strict=True):
            self._update(group, param, exp_avg, denom, step)
        return None

    # -- the arithmetic, op for op torch's _multi_tensor_adam and clip_grad_norm_ ---------------
    def _clip_coef(self) -> Tensor:
        """min(1, max_norm / (the norm of the gradients' norms, in clip order, + 1e-6))."""
        norms = torch._foreach_norm([p.grad for p in self._clip_order if p.grad is not None], 2.0)
        total = torch.linalg.vector_norm(torch.stack(norms), 2.0)
        return torch.clamp(float(self.max_grad_norm) / (total + 1e-6), max=1.0)  # type: ignore[arg-type]

    def _moments(self, views: list[tuple[Tensor, Tensor, Tensor, Tensor]], step: int) -> None:
        beta1, beta2 = self.defaults["betas"]
        for _, grad, exp_avg, exp_avg_sq in views:
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2)
            exp_avg_sq.addcmul_(grad, grad, value=1 - beta2)

    def _denominator(self, exp_avg_sq: Tensor, step: int, out: Tensor) -> Tensor:
        _, beta2 = self.defaults["betas"]
        denom = torch.sqrt(exp_avg_sq, out=out)
        denom.div_((1 - beta2**step) ** 0.5)
        denom.add_(self.defaults["eps"])
        return denom

    def _update(self, group: dict[str, Any], param: Tensor, exp_avg: Tensor, denom: Tensor, step: int) -> None:
        beta1, _ = group["betas"]
        lr = group["lr"]
        if group["weight_decay"] != 0:
            param.mul_(1 - lr * group["weight_decay"])
        param.addcdiv_(exp_avg, denom, value=(lr / (1 - beta1**step)) * -1)

    def _step_per_parameter(self, grads: list[Tensor | None]) -> None:
        """Parameters without a gradient are skipped; each other one steps on its own count."""
        coef = self._clip_coef() if self.max_grad_norm is not None and any(g is not None for g in grads) else None
        index = 0
        for group in self.param_groups:
            for _ in group["params"]:
                if grads[index] is not None:
                    a, b = self._ranges[index]
                    grad = self._grad[a:b]
                    grad.copy_(grads[index].reshape(-1))  # type: ignore[union-attr]
                    if coef is not None:
                        grad.mul_(coef)
                    self._steps[index] += 1
                    step = self._steps[index]
                    self._moments([(self._flat[a:b], grad, self._exp_avg[a:b], self._exp_avg_sq[a:b])], step)
                    denom = self._denominator(self._exp_avg_sq[a:b], step, self._denom[a:b])
                    self._update(group, self._flat[a:b], self._exp_avg[a:b], denom, step)
                index += 1
