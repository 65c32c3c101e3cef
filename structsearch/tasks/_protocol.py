"""The task protocol, the registry of built-in tasks and ``module:function`` plugins.

A task is what :func:`structsearch.evaluate` trains a structure on. It is a small object
with three required methods and a few settings with defaults; see :class:`Task`.
Tasks are registered by name (:func:`register_task`); :func:`get_task` resolves a name,
a ``package.module:function`` plugin path, or a task object, and raises :class:`TaskError`
listing the valid names otherwise.

Nothing in this module imports torch: task modules import it when they are built.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from structsearch.errors import TaskError

__all__ = [
    "REQUIRED_METHODS",
    "LinearFactory",
    "Task",
    "check_task",
    "get_task",
    "register_task",
    "settings_key",
    "task_names",
]

# (d_in, d_out, bias) -> nn.Module: the layer a task builds wherever a structured layer goes.
LinearFactory = Callable[[int, int, bool], Any]

REQUIRED_METHODS = ("build_model", "train_batches", "loss", "validation_batches")


class Task:
    """Base class of a training task. Subclass it, or return any object with the same surface.

    Required methods (the whole contract):

    - ``build_model(linear, width) -> nn.Module``: the model at hidden width ``width``, with
      ``linear(d_in, d_out, bias)`` called for every layer that should be structured and a
      plain ``nn.Linear`` (or embedding) everywhere else. Parameters are initialised by the
      caller's seed (``torch.manual_seed`` is set before the call).
    - ``train_batches(generator, device) -> Iterator[batch]``: an endless source of training
      batches; draw all randomness from ``generator`` (a seeded ``torch.Generator`` on CPU) so a
      seed reproduces the run.
    - ``loss(model, batch) -> Tensor``: the scalar training loss of ``model`` on ``batch``
      (run the forward pass here). Validation uses the same loss.
    - ``validation_batches(device) -> Iterable[batch]``: the fixed held-out set, identical on
      every call.

    Settings (class attributes; override as needed):

    - ``name``: the registry name; ``metric``: what :meth:`score` reports (e.g. ``"mse"``).
    - ``lr``: the Adam learning rate tuned at the dense ``base_width``; the evaluator transfers
      it to every width and structure with the layers' per-core multipliers
      (``lr * base_fan_in / fan_in``, ``base_fan_in = base_width``).
    - ``width_rule``: what ``width=None`` means in :func:`evaluate`: ``"fixed"`` trains every
      structure at ``default_width``; ``"matched"`` trains each at its iso-FLOP width, the
      largest multiple of ``width_multiple`` whose linear layers cost no more MACs per vector
      than the dense model at ``default_width`` (so every structure gets the same steps).
    - ``default_width``: the dense reference width (and the width of the ``"fixed"`` rule).
    - ``budget``: the default (proxy) training budget in FLOPs.
    - ``weight_decay``, ``warmup_fraction``, ``grad_clip``: optimiser settings.
    - ``replayable_stream``: set it when ``train_batches`` depends only on the task's settings
      (``describe()``) and the generator's seed, and ``loss`` does not modify a batch; the
      evaluator then makes each seed's stream once per process and replays it to every later
      training (worth it when making a batch is costly, as mlp-regression's teacher is).
    - ``batch_seeds``: whether ``seeds=[...]`` trains the seeds in one vectorised run
      (``torch.func.vmap``, the default) or one by one. Turn it off where the batched run costs
      more than the seeds' solo runs together (char-lm: 4 seeds batched cost 4.1-4.8x one seed
      at most widths, benchmarks/results/throughput.md).

    Hook with a default: ``score(mean_validation_loss) -> float`` turns the mean of ``loss``
    over the validation batches into the reported number (identity; ``char-lm`` divides by
    ln 2 to report bits per character).
    """

    name: str = "task"
    metric: str = "loss"
    lr: float = 3e-3
    base_width: int = 64
    default_width: int = 128
    budget: float = 1e10
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    grad_clip: float | None = 1.0
    width_rule: str = "fixed"
    width_multiple: int = 8
    replayable_stream: bool = False
    batch_seeds: bool = True

    def build_model(self, linear: LinearFactory, width: int) -> Any:
        raise NotImplementedError

    def train_batches(self, generator: Any, device: Any) -> Iterator[Any]:
        raise NotImplementedError

    def loss(self, model: Any, batch: Any) -> Any:
        raise NotImplementedError

    def validation_batches(self, device: Any) -> Iterable[Any]:
        raise NotImplementedError

    def score(self, mean_validation_loss: float) -> float:
        return mean_validation_loss

    def describe(self) -> dict[str, Any]:
        """The task's settings, JSON-safe (recorded with every result)."""
        out: dict[str, Any] = {}
        for key in ("name", "metric", "lr", "base_width", "default_width", "width_rule", "budget", "weight_decay"):
            out[key] = getattr(self, key, None)
        out.update(getattr(self, "options", {}) or {})
        return out


# -- registry -----------------------------------------------------------------------
_REGISTRY: dict[str, Callable[..., Task]] = {}
_BUILTINS = ("mlp-regression", "char-lm")  # listed first, in this order


def register_task(name: str, factory: Callable[..., Task]) -> None:
    """Register ``factory(**options) -> task`` under ``name`` (overwrites an existing entry)."""
    if not name or ":" in name:
        raise TaskError(f"task name: expected a non-empty name without ':', got {name!r}")
    _REGISTRY[name] = factory


def task_names() -> tuple[str, ...]:
    """The registered task names (built-ins first)."""
    _load_builtins()
    return tuple(sorted(_REGISTRY, key=lambda n: (n not in _BUILTINS, _BUILTINS.index(n) if n in _BUILTINS else 0, n)))


def _load_builtins() -> None:
    # The built-in task modules register themselves on import; they import torch lazily.
    importlib.import_module("structsearch.tasks.mlp_regression")
    importlib.import_module("structsearch.tasks.char_lm")


def settings_key(task: Any) -> tuple[str, str] | None:
    """(class path, settings as sorted JSON): what tells two task objects apart, for per-process caches.

    The settings are ``describe()`` where the task has it, else its ``options`` (``"null"`` when it
    has neither); ``None`` when they do not serialise, so that no cache can confuse two tasks.
    """
    import json

    describe = getattr(task, "describe", None)
    settings = describe() if callable(describe) else getattr(task, "options", None)
    try:
        text = json.dumps(settings, sort_keys=True)
    except (TypeError, ValueError):
        return None
    return f"{type(task).__module__}.{type(task).__qualname__}", text


def check_task(task: Any, where: str = "task") -> Any:
    """Check that ``task`` has the protocol's methods and sane settings; return it.

    >>> check_task(object())
    Traceback (most recent call last):
    ...
    structsearch.errors.TaskError: task: object is missing build_model, train_batches, loss, validation_batches
    """
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(task, m, None))]
    if missing:
        raise TaskError(f"{where}: {type(task).__name__} is missing {', '.join(missing)}")
    for key, cast in (("lr", float), ("budget", float), ("default_width", int), ("base_width", int)):
        if not hasattr(task, key):
            raise TaskError(f"{where}.{key}: missing (subclass structsearch.tasks.Task for defaults)")
        value = getattr(task, key)
        try:
            number = cast(value)
        except (TypeError, ValueError):
            raise TaskError(f"{where}.{key}: expected a positive number, got {value!r}") from None
        if not (math.isfinite(number) and number > 0):
            raise TaskError(f"{where}.{key}: expected a positive number, got {value!r}")
    return task


def _load_plugin(path: str, options: Mapping[str, Any]) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise TaskError(f"task {path!r}: a plugin is written package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise TaskError(f"task {path!r}: cannot import module {module_name!r} ({err})") from err
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise TaskError(f"task {path!r}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise TaskError(f"task {path!r}: {attr!r} is not callable")
    try:
        task = target(**options)
    except TypeError as err:
        raise TaskError(f"task {path!r}: calling {attr}(**{dict(options)!r}) failed: {err}") from err
    return check_task(task, where=f"task {path!r}")


def get_task(task: str | Any, **options: Any) -> Any:
    """Resolve a task name, a ``package.module:function`` path or a task object.

    ``options`` are passed to the task's factory (e.g. ``teacher_width=128``).

    >>> get_task("mlp-regression").name
    'mlp-regression'
    >>> get_task("no-such-task")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    structsearch.errors.TaskError: unknown task 'no-such-task'; expected one of mlp-regression, char-lm, ...
    """
    if not isinstance(task, str):
        if options:
            raise TaskError("task options: only apply to a task given by name or plugin path")
        return check_task(task)
    name = task.strip()
    if ":" in name:
        return _load_plugin(name, options)
    _load_builtins()
    factory = _REGISTRY.get(name)
    if factory is None:
        raise TaskError(
            f"unknown task {name!r}; expected one of {', '.join(task_names())}, or a plugin package.module:function"
        )
    try:
        return check_task(factory(**options), where=f"task {name!r}")
    except TypeError as err:
        raise TaskError(f"task {name!r}: bad options {dict(options)!r}: {err}") from err
