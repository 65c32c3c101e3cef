"""structsearch.optimizer: the evaluator's optimiser recipe for a user's own training loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import structsearch
from structsearch.errors import SizeError
from structsearch.layers import EinsumLinear, linear_factory
from structsearch.tasks import Task, get_task
from structsearch.training import BETAS, EPS, GRAD_CLIP, WARMUP_FRACTION, lr_factor, optimizer


def expected_lr_mults(model: nn.Module, base_fan_in: int) -> dict[str, float]:
    """name -> lr multiplier from the layers' sizes (taxonomy.md 5), computed without param_groups."""
    out: dict[str, float] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, nn.Linear):
            out[f"{prefix}.weight"] = base_fan_in / module.in_features
        elif isinstance(module, EinsumLinear):
            d = module.dims
            out[f"{prefix}.A"] = base_fan_in / d["alpha"]
            out[f"{prefix}.B"] = base_fan_in / (d["beta"] * d["gamma"] * d["rho"])
    return out


def closed_form_factor(step: int, steps: int, warmup_fraction: float) -> float:
    warmup = max(1, round(warmup_fraction * steps))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))


def test_defaults_are_the_task_defaults() -> None:
    assert (Task.grad_clip, Task.warmup_fraction) == (GRAD_CLIP, WARMUP_FRACTION) and Task.weight_decay == 0.0
    assert [lr_factor(s, 40) for s in range(40)] == pytest.approx([closed_form_factor(s, 40, 0.05) for s in range(40)])
    assert [lr_factor(s, 5, 0.0) for s in range(5)] == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * s / 5)) for s in range(5)]
    )


def test_optimizer_reproduces_the_evaluator_step_for_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record the evaluator's optimiser during a real evaluate(); the helper matches its groups and schedule.

    The evaluator's optimiser is a FlatAdamW that clips inside its step; tests/test_flat_adamw.py
    shows it bit-identical to torch's AdamW after ``clip_grad_norm_``, the recipe documented here.
    """
    from structsearch._flat_adamw import FlatAdamW

    made: list[torch.optim.Optimizer] = []
    build = structsearch.evaluation._optimizer

    def record_lrs(opt: torch.optim.Optimizer) -> None:  # the learning rate of every group at every step
        opt.lrs = []
        opt.register_step_pre_hook(lambda o, args, kwargs: o.lrs.append([g["lr"] for g in o.param_groups]))

    def recording(*args, **kwargs):  # the evaluator's optimiser
        opt, schedule = build(*args, **kwargs)
        record_lrs(opt)
        made.append(opt)
        return opt, schedule

    monkeypatch.setattr(structsearch.evaluation, "_optimizer", recording)
    task = get_task("structsearch.tasks.example_plugin:make_task", dim=8)
    task.weight_decay, task.warmup_fraction = 0.1, 0.1  # not the defaults, so that both must flow through
    steps = 30
    result = structsearch.evaluate("btt", task, steps=steps, device="cpu", eval_points=2)
    assert result.status == "ok" and result.steps == steps and len(made) == 1
    evaluator = made.pop()
    assert isinstance(evaluator, FlatAdamW) and evaluator.max_grad_norm == GRAD_CLIP

    torch.manual_seed(0)
    model = task.build_model(linear_factory("btt"), result.width)
    opt, schedule = structsearch.optimizer(
        model, task.lr, steps, base_fan_in=task.base_width, weight_decay=0.1, warmup_fraction=0.1
    )
    assert isinstance(opt, torch.optim.AdamW)
    record_lrs(opt)

    def groups(o: torch.optim.Optimizer) -> list[tuple]:
        return [(g["names"], g["initial_lr"], g["weight_decay"], g["betas"], g["eps"]) for g in o.param_groups]

    assert groups(opt) == groups(evaluator)
    # independent check of the groups: muP multipliers from the layer sizes, decay on matrices only
    mults = expected_lr_mults(model, task.base_width)
    for name, lr, decay, betas, eps in groups(opt):
        assert (betas, eps) == (BETAS, EPS)
        for n in name:
            assert lr == pytest.approx(task.lr * mults.get(n, 1.0)) and decay == (0.1 if n in mults else 0.0)
    assert {n for g in opt.param_groups for n in g["names"]} == {n for n, _ in model.named_parameters()}

    for _ in range(steps):
        opt.step()
        schedule.step()
    assert len(opt.lrs) == len(evaluator.lrs) == steps
    for step, (mine, theirs) in enumerate(zip(opt.lrs, evaluator.lrs, strict=True)):
        assert mine == pytest.approx(theirs, rel=1e-12)
        factor = closed_form_factor(step, steps, 0.1)
        assert mine == pytest.approx([g["initial_lr"] * factor for g in opt.param_groups], rel=1e-12)


def test_optimizer_rejects_bad_arguments() -> None:
    model = nn.Linear(4, 4)
    with pytest.raises(SizeError, match="steps: expected a positive integer, got 0"):
        optimizer(model, 1e-3, 0, base_fan_in=4)
    with pytest.raises(SizeError, match=r"warmup_fraction: expected a number in \[0, 1\), got 1.5"):
        optimizer(model, 1e-3, 10, base_fan_in=4, warmup_fraction=1.5)
    with pytest.raises(SizeError, match="lr: expected a positive number"):
        optimizer(model, -1.0, 10, base_fan_in=4)
