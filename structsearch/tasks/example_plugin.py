"""A worked example of a user task, loadable as ``structsearch.tasks.example_plugin:make_task``.

The task: learn a fixed random linear map y = W x + noise with a two-layer model whose
hidden layer is structured. It is the smallest complete :class:`~structsearch.tasks.Task`;
docs/tasks.md walks through it. Try it::

    structsearch evaluate btt --task structsearch.tasks.example_plugin:make_task --budget 1e8

Any ``package.module:function`` on ``sys.path`` works the same way: the function is called
with the task options and returns the task object.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from typing import Any

from structsearch.tasks import LinearFactory, Task

__all__ = ["LinearMapTask", "make_task"]


class LinearMapTask(Task):
    """Regress y = W x + 0.01 noise (W fixed by ``seed``) with dense -> structured -> dense."""

    name = "linear-map"
    metric = "mse"
    lr = 3e-3  # Adam lr at the dense base width; transferred per core by the evaluator
    base_width = 32
    default_width = 64
    budget = 1e8  # default training FLOPs

    def __init__(self, dim: int = 16, batch_size: int = 64, seed: int = 0) -> None:
        import torch

        from structsearch.errors import TaskError

        for key, value in (("dim", dim), ("batch_size", batch_size)):  # checked here, not deep inside torch
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise TaskError(f"linear-map.{key}: expected a positive integer, got {value!r}")
        self.dim, self.batch_size = dim, batch_size
        self.options = {"dim": dim, "batch_size": batch_size, "seed": seed}
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(dim, dim, generator=g) / dim**0.5  # (dim, dim), fixed teacher
        x = torch.randn(512, dim, generator=g)
        self.val = [(x, x @ self.weight.T)]  # the fixed held-out set

    def build_model(self, linear: LinearFactory, width: int) -> Any:
        from torch import nn

        # `linear` builds the structured layer; the first and last layers stay dense.
        return nn.Sequential(
            nn.Linear(self.dim, width), nn.ReLU(), linear(width, width, True), nn.ReLU(), nn.Linear(width, self.dim)
        )

    def train_batches(self, generator: Any, device: Any) -> Iterator[Any]:
        import torch

        while True:  # fresh samples every step, all randomness from `generator`
            x = torch.randn(self.batch_size, self.dim, generator=generator)
            y = x @ self.weight.T + 0.01 * torch.randn(self.batch_size, self.dim, generator=generator)
            yield x.to(device), y.to(device)

    def loss(self, model: Any, batch: Any) -> Any:
        x, y = batch
        return (model(x).float() - y).pow(2).mean()

    def validation_batches(self, device: Any) -> list[Any]:
        return [(x.to(device), y.to(device)) for x, y in self.val]


def make_task(**options: Any) -> LinearMapTask:
    """The plugin entry point: ``--task structsearch.tasks.example_plugin:make_task``."""
    return LinearMapTask(**options)
