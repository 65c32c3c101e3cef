"""``mlp-regression``: the paper's synthetic teacher task (taxonomy.md section 7).

Inputs x ~ N(0, I_{input_dim}); targets are the outputs of a fixed random ReLU teacher MLP
(``teacher_depth`` hidden layers of ``teacher_width``, He-initialised from ``teacher_seed``),
normalised to zero mean and unit variance per output on a fixed 16384-sample estimate. The
student has ``depth`` hidden layers of the trial's width: the first (input -> width) and the
readout (width -> output) are dense ``nn.Linear``; the ``depth - 1`` width -> width layers in
between are the structured ones. Loss: MSE on fresh samples every step; validation: MSE on a
fixed held-out set of ``val_size`` samples. A zero predictor scores 1.0.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from typing import Any

from structsearch.tasks._protocol import LinearFactory, Task, register_task

__all__ = ["MLPRegression", "mlp_regression"]


class MLPRegression(Task):
    """Regress a random ReLU teacher with a structured student MLP (see module docstring)."""

    name = "mlp-regression"
    metric = "mse"
    # lr: tuned by benchmarks/tune_lr.py (dense, base_width, default budget); see
    # benchmarks/results/tune_lr.md. budget: the proxy budget (benchmarks/proxy_fidelity.py).
    lr = 8e-3
    base_width = 64
    default_width = 128
    budget = 3e10
    weight_decay = 0.0
    warmup_fraction = 0.05
    grad_clip = 1.0
    data_block = 32  # training batches made per teacher forward (benchmarks/results/throughput.md)
    replayable_stream = True  # the stream depends only on the options and the seed: made once per process

    def __init__(
        self,
        input_dim: int = 32,
        output_dim: int = 8,
        teacher_width: int = 128,
        teacher_depth: int = 4,
        teacher_seed: int = 0,
        depth: int = 3,
        batch_size: int = 256,
        val_size: int = 4096,
    ) -> None:
        for key, value in (
            ("input_dim", input_dim),
            ("output_dim", output_dim),
            ("teacher_width", teacher_width),
            ("teacher_depth", teacher_depth),
            ("depth", depth),
            ("batch_size", batch_size),
            ("val_size", val_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                from structsearch.errors import TaskError

                raise TaskError(f"mlp-regression.{key}: expected a positive integer, got {value!r}")
        self.options = {
            "input_dim": input_dim,
            "output_dim": output_dim,
            "teacher_width": teacher_width,
            "teacher_depth": teacher_depth,
            "teacher_seed": teacher_seed,
            "depth": depth,
            "batch_size": batch_size,
            "val_size": val_size,
        }
        self.input_dim, self.output_dim, self.depth = input_dim, output_dim, depth
        self.batch_size, self.val_size = batch_size, val_size
        self._on_device: dict[str, Any] = {}

    # -- the teacher ------------------------------------------------------------------
    def _teacher_key(self) -> tuple[int, ...]:
        o = self.options
        return o["input_dim"], o["output_dim"], o["teacher_width"], o["teacher_depth"], o["teacher_seed"]

    def _teacher_on(self, device: Any) -> tuple[list[Any], Any, Any]:
        key = str(device)
        if key not in self._on_device:
            weights, mean, std = _teacher(*self._teacher_key())
            self._on_device[key] = ([w.to(device) for w in weights], mean.to(device), std.to(device))
        return self._on_device[key]

    def targets(self, x: Any) -> Any:
        """Normalised teacher outputs for inputs ``x`` (batch, input_dim)."""
        weights, mean, std = self._teacher_on(x.device)
        return (_teacher_forward(weights, x) - mean) / std

    # -- the protocol -----------------------------------------------------------------
    def build_model(self, linear: LinearFactory, width: int) -> Any:
        return _Student(self.input_dim, self.output_dim, width, self.depth, linear)

    def train_batches(self, generator: Any, device: Any) -> Iterator[Any]:
        import torch

        # Made in blocks of data_block batches: one teacher forward per block instead of per step.
        # The random stream is the per-batch one (the generator fills the block in the same order).
        block = max(1, int(self.data_block))
        while True:
            x = torch.randn(block * self.batch_size, self.input_dim, generator=generator).to(device)
            with torch.no_grad():
                y = self.targets(x)  # (block * batch, output_dim)
            yield from zip(x.split(self.batch_size), y.split(self.batch_size), strict=True)

    def loss(self, model: Any, batch: Any) -> Any:
        x, y = batch
        return (model(x).float() - y).pow(2).mean()

    def validation_batches(self, device: Any) -> list[Any]:
        key = (*self._teacher_key(), self.val_size, str(device))
        if key not in _VALIDATION:  # made once per process for these settings: every training scores on it
            _VALIDATION[key] = self._make_validation(device)
            while len(_VALIDATION) > _KEEP:
                del _VALIDATION[next(iter(_VALIDATION))]
        return list(_VALIDATION[key])

    def _make_validation(self, device: Any) -> list[Any]:
        import torch

        g = torch.Generator().manual_seed(self.options["teacher_seed"] + 1_000_003)
        x = torch.randn(self.val_size, self.input_dim, generator=g).to(device)
        with torch.no_grad():
            y = self.targets(x)
        return [(x[i : i + 1024], y[i : i + 1024]) for i in range(0, self.val_size, 1024)]


# A search builds a task object per training; the teacher and the validation set depend only on
# the options, so each is made once per process (bit-identical: the same seeded computation).
_KEEP = 8
_VALIDATION: dict[tuple[Any, ...], list[Any]] = {}


@functools.lru_cache(maxsize=_KEEP)
def _teacher(input_dim: int, output_dim: int, width: int, depth: int, seed: int) -> tuple[list[Any], Any, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    dims = [input_dim] + [width] * depth + [output_dim]
    # weights[i]: (fan_out, fan_in), He init so activations keep their scale through ReLUs
    weights = [torch.randn(b, a, generator=g) * (2.0 / a) ** 0.5 for a, b in itertools.pairwise(dims)]
    x = torch.randn(16384, input_dim, generator=g)
    raw = _teacher_forward(weights, x)
    mean, std = raw.mean(0), raw.std(0).clamp_min(1e-8)
    return weights, mean, std


def _teacher_forward(weights: list[Any], x: Any) -> Any:
    for w in weights[:-1]:
        x = (x @ w.T).relu()
    return x @ weights[-1].T


@functools.cache
def _student_class() -> type:
    import torch
    from torch import nn

    class Student(nn.Module):
        """input -> dense -> ReLU -> [structured -> ReLU] x (depth-1) -> dense readout."""

        def __init__(self, d_in: int, d_out: int, width: int, depth: int, linear: LinearFactory) -> None:
            super().__init__()
            self.inp = nn.Linear(d_in, width)
            self.hidden = nn.ModuleList(linear(width, width, True) for _ in range(depth - 1))
            self.out = nn.Linear(width, d_out)
            nn.init.zeros_(self.out.weight)  # muP-style zero readout: the initial loss is exactly E[y^2]
            nn.init.zeros_(self.out.bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x).relu()  # (batch, width)
            for layer in self.hidden:
                h = layer(h).relu()  # (batch, width)
            return self.out(h)  # (batch, d_out)

    return Student


def _Student(*args: Any) -> Any:
    return _student_class()(*args)


def mlp_regression(**options: Any) -> MLPRegression:
    """Factory registered as ``mlp-regression``; ``options`` go to :class:`MLPRegression`."""
    return MLPRegression(**options)


register_task("mlp-regression", mlp_regression)
