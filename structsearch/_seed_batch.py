"""Seed-batched training: S seeds of one structure in one vectorised run.

Each seed's model is built exactly as :func:`structsearch.evaluate` builds it (same init, same
training stream from its own generator, same FLOP count); the S parameter sets are stacked
(``torch.func.stack_module_state``) and one step runs the task's loss for all of them with
``torch.func.vmap`` over ``torch.func.functional_call``: every matmul of the step becomes one
batched matmul over the seeds, so the per-op Python, dispatch and autograd overhead that
dominates small models is paid once for S trainings. AdamW acts elementwise, so one optimiser
over the stacked tensors is S independent ones; gradient clipping is done per seed. Each seed
is judged by the same loop as a solo run (``_train_loop.run_loop``), so its losses, curve and
divergence equal its solo run's to float tolerance (tests/test_seed_batch.py).

Under vmap the layers run a plain-autograd contraction (general, broadcast or materialised
path): the btt and kronecker fast paths are custom autograd Functions without a batching rule.
A task whose loss cannot be vmapped (it reads values to the host, draws random numbers, ...) is
trained seed by seed.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from structsearch._stream_cache import training_stream
from structsearch.evaluation import EvalResult, _build, _layers_api, _optimizer, _result, _Setup
from structsearch.layers._fast_paths import has_unit_contraction
from structsearch.spec import Spec

__all__ = ["train_seeds"]


class _Bound:
    """Stands in for the model inside vmap: calling it runs the stateless model on one seed's parameters."""

    def __init__(self, base: Any, params: dict[str, Any], buffers: dict[str, Any]) -> None:
        self._base, self._state = base, (params, buffers)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from torch.func import functional_call

        return functional_call(self._base, self._state, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def _clip_per_seed(params: list[Any], max_norm: float) -> None:
    """``clip_grad_norm_`` applied to each seed's slice of the stacked parameters (dim 0)."""
    import torch

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1) for g in grads])  # (P, S)
    total = torch.linalg.vector_norm(norms, dim=0)  # (S,)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)  # (S,)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))


class _SeedStepper:
    """S stacked models, one AdamW over the stacked tensors, S training streams."""

    def __init__(
        self, task: Any, models: list[Any], base: Any, seeds: Sequence[int], setup: _Setup, lr: float, dev: Any
    ):
        from torch.func import stack_module_state, vmap

        _, param_groups = _layers_api()
        self.task, self.setup, self.device, self.n = task, setup, dev, len(models)
        self.params, self.buffers = stack_module_state(models)  # name -> (S, ...) leaves
        self.base = base.train()  # a copy of models[0] on the meta device: vmap runs it on each seed's tensors
        groups = param_groups(models[0], lr, base_fan_in=int(task.base_width), weight_decay=float(task.weight_decay))
        stacked = [{**g, "params": [self.params[name] for name in g["names"]]} for g in groups]
        self.optimizer, self.schedule = _optimizer(task, stacked, lr, setup.planned)
        self.param_list = [p for g in stacked for p in g["params"]]
        self.grad_clip = getattr(task, "grad_clip", None)
        self.streams = [training_stream(task, s, dev) for s in seeds]

        def one(params: dict[str, Any], buffers: dict[str, Any], batch: Any) -> Any:
            return task.loss(_Bound(self.base, params, buffers), batch)

        self.train_loss = vmap(one, in_dims=(0, 0, 0))  # each seed its own batch
        self.val_loss = vmap(one, in_dims=(0, 0, None))  # every seed the same batch

    def batch(self) -> Any:
        return _stack_next(self.streams)

    def step(self, batch: Any) -> Any:
        with self.setup.autocast():
            losses = self.train_loss(self.params, self.buffers, batch)  # (S,)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # seeds are independent: each gets its own gradient
        if self.grad_clip:
            _clip_per_seed(self.param_list, float(self.grad_clip))
        self.optimizer.step()
        self.schedule.step()
        return losses.detach()

    def validate(self) -> list[float | None]:
        import math

        import torch

        from structsearch.errors import TaskError

        self.base.eval()
        with torch.no_grad(), self.setup.autocast():
            rows = [
                self.val_loss(self.params, self.buffers, b).float() for b in self.task.validation_batches(self.device)
            ]
        self.base.train()
        if not rows:
            raise TaskError(f"task {self.task.name!r}: validation_batches() yielded no batches")
        scores = []
        for column in zip(*torch.stack(rows).tolist(), strict=True):  # (batches, S) -> per seed
            score = float(self.task.score(float(sum(column) / len(column))))
            scores.append(score if math.isfinite(score) else None)
        return scores

    def sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)


def _vmappable(stepper: _SeedStepper, batch: Any) -> bool:
    """Whether the task's loss runs under vmap (checked once on a real batch, no gradients kept)."""
    import torch

    try:  # ops without a batching rule warn of a slow fallback; a task that works anyway is fine
        with torch.no_grad(), stepper.setup.autocast(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="There is a performance drop", category=UserWarning)
            stepper.train_loss(stepper.params, stepper.buffers, batch)
    except (RuntimeError, NotImplementedError):
        return False
    return True


def train_seeds(
    spec: Spec,
    task_obj: Any,
    budget: float,
    seeds: Sequence[int],
    dev: Any,
    width: int,
    lr: float,
    steps: int | None,
    eval_points: int,
    explode_factor: float,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[EvalResult], float] | None:
    """Train every seed in one vectorised run: (results in seed order, wall seconds), or None if the
    task's loss cannot be vmapped (the caller then trains the seeds one by one)."""

    from structsearch._train_loop import run_loop

    built = [_build(spec, task_obj, width, seed, dev) for seed in seeds]
    # the stateless model vmap calls, copied while it is fresh: counting the step's FLOPs below
    # runs it, and a routed layer then holds non-leaf tensors, which deepcopy refuses
    base = copy.deepcopy(built[0][0]).to("meta")
    setup = _Setup(task_obj, built[0][0], built[0][1], seeds[0], dev, budget, steps)
    # after counting: the fast paths are autograd Functions vmap cannot batch (base runs; the rest record)
    for layer in [*(layer for _, made in built for layer in made), *base.modules()]:
        if getattr(layer, "structural_path", None) not in ("btt", "kronecker"):
            continue
        plain = "broadcast" if has_unit_contraction(layer.dims) else "general"
        layer.structural_path = plain  # what a materialised layer's calls below materialise_from run
        if layer.path != "materialised":
            layer.path = plain
    models = [model.train() for model, _ in built]
    stepper = _SeedStepper(task_obj, models, base, seeds, setup, lr, dev)
    probe_streams = [training_stream(task_obj, s + 7919, dev) for s in seeds]
    if not _vmappable(stepper, _stack_next(probe_streams)):
        return None
    traces, times = run_loop(
        stepper, setup.planned, setup.account.flops_per_step, eval_points, explode_factor, progress
    )
    results = [
        _result(spec, task_obj, setup, trace, times, budget, steps, seed, dev, width, lr, share=len(seeds))
        for seed, trace in zip(seeds, traces, strict=True)
    ]
    return results, times.train


def _stack_next(streams: list[Any]) -> Any:
    """The next batch of every stream, stacked along a new leading seed axis."""
    import torch
    from torch.utils._pytree import tree_map

    return tree_map(lambda *xs: torch.stack(xs), *[next(s) for s in streams])
