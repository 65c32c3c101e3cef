"""The step loop that :func:`structsearch.evaluate` and the seed-batched trainer share.

A *stepper* owns the model(s), the optimiser and the data; :func:`run_loop` drives it: one
step per call, the losses read back to the host only every ``READ_EVERY`` steps and at the
validation marks (no host synchronisation per step), divergence judged per seed on the values
read, validation at ``eval_points`` marks, and the time split into training, data and
evaluation. One seed or S seeds run through the same code, so they diverge, fail and record
their curves by the same rules (docs/evaluation.md 3 and 7).

Deferred reads change no result: a seed whose loss is non-finite or explodes at step k is
recorded exactly as if it had stopped there (k - 1 steps done, the curve up to the last mark
before k); the steps it ran past k before the read are discarded.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from structsearch.evaluation import CurvePoint

__all__ = ["READ_EVERY", "SoloStepper", "Stepper", "Times", "Trace", "run_loop"]

READ_EVERY = 16  # steps between host reads of the losses (benchmarks/results/throughput.md)


class Stepper(Protocol):
    """What :func:`run_loop` drives: ``n`` seeds trained in lock step.

    ``batch()`` makes the next training batch (timed as data); ``step(batch)`` runs forward,
    backward and the optimiser for every seed and returns the detached losses (shape ``()`` or
    ``(n,)``) without reading them; ``validate()`` returns each seed's validation score (None
    if not finite); ``sync()`` waits for the device (CUDA) at each read, so the time is measured
    without a synchronisation per step.
    """

    n: int

    def batch(self) -> Any: ...

    def step(self, batch: Any) -> Any: ...

    def validate(self) -> list[float | None]: ...

    def sync(self) -> None: ...


@dataclass
class Trace:
    """One seed's record of a run."""

    curve: list[CurvePoint] = field(default_factory=list)
    status: str = "ok"
    reason: str | None = None
    divergence_step: int | None = None
    done: int = 0
    first: float | None = None
    window: list[float] = field(default_factory=list)


@dataclass
class Times:
    """Seconds spent: ``train`` is every step (data included), ``data`` its batch-making part, ``eval`` validation."""

    train: float = 0.0
    data: float = 0.0
    eval: float = 0.0


def _read(pending: list[Any], first_step: int, traces: list[Trace], explode_factor: float) -> None:
    """Read the pending losses (one host sync) and judge each live seed step by step."""
    import torch

    if not pending:
        return
    rows = torch.stack(pending).reshape(len(pending), -1).float().tolist()  # (steps, seeds)
    for k, row in enumerate(rows, start=first_step):
        for trace, value in zip(traces, row, strict=True):
            if trace.status != "ok":
                continue
            if not math.isfinite(value):
                trace.status, trace.divergence_step = "diverged", k
                trace.reason = f"non-finite training loss ({value}) at step {k}"
                continue
            trace.first = value if trace.first is None else trace.first
            if value > explode_factor * max(trace.first, 1e-3):
                trace.status, trace.divergence_step = "diverged", k
                trace.reason = f"training loss exploded at step {k}: {value:.4g} > {explode_factor:g} x first loss"
                continue
            trace.done = k
            trace.window.append(value)


def run_loop(
    stepper: Stepper,
    planned: int,
    flops_per_step: float,
    eval_points: int,
    explode_factor: float,
    progress: Callable[[int, int], None] | None = None,
    read_every: int | None = None,
) -> tuple[list[Trace], Times]:
    """Train ``planned`` steps (fewer if every seed has diverged) and return each seed's trace.

    ``read_every``: steps between host reads of the losses (default :data:`READ_EVERY`).
    """
    read_every = read_every or READ_EVERY
    marks = {max(1, round(planned * k / eval_points)) for k in range(1, eval_points + 1)}
    traces = [Trace() for _ in range(stepper.n)]
    times = Times()
    pending: list[Any] = []
    first_step = 1

    def validate(step: int) -> None:
        t0 = time.perf_counter()
        scores = stepper.validate()
        times.eval += time.perf_counter() - t0
        for trace, val in zip(traces, scores, strict=True):
            if trace.status != "ok":
                continue
            mean = sum(trace.window) / len(trace.window) if trace.window else None
            point = CurvePoint(
                step=step,
                train_flops=step * flops_per_step,
                wall_seconds=times.train,
                val_loss=val,
                train_loss=mean if step else None,
            )
            trace.curve.append(point)
            trace.window = []
            if val is None and step:
                trace.status, trace.divergence_step = "diverged", step
                trace.reason = f"non-finite validation loss at step {step}"

    try:
        validate(0)
        segment = time.perf_counter()  # training time is taken per segment between reads (one device sync each)
        for step in range(1, planned + 1):
            t0 = time.perf_counter()
            batch = stepper.batch()
            times.data += time.perf_counter() - t0
            pending.append(stepper.step(batch))
            if progress is not None:
                progress(step, planned)
            if step in marks or step % read_every == 0 or step == planned:
                stepper.sync()
                times.train += time.perf_counter() - segment
                _read(pending, first_step, traces, explode_factor)
                pending, first_step = [], step + 1
                if step in marks and any(t.status == "ok" for t in traces):
                    validate(step)
                if not any(t.status == "ok" for t in traces):
                    break
                segment = time.perf_counter()
    except (RuntimeError, MemoryError, FloatingPointError) as err:  # OOM, numerical or backend errors
        with contextlib.suppress(RuntimeError, MemoryError):
            _read(pending, first_step, traces, explode_factor)
        for trace in traces:
            if trace.status == "ok":
                trace.status = "failed"
                trace.reason = f"{type(err).__name__} at step {trace.done + 1}: {str(err).splitlines()[0][:300]}"
    return traces, times


class SoloStepper:
    """One model, its optimiser and its task's training stream (what :func:`evaluate` trains)."""

    n = 1

    def __init__(
        self,
        task: Any,
        model: Any,
        optimizer: Any,
        schedule: Any,
        batches: Iterator[Any],
        autocast: Callable[[], Any],
        device: Any,
    ) -> None:
        self.task, self.model, self.optimizer, self.schedule = task, model, optimizer, schedule
        self.batches, self.autocast, self.device = batches, autocast, device
        # A FlatAdamW built with the task's grad_clip clips inside its step.
        clips_itself = getattr(optimizer, "max_grad_norm", None) is not None
        self.grad_clip = None if clips_itself else getattr(task, "grad_clip", None)

    def batch(self) -> Any:
        return next(self.batches)

    def step(self, batch: Any) -> Any:
        import torch

        from structsearch.layers import aux_loss  # routers' balancing + z-losses (BTT-MoE); 0 without routing

        with self.autocast():
            loss = self.task.loss(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        (loss + aux_loss(self.model)).backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.grad_clip))
        self.optimizer.step()
        self.schedule.step()
        return loss.detach()

    def validate(self) -> list[float | None]:
        import torch

        from structsearch.errors import TaskError

        self.model.eval()
        losses = []
        with torch.no_grad(), self.autocast():
            for batch in self.task.validation_batches(self.device):
                losses.append(self.task.loss(self.model, batch).detach().float())
        self.model.train()
        if not losses:
            raise TaskError(f"task {self.task.name!r}: validation_batches() yielded no batches")
        mean = float(sum(float(v) for v in torch.stack(losses).tolist()) / len(losses))
        score = float(self.task.score(mean))
        return [score if math.isfinite(score) else None]

    def sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
