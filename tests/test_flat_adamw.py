"""FlatAdamW: bit-identical to torch's foreach AdamW after clip_grad_norm_, and the evaluator's default."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import structsearch.evaluation as evaluation
from structsearch._flat_adamw import FlatAdamW, flat_adamw_applies
from structsearch.layers import linear_factory, param_groups
from structsearch.tasks import get_task
from structsearch.training import BETAS, EPS


def _model(spec: str, width: int = 32) -> nn.Module:
    task = get_task("mlp-regression", teacher_width=32, val_size=64)
    torch.manual_seed(0)
    return task.build_model(linear_factory(spec), width)


def _pair(spec: str, weight_decay: float, max_norm: float) -> tuple[list, list]:
    """The same model twice: one for torch's AdamW + clip_grad_norm_, one for FlatAdamW."""
    out = []
    for flat in (False, True):
        model = _model(spec)
        groups = param_groups(model, 8e-3, base_fan_in=16, weight_decay=weight_decay)
        if flat:
            opt = FlatAdamW(groups, 8e-3, BETAS, EPS, max_grad_norm=max_norm, clip_order=list(model.parameters()))
        else:
            opt = torch.optim.AdamW(groups, lr=8e-3, betas=BETAS, eps=EPS, foreach=True)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
        out.append((model, opt, schedule))
    return out[0], out[1]


@pytest.mark.parametrize("spec", ["btt", "dense", "kronecker", "low-rank:0.5"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_bit_identical_to_torch_adamw_after_clip_grad_norm(spec: str, weight_decay: float) -> None:
    (ref, ref_opt, ref_sched), (mine, opt, sched) = _pair(spec, weight_decay, max_norm=0.05)
    g = torch.Generator().manual_seed(1)
    clipped = 0
    for _ in range(40):
        x = torch.randn(64, 32, generator=g)
        y = 5 * torch.sin(x[:, :8] * 3)  # any target: both models see the same batches
        for model, o in ((ref, ref_opt), (mine, opt)):
            o.zero_grad(set_to_none=True)
            (model(x) - y).pow(2).mean().backward()
        clipped += float(torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.05)) > 0.05
        ref_opt.step()
        ref_sched.step()
        opt.step()
        sched.step()
        for a, b in zip(ref.parameters(), mine.parameters(), strict=True):
            assert torch.equal(a, b)
    assert clipped >= 5  # the clipping branch was exercised, not just the unclipped one
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in ref_opt.param_groups]


def test_parameters_are_aligned_views_of_one_buffer() -> None:
    model = _model("btt")
    opt = FlatAdamW(param_groups(model, 1e-3, base_fan_in=16), 1e-3, BETAS, EPS)
    base = opt._flat.data_ptr()
    for p in model.parameters():
        assert p.untyped_storage().data_ptr() == opt._flat.untyped_storage().data_ptr()
        assert (p.data_ptr() - base) % 64 == 0  # as aligned as a tensor of its own (the BLAS may care)
    with pytest.raises(NotImplementedError, match="does not checkpoint"):
        opt.state_dict()


def test_a_parameter_without_gradient_is_skipped_as_torch_skips_it() -> None:
    """Steps where one branch is unused run per parameter; that branch keeps its own step count."""

    def branches() -> nn.ModuleList:
        torch.manual_seed(3)
        return nn.ModuleList([nn.Linear(8, 4), nn.Linear(8, 4)])

    ref, mine = branches(), branches()
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, betas=BETAS, eps=EPS, weight_decay=0.1, foreach=True)
    opt = FlatAdamW([{"params": list(mine.parameters())}], 1e-2, BETAS, EPS, weight_decay=0.1, max_grad_norm=0.3)
    g = torch.Generator().manual_seed(0)
    for step in range(12):
        x = torch.randn(16, 8, generator=g)
        used = [0] if step % 3 else [0, 1]  # branch 1 gets a gradient on every third step only
        for net, o in ((ref, ref_opt), (mine, opt)):
            o.zero_grad(set_to_none=True)
            sum(net[i](x).pow(2).mean() for i in used).backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.3)
        ref_opt.step()
        opt.step()
        for a, b in zip(ref.parameters(), mine.parameters(), strict=True):
            assert torch.equal(a, b)
    assert opt._steps == [12, 12, 4, 4]


def test_evaluator_runs_flat_and_scores_exactly_as_torch_adamw(monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluator's flat AdamW clips once, inside its step, exactly as the loop's clip_grad_norm_ did."""

    def run(grad_clip: float | None) -> evaluation.EvalResult:
        task = get_task("mlp-regression", teacher_width=32)
        task.grad_clip = grad_clip  # small enough that clipping acts at most steps
        return evaluation.evaluate("btt", task, steps=40, width=32, device="cpu", eval_points=2)

    flat = run(0.05)
    monkeypatch.setattr(evaluation, "OPTIMIZER_OPTIONS", {"foreach": True, "flat": False})
    plain = run(0.05)
    assert flat.status == plain.status == "ok"
    assert [p.val_loss for p in flat.curve] == [p.val_loss for p in plain.curve]
    assert flat.final_loss == plain.final_loss
    assert run(None).final_loss != plain.final_loss  # the clipping acted, so both paths clipped alike


def test_applies_only_to_one_dtype_on_one_device() -> None:
    assert flat_adamw_applies([{"params": [torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)]}])
    mixed = [torch.zeros(3, requires_grad=True), torch.zeros(2, dtype=torch.float64, requires_grad=True)]
    assert not flat_adamw_applies([{"params": mixed}])
    assert not flat_adamw_applies([{"params": []}])
    # in bfloat16 torch's _foreach_mul_ rounds unlike Tensor.mul_: not foreach's bits, so not flat
    assert not flat_adamw_applies([{"params": [torch.zeros(3, dtype=torch.bfloat16, requires_grad=True)]}])
    groups = [{"params": mixed}]
    with pytest.raises(ValueError, match="one dtype on one device"):
        FlatAdamW(groups, 1e-3, BETAS, EPS)
    opt, _ = evaluation._optimizer(get_task("mlp-regression"), [{"params": mixed}], 1e-3, 10)
    assert type(opt) is torch.optim.AdamW  # the fallback, which leaves clipping to the loop


def test_refuses_what_it_cannot_do_bit_for_bit() -> None:
    """Per-group betas, a clip order missing a parameter, a model moved after it was built: errors, not drift."""
    a, b = nn.Parameter(torch.randn(4)), nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match="every group must use the optimiser's betas and eps"):
        FlatAdamW([{"params": [a]}, {"params": [b], "betas": (0.8, 0.9)}], 1e-3, BETAS, EPS)
    with pytest.raises(ValueError, match="clip_order must hold every parameter"):
        FlatAdamW([{"params": [a, b]}], 1e-3, BETAS, EPS, max_grad_norm=1.0, clip_order=[a])
    model = _model("btt")
    opt = FlatAdamW(param_groups(model, 1e-3, base_fan_in=16), 1e-3, BETAS, EPS)
    model.double()  # a new storage for every parameter: the flat buffer no longer holds them
    model(torch.randn(2, 32, dtype=torch.float64)).sum().backward()
    with pytest.raises(RuntimeError, match="moved, cast or replaced after the optimiser was built"):
        opt.step()
