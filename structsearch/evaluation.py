"""How a candidate is scored: train a structure on a task under a FLOP budget.

:func:`evaluate` builds the task's model with the structure's layers at one width (given, or
by the task's rule: ``"matched"`` is the iso-FLOP width of :func:`matched_width`), counts
the training FLOPs of one step (docs/evaluation.md), turns the budget into a number of
steps, trains with AdamW and a warmup + cosine schedule, and returns an :class:`EvalResult`.

Compute accounting, per training step::

    linear FLOPs = 6 * sum over linear layers (MACs per vector * vectors per step)
                   (forward 2x, backward 4x: input and weight gradients)
    other FLOPs  = what torch.utils.flop_counter.FlopCounterMode measures for one whole
                   training step (forward + backward) outside the linear layers
                   (attention score and value matmuls; elementwise ops count 0)
    steps        = floor(budget / (linear FLOPs + other FLOPs)); less than one step is an error

A NaN/inf loss or one that explodes past ``explode_factor`` times the first loss ends the
trial as diverged; a RuntimeError (out of memory, ...) in training ends it as failed. Neither
raises: only bad input does (``SpecError``, ``SizeError``, ``TaskError``).

Importing this module is cheap: torch loads inside :func:`evaluate`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import os
import platform
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from structsearch._stream_cache import training_stream
from structsearch.errors import BudgetError, StructSearchError, TaskError
from structsearch.spec import Spec, parse_spec

__all__ = [
    "CurvePoint",
    "EvalResult",
    "FlopAccount",
    "LayerCount",
    "ProxyResult",
    "SeedsResult",
    "check_threads",
    "count_step_flops",
    "evaluate",
    "extrapolate_loss",
    "flops_per_step",
    "linear_macs_at",
    "matched_width",
    "proxy",
    "resolve_device",
    "steps_for_budget",
]

EXPLODE_FACTOR = 20.0
# AdamW's implementation. Fused takes 3-11% less per step on an idle CPU, but it rounds
# differently, enough to move a chaotic training's score by 5% and swap two ranks of the
# throughput goal's list (benchmarks/results/throughput.md); foreach keeps every recorded study
# and benchmark cache reproducible. "flat" is foreach (with the clipping) run over flat buffers
# (structsearch._flat_adamw): bit-identical to it, in a handful of ops per step instead of a
# dozen per tensor; foreach is what runs where it does not apply (mixed dtypes or devices).
OPTIMIZER_OPTIONS: dict[str, Any] = {"foreach": True, "flat": True}


class CurvePoint(BaseModel):
    """One point of the loss curve: validation score after ``step`` steps."""

    model_config = ConfigDict(frozen=True)

    step: int
    train_flops: float = Field(description="cumulative training FLOPs after this step")
    wall_seconds: float = Field(description="cumulative training wall time (evaluation excluded)")
    val_loss: float | None = Field(description="validation score (task metric), None if not finite")
    train_loss: float | None = Field(default=None, description="mean training loss since the previous point")


class LayerCount(BaseModel):
    """A linear layer's share of the step: MACs per vector times vectors per step."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str
    d_in: int
    d_out: int
    structured: bool
    macs_per_vector: int
    vectors_per_step: int

    @property
    def macs_per_step(self) -> int:
        return self.macs_per_vector * self.vectors_per_step


class FlopAccount(BaseModel):
    """Training FLOPs of one step, with the pieces a reader needs to check them."""

    model_config = ConfigDict(frozen=True)

    linear_macs_per_step: int = Field(description="sum of MACs per vector * vectors per step over linear layers")
    linear_flops_per_step: float = Field(description="6 * linear_macs_per_step (forward 2x + backward 4x)")
    other_flops_per_step: float = Field(description="FlopCounterMode, whole step, outside the linear layers")
    flops_per_step: float = Field(description="linear + other: what the budget is divided by")
    measured_flops_per_step: float = Field(description="FlopCounterMode total for one whole step (cross-check)")
    layers: list[LayerCount]

    @property
    def measured_ratio(self) -> float:
        """measured / formula; slightly below 1 because the first layer needs no input gradient."""
        return self.measured_flops_per_step / self.flops_per_step if self.flops_per_step else float("nan")


class EvalResult(BaseModel):
    """The outcome of one training trial. ``to_dict()`` is JSON-safe."""

    model_config = ConfigDict(frozen=True)

    spec: str = Field(description="theta in paper notation")
    structure: str | None = Field(description="known structure name, if any")
    task: str
    metric: str
    status: Literal["ok", "diverged", "failed"]
    final_loss: float | None = Field(description="validation score at the end; None unless status is ok")
    score: float | None = Field(default=None, description="what to rank by: final_loss here (see proxy())")
    diverged: bool
    divergence_step: int | None = None
    reason: str | None = None
    curve: list[CurvePoint]
    params: int = Field(default=0, description="trainable parameters of the whole model")
    structured_params: int = Field(default=0, description="parameters in the structured layers")
    macs: int = Field(default=0, description="linear-layer MACs per input vector (per sample; per token for char-lm)")
    structured_macs: int = Field(default=0, description="MACs per vector of the structured layers, summed")
    width: int
    width_rule: str = Field(default="explicit", description="matched (iso-FLOP), fixed (task default) or explicit")
    layer_shapes: list[tuple[int, int]] = Field(default=[], description="(d_in, d_out) of each structured layer")
    layer_paths: dict[str, int] = Field(
        default={},
        description="structured layers per contraction path they ran (docs/layers.md; 'materialised': one GEMM "
        "by the weight built from the cores, charged the structure's MACs all the same)",
    )
    budget: float = Field(description="training FLOP budget asked for")
    train_flops: float = Field(default=0.0, description="FLOPs actually spent: steps done * flops per step")
    flops_per_step: float = 0.0
    flops: FlopAccount | None = None
    steps: int = Field(default=0, description="steps done (fewer than planned if the trial ended early)")
    planned_steps: int = 0
    batch_size: int | None = None
    lr: float
    base_width: int
    wall_seconds: float = Field(default=0.0, description="training wall time: the steps, data making included")
    data_seconds: float = Field(default=0.0, description="the part of wall_seconds spent making training batches")
    eval_seconds: float = Field(default=0.0, description="validation wall time (not in wall_seconds)")
    flops_per_second: float = Field(
        default=0.0, description="achieved: train_flops / (wall_seconds - data_seconds), the model's own rate"
    )
    seeds_batched: int = Field(default=1, description="seeds trained together in one run; times are this run's share")
    device: str
    dtype: str = "float32"
    seed: int
    versions: dict[str, str]
    task_settings: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain values (None for missing losses, no NaN or inf)."""
        return self.model_dump(mode="json")


def steps_for_budget(budget: float, flops_per_step: float) -> int:
    """Training steps a FLOP budget buys: floor(budget / flops_per_step); a budget below one step is an error.

    >>> steps_for_budget(1e9, 3e6)
    333
    >>> steps_for_budget(1.0, 3e6)
    Traceback (most recent call last):
    ...
    structsearch.errors.BudgetError: budget: 1 FLOPs buys no training step; one step costs 3e+06 FLOPs
    """
    steps = int(budget // flops_per_step)
    if steps < 1:
        raise BudgetError(
            f"budget: {budget:.4g} FLOPs buys no training step; one step costs {flops_per_step:.4g} FLOPs"
        )
    return steps


# torch's OpenMP pool crashes the process (no Python error) on absurd counts such as 100000
MAX_THREADS = 1024


def check_threads(threads: Any) -> None:
    """``threads`` is None or a usable count of torch CPU threads, else a one-line TaskError."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise TaskError(f"threads: expected an integer from 1 to {MAX_THREADS}, got {threads!r}")


def resolve_device(device: Any = None) -> Any:
    """``None`` -> CUDA when available, else CPU; strings and torch devices pass through."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise TaskError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise TaskError(f"device: {device!r} asked for but CUDA is not available")
    if resolved.type == "meta":  # no data: a training there would only fail step by step
        raise TaskError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return resolved


def _versions() -> dict[str, str]:
    import numpy
    import torch

    from structsearch import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "structsearch": __version__,
    }


def _layers_api() -> tuple[Callable[[Spec], Any], Callable[..., Any]]:
    from structsearch.layers import linear_factory, param_groups

    return linear_factory, param_groups


def _load_spec(spec: Any) -> Spec:
    """A spec, a spec string, a theta mapping, or an exported spec file (as the CLI takes them)."""
    from structsearch.layers import load_spec

    return load_spec(spec)


def _linear_macs(module: Any) -> int | None:
    from torch import nn

    macs = getattr(module, "macs", None)
    if isinstance(macs, int) and not isinstance(macs, bool):
        return macs
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return None


def _linear_modules(model: Any) -> dict[int, Any]:
    """id -> module for every linear layer not nested inside another linear layer."""
    names: dict[int, str] = {}
    linear: dict[int, Any] = {}
    for name, module in model.named_modules():
        names[id(module)] = name
        if _linear_macs(module) is None:
            continue
        # a linear layer nested in another linear layer is counted by its parent
        if any(name.startswith(names[other] + ".") for other in linear if names[other]):
            continue
        linear[id(module)] = module
    return linear


_MATCHED: dict[tuple[Any, ...], int] = {}
# (spec, task's model settings, width) -> MACs: a frontier ladder's iso-FLOP search tries the same widths at every rung
_MACS_AT: dict[tuple[Any, ...], int] = {}
_MACS_AT_KEPT = 65536


def _model_settings(task_obj: Any) -> tuple[str, str] | None:
    """What a task's model at a given width depends on, for the MACs and matched-width caches.

    The task's class and its public instance attributes (a task keeps its settings there: the
    built-ins' ``options``, a plug-in's ``self.depth``); None, so nothing is cached, when they do
    not serialise.
    """
    import json

    state = {k: v for k, v in vars(task_obj).items() if not k.startswith("_")}
    try:
        text = json.dumps(state, sort_keys=True)
    except (TypeError, ValueError):
        return None
    return f"{type(task_obj).__module__}.{type(task_obj).__qualname__}", text


def linear_macs_at(spec: str | Spec, task: Any, width: int) -> int:
    """Linear-layer MACs per vector of ``task``'s model at ``width`` with ``spec``'s layers.

    The model is built on the meta device (no memory, no init cost); raises ``SizeError`` if
    the structure's class sizes need too much padding at this width.
    """
    import torch

    from structsearch.tasks import get_task

    spec = parse_spec(spec)
    task_obj = get_task(task)
    settings = _model_settings(task_obj)
    key = (spec, settings, width) if settings is not None else None
    if key in _MACS_AT:
        return _MACS_AT[key]
    linear_factory, _ = _layers_api()
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = task_obj.build_model(linear_factory(spec), width)
    macs = sum(int(_linear_macs(m) or 0) for m in _linear_modules(model).values())
    if key is not None:
        _MACS_AT[key] = macs
        while len(_MACS_AT) > _MACS_AT_KEPT:
            del _MACS_AT[next(iter(_MACS_AT))]
    return macs


def matched_width(spec: str | Spec, task: Any = "mlp-regression", reference_width: int | None = None) -> int:
    """The iso-FLOP width: the largest width (a multiple of the task's ``width_multiple``, at most
    16x the reference) at which ``spec``'s model costs no more linear MACs per vector than the
    dense model at ``reference_width`` (default: the task's ``default_width``).

    Widths whose class sizes need too much padding are skipped; ``SizeError`` if none fits.
    """
    from structsearch.errors import SizeError
    from structsearch.tasks import get_task

    spec = parse_spec(spec)
    task_obj = get_task(task)
    reference = int(reference_width or task_obj.default_width)
    settings = _model_settings(task_obj)
    key = (spec.paper, settings, reference, getattr(task_obj, "width_multiple", 8)) if settings is not None else None
    if key in _MATCHED:
        return _MATCHED[key]
    step = int(getattr(task_obj, "width_multiple", 8))
    target = linear_macs_at("dense", task_obj, reference)
    best, last_error = None, None
    for width in range(step, 16 * reference + 1, step):
        try:
            macs = linear_macs_at(spec, task_obj, width)
        except SizeError as err:
            last_error = err
            continue
        if macs <= target:
            best = width
        elif macs > 1.25 * target:
            break
    if best is None:
        raise SizeError(
            f"{spec.paper}: no width up to {16 * reference} matches dense at width {reference}"
            + (f" ({last_error})" if last_error else "")
        )
    if key is not None:
        _MATCHED[key] = best
    return best


def flops_per_step(spec: str | Spec, task: Any = "mlp-regression", width: int | None = None) -> float:
    """Training FLOPs of one step of ``spec``'s model at ``width``, counted as :func:`evaluate` counts them.

    Builds the model and counts one step (no training): what a budget must at least cover.
    """
    import torch

    from structsearch.tasks import get_task

    spec = parse_spec(spec)
    task_obj = get_task(task)
    width = int(width or task_obj.default_width)
    cpu = torch.device("cpu")
    with torch.random.fork_rng(devices=[]):
        model, made = _build(spec, task_obj, width, 0, cpu)
        setup = _Setup(task_obj, model, made, 0, cpu, budget=1.0, steps=1)  # counts as a training would
    return float(setup.account.flops_per_step)


def count_step_flops(model: Any, loss_fn: Callable[[], Any], structured: set[int] | None = None) -> FlopAccount:
    """Count one training step of ``model``: ``loss_fn()`` runs the forward and returns the loss.

    Linear layers (``nn.Linear`` and modules with an integer ``.macs``) are counted by the
    formula 6 * MACs per vector * vectors; everything else by FlopCounterMode: the whole step's
    count less each linear layer's own count (measured alone on the input shape it saw).
    Structured layers are counted on their structural path, also where they run on the
    materialised weight, so the counter cross-checks the structure's formula.
    Gradients the step leaves behind are cleared.
    """
    from torch.utils.flop_counter import FlopCounterMode

    structured = structured or set()
    names = {id(m): n for n, m in model.named_modules()}
    linear = _linear_modules(model)
    vectors: dict[int, int] = {}
    calls: list[tuple[int, tuple[int, ...], bool, Any]] = []

    def hook(module: Any, args: tuple[Any, ...]) -> None:
        x = args[0]
        vectors[id(module)] = vectors.get(id(module), 0) + x.numel() // max(1, x.shape[-1])
        calls.append((id(module), tuple(x.shape), bool(x.requires_grad), x.dtype))

    handles = [m.register_forward_pre_hook(hook) for m in linear.values()]
    counter = FlopCounterMode(display=False)
    with _structural_paths(model):
        try:
            with counter:
                loss = loss_fn()
                loss.backward()
        finally:
            for h in handles:
                h.remove()
        total = float(counter.get_total_flops())
        # The counter's per-module attribution is unreliable in backward, so each linear layer's
        # own share is measured alone, with the input shape (and input-gradient need) it saw.
        measured_linear = sum(_measure_layer(linear[key], shape, grad, dtype) for key, shape, grad, dtype in calls)
    model.zero_grad(set_to_none=True)
    layers: list[LayerCount] = []
    for key, module in linear.items():
        name = names[key]
        d_in = getattr(module, "in_features", None) or getattr(module, "d_in", 0)
        d_out = getattr(module, "out_features", None) or getattr(module, "d_out", 0)
        layers.append(
            LayerCount(
                name=name,
                kind=type(module).__name__,
                d_in=int(d_in),
                d_out=int(d_out),
                structured=key in structured,
                macs_per_vector=int(_linear_macs(module) or 0),
                vectors_per_step=vectors.get(key, 0),
            )
        )
    linear_macs = sum(layer.macs_per_step for layer in layers)
    linear_flops = 6.0 * linear_macs
    other = max(0.0, total - measured_linear)
    return FlopAccount(
        linear_macs_per_step=linear_macs,
        linear_flops_per_step=linear_flops,
        other_flops_per_step=other,
        flops_per_step=linear_flops + other,
        measured_flops_per_step=total,
        layers=layers,
    )


@contextlib.contextmanager
def _structural_paths(model: Any) -> Iterator[None]:
    """Run every EinsumLinear of ``model`` on its structural path (not the materialised weight) inside."""
    from structsearch.layers import EinsumLinear

    saved = {m: m.path for m in model.modules() if isinstance(m, EinsumLinear)}
    try:
        for module in saved:
            module.path = module.structural_path
        yield
    finally:
        for module, path in saved.items():
            module.path = path


def _measure_layer(module: Any, shape: tuple[int, ...], needs_input_grad: bool, dtype: Any) -> float:
    """FlopCounterMode FLOPs of one linear layer's forward + backward on an input of ``shape``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    param = next(module.parameters(), None)
    device = param.device if param is not None else None
    x = torch.zeros(shape, dtype=torch.float32, device=device, requires_grad=needs_input_grad)
    on_cuda = device is not None and device.type == "cuda"
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(device_type="cuda" if on_cuda else "cpu", dtype=torch.bfloat16, enabled=on_cuda):
        y = module(x)
        if y.requires_grad:
            y.backward(torch.ones_like(y))
    return float(counter.get_total_flops())


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def evaluate(
    spec: str | Mapping[str, Any] | Spec | os.PathLike,
    task: str | Any = "mlp-regression",
    budget: float | None = None,
    seed: int = 0,
    device: Any = None,
    width: int | Literal["matched", "fixed"] | None = None,
    lr: float | None = None,
    *,
    steps: int | None = None,
    eval_points: int = 10,
    task_options: Mapping[str, Any] | None = None,
    explode_factor: float = EXPLODE_FACTOR,
    progress: Callable[[int, int], None] | None = None,
    threads: int | None = None,
    seeds: Sequence[int] | None = None,
) -> EvalResult | SeedsResult:
    """Train ``spec`` on ``task`` for ``budget`` training FLOPs and score it on validation.

    ``budget=None`` uses the task's default (proxy) budget; ``steps`` overrides the budget
    with a fixed number of steps. ``width=None`` follows the task's ``width_rule`` (``"fixed"``:
    its ``default_width``; ``"matched"``: :func:`matched_width`), ``lr=None`` uses its tuned
    learning rate (transferred per core, see docs/evaluation.md). On CPU the result
    is deterministic for a given seed. Divergence and runtime failures are recorded in the
    result, never raised; bad input raises ``SpecError``, ``SizeError`` or ``TaskError``.
    ``threads`` sets torch's intra-op CPU threads for the call (restored after); on a shared
    machine 1 is often several times faster for small models.

    ``seeds=[0, 1, 2]`` trains those seeds together in one vectorised run (``seed`` is then
    ignored) and returns a :class:`SeedsResult` whose ``runs`` equal the solo runs' results
    (docs/evaluation.md 7).
    """
    from structsearch.tasks import get_task

    spec = _load_spec(spec)
    seed_list = _check_seeds(seeds)
    task_obj = get_task(task, **dict(task_options or {}))
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise TaskError(f"seed: expected an integer in [0, 2^32), got {seed!r}")
    if width is None:
        width = getattr(task_obj, "width_rule", "fixed")
    width_rule = width if isinstance(width, str) else "explicit"
    if width == "matched":
        width = matched_width(spec, task_obj)
    elif width == "fixed":
        width = int(task_obj.default_width)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise TaskError(f"width: expected a positive integer, 'matched' or 'fixed', got {width!r}")
    budget = float(task_obj.budget) if budget is None else budget
    if not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise TaskError(f"budget: expected a positive number of FLOPs, got {budget!r}")
    lr = float(task_obj.lr) if lr is None else lr
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise TaskError(f"lr: expected a positive number, got {lr!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise TaskError(f"steps: expected a positive integer, got {steps!r}")
    if not isinstance(eval_points, int) or eval_points < 1:
        raise TaskError(f"eval_points: expected a positive integer, got {eval_points!r}")

    import torch

    dev = resolve_device(device)
    rng_devices = [dev.index or 0] if dev.type == "cuda" else []
    check_threads(threads)
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    args = (spec, task_obj, budget, dev, width, lr, steps, eval_points, explode_factor, progress)
    with _restore_threads(threads_before), torch.random.fork_rng(devices=rng_devices):  # caller's RNG untouched
        if seed_list is not None:
            return _evaluate_seeds(seed_list, width_rule, *args)
        result = _train_or_fail(seed, *args)
    return result.model_copy(update={"width_rule": width_rule})


def _check_seeds(seeds: Sequence[int] | None) -> list[int] | None:
    if seeds is None:
        return None
    seed_list = list(seeds) if isinstance(seeds, (list, tuple, range)) else None
    if (
        not seed_list
        or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**32 for s in seed_list)
        or len(set(seed_list)) != len(seed_list)
    ):
        raise TaskError(f"seeds: expected a non-empty list of distinct integers in [0, 2^32), got {seeds!r}")
    return seed_list


def _train_or_fail(
    seed: int, spec: Spec, task_obj: Any, budget: float, dev: Any, width: int, lr: float, *rest: Any
) -> EvalResult:
    """One solo training; a RuntimeError before training (out of memory, ...) is a failed result."""
    try:
        return _train(spec, task_obj, budget, seed, dev, width, lr, *rest)
    except StructSearchError:
        raise
    except (RuntimeError, MemoryError) as err:  # e.g. out of memory while building or measuring
        reason = f"{type(err).__name__} before training: {str(err).splitlines()[0][:300]}"
        return _failed(spec, task_obj, budget, seed, dev, width, lr, reason)


def _evaluate_seeds(seeds: list[int], width_rule: str, *args: Any) -> SeedsResult:
    """Every seed in one vectorised run (structsearch._seed_batch); one by one if the task's loss can't be
    vmapped or the task does not batch its seeds (``Task.batch_seeds``)."""
    from structsearch._seed_batch import train_seeds

    spec, task_obj, budget, dev, width, lr, steps, eval_points, explode_factor, progress = args
    try:
        batched = (
            train_seeds(spec, task_obj, budget, seeds, dev, width, lr, steps, eval_points, explode_factor, progress)
            if getattr(task_obj, "batch_seeds", True)
            else None
        )
    except StructSearchError:
        raise
    except (RuntimeError, MemoryError) as err:
        reason = f"{type(err).__name__} before training: {str(err).splitlines()[0][:300]}"
        batched = [_failed(spec, task_obj, budget, s, dev, width, lr, reason) for s in seeds], 0.0
    vectorised = batched is not None
    if batched is None:
        runs = [_train_or_fail(s, *args) for s in seeds]
        batched = runs, sum(r.wall_seconds for r in runs)
    runs, wall = batched
    return SeedsResult.of([r.model_copy(update={"width_rule": width_rule}) for r in runs], wall, vectorised)


class _restore_threads:
    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.n)


def _failed(
    spec: Spec, task_obj: Any, budget: float, seed: int, dev: Any, width: int, lr: float, reason: str
) -> EvalResult:
    return EvalResult(
        spec=spec.paper,
        structure=spec.name,
        task=str(task_obj.name),
        metric=str(getattr(task_obj, "metric", "loss")),
        status="failed",
        final_loss=None,
        diverged=False,
        reason=reason,
        curve=[],
        width=width,
        budget=float(budget),
        lr=float(lr),
        base_width=int(task_obj.base_width),
        device=str(dev),
        seed=seed,
        versions=_versions(),
        task_settings=task_obj.describe() if hasattr(task_obj, "describe") else {"name": str(task_obj.name)},
    )


# A step's FLOP account depends only on the model's structure and the task's settings, and
# counting it (a forward and backward under FlopCounterMode) costs as much as a short rung's
# training: a search's many trainings of one structure (seeds, ladders, confirmations) count once.
_ACCOUNTS: dict[tuple[Any, ...], FlopAccount] = {}
_ACCOUNTS_KEPT = 512


def _account_key(task_obj: Any, model: Any, made: list[Any], dev: Any, autocast: bool) -> tuple[Any, ...] | None:
    """What a step's FLOP count depends on: the task's settings, every module's type, path and shapes."""
    from structsearch.tasks._protocol import settings_key

    settings = settings_key(task_obj)
    if settings is None or settings[1] == "null":
        return None  # a task that does not say its settings cannot be told apart from another
    structured = {id(m) for m in made}
    modules = tuple(
        (name, type(m).__qualname__, str(getattr(m, "path", "")), id(m) in structured)
        for name, m in model.named_modules()
    )
    params = tuple((name, tuple(p.shape), p.requires_grad) for name, p in model.named_parameters())
    return *settings, modules, params, str(dev), autocast


class _Setup:
    """What every seed of one (structure, task, width, budget) shares: counts, steps, precision."""

    def __init__(
        self, task_obj: Any, model: Any, made: list[Any], seed: int, dev: Any, budget: float, steps: int | None
    ):

        self.use_autocast = dev.type == "cuda"
        self.dtype = "bfloat16-autocast" if self.use_autocast else "float32"
        self.made = made
        key = _account_key(task_obj, model, made, dev, self.use_autocast)
        account = _ACCOUNTS.get(key) if key is not None else None
        if account is None:
            # One measurement batch from its own generator, so the training stream is untouched.
            measure_batch = next(training_stream(task_obj, seed + 7919, dev))

            def measured_loss() -> Any:
                with self.autocast():
                    return task_obj.loss(model, measure_batch)

            account = count_step_flops(model, measured_loss, {id(m) for m in made})
            if key is not None:
                _ACCOUNTS[key] = account
                while len(_ACCOUNTS) > _ACCOUNTS_KEPT:
                    del _ACCOUNTS[next(iter(_ACCOUNTS))]
        self.account = account
        self.planned = steps if steps is not None else steps_for_budget(budget, self.account.flops_per_step)
        vectors = max((layer.vectors_per_step for layer in self.account.layers), default=0)
        self.macs = self.account.linear_macs_per_step // vectors if vectors else 0
        self.params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.structured_params = sum(p.numel() for m in made for p in m.parameters())

    def autocast(self) -> Any:
        import torch

        device_type = "cuda" if self.use_autocast else "cpu"
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=self.use_autocast)


def _build(spec: Spec, task_obj: Any, width: int, seed: int, dev: Any) -> tuple[Any, list[Any]]:
    """The task's model with ``spec``'s layers, initialised from ``seed``; and the structured layers."""
    import torch

    linear_factory, _ = _layers_api()
    factory = linear_factory(spec)
    made: list[Any] = []

    def linear(d_in: int, d_out: int, bias: bool = True) -> Any:
        layer = factory(d_in, d_out, bias)
        made.append(layer)
        return layer

    torch.manual_seed(seed)
    return task_obj.build_model(linear, width).to(dev), made


def _optimizer(
    task_obj: Any, groups: list[dict[str, Any]], lr: float, planned: int, clip_order: list[Any] | None = None
) -> tuple[Any, Any]:
    """AdamW (betas 0.9, 0.95) on ``groups`` with warmup + cosine (``OPTIMIZER_OPTIONS``'s implementation).

    ``clip_order``: the model's parameters, given when the optimiser should clip the gradients
    to the task's ``grad_clip`` itself (as ``clip_grad_norm_`` over them would). A ``FlatAdamW``
    does; a torch AdamW leaves clipping to the caller (the steppers check ``max_grad_norm``).
    """
    import torch

    from structsearch._flat_adamw import FlatAdamW, flat_adamw_applies
    from structsearch.training import BETAS, EPS, WARMUP_FRACTION, lr_factor

    options = dict(OPTIMIZER_OPTIONS)
    if options.pop("flat", False) and flat_adamw_applies(groups):
        clip = getattr(task_obj, "grad_clip", None) if clip_order is not None else None
        max_norm = float(clip) if clip else None
        optimizer = FlatAdamW(groups, lr, BETAS, EPS, max_grad_norm=max_norm, clip_order=clip_order)
    else:
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=BETAS, eps=EPS, **options)
    warmup = float(getattr(task_obj, "warmup_fraction", WARMUP_FRACTION))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_factor, steps=planned, warmup_fraction=warmup)
    )


def _train(
    spec: Spec,
    task_obj: Any,
    budget: float,
    seed: int,
    dev: Any,
    width: int,
    lr: float,
    steps: int | None,
    eval_points: int,
    explode_factor: float,
    progress: Callable[[int, int], None] | None,
) -> EvalResult:

    from structsearch._train_loop import SoloStepper, run_loop

    _, param_groups = _layers_api()
    model, made = _build(spec, task_obj, width, seed, dev)
    setup = _Setup(task_obj, model, made, seed, dev, budget, steps)
    groups = param_groups(model, lr, base_fan_in=int(task_obj.base_width), weight_decay=float(task_obj.weight_decay))
    optimizer, schedule = _optimizer(task_obj, groups, lr, setup.planned, clip_order=list(model.parameters()))
    batches = training_stream(task_obj, seed, dev)
    model.train()
    stepper = SoloStepper(task_obj, model, optimizer, schedule, batches, setup.autocast, dev)
    traces, times = run_loop(
        stepper, setup.planned, setup.account.flops_per_step, eval_points, explode_factor, progress
    )
    return _result(spec, task_obj, setup, traces[0], times, budget, steps, seed, dev, width, lr)


def _layer_path(module: Any) -> str:
    """The contraction path a structured layer ran (docs/layers.md); a plain ``nn.Linear`` is "dense"."""
    import torch

    path = getattr(module, "path", None)
    if isinstance(path, str):
        return path
    return "dense" if isinstance(module, torch.nn.Linear) else type(module).__name__


def _result(
    spec: Spec,
    task_obj: Any,
    setup: _Setup,
    trace: Any,
    times: Any,
    budget: float,
    steps: int | None,
    seed: int,
    dev: Any,
    width: int,
    lr: float,
    share: int = 1,
) -> EvalResult:
    """One seed's :class:`EvalResult`; ``share``: seeds that shared the run (each is charged 1/share of its time)."""
    status, reason = trace.status, trace.reason
    done, curve, fps = trace.done, trace.curve, setup.account.flops_per_step
    final = curve[-1].val_loss if status == "ok" and curve and curve[-1].step == done else None
    if status == "ok" and final is None:
        status, reason = "diverged", "no finite validation loss at the end"
    model_seconds = (times.train - times.data) / share
    return EvalResult(
        spec=spec.paper,
        structure=spec.name,
        task=str(task_obj.name),
        metric=str(getattr(task_obj, "metric", "loss")),
        status=status,
        final_loss=final,
        score=final,
        diverged=status == "diverged",
        divergence_step=trace.divergence_step,
        reason=reason,
        curve=curve,
        params=setup.params,
        structured_params=setup.structured_params,
        macs=int(setup.macs),
        structured_macs=sum(int(_linear_macs(m) or 0) for m in setup.made),
        width=width,
        layer_shapes=[(layer.d_in, layer.d_out) for layer in setup.account.layers if layer.structured],
        layer_paths=dict(collections.Counter(_layer_path(m) for m in setup.made)),
        budget=float(budget) if steps is None else setup.planned * fps,
        train_flops=done * fps,
        flops_per_step=fps,
        flops=setup.account,
        steps=done,
        planned_steps=setup.planned,
        batch_size=getattr(task_obj, "batch_size", None),
        lr=float(lr),
        base_width=int(task_obj.base_width),
        wall_seconds=times.train / share,
        data_seconds=times.data / share,
        eval_seconds=times.eval / share,
        flops_per_second=done * fps / model_seconds if model_seconds > 0 else 0.0,
        seeds_batched=share,
        device=str(dev),
        dtype=setup.dtype,
        seed=seed,
        versions=_versions(),
        task_settings=task_obj.describe() if hasattr(task_obj, "describe") else {"name": str(task_obj.name)},
    )


def extrapolate_loss(small: tuple[float, float], large: tuple[float, float], compute: float) -> float:
    """Predict the loss at ``compute`` from two finished runs (compute, loss) by a power law.

    The exponent b = ln(L_small / L_large) / ln(C_large / C_small) is clamped at 0 (a run that
    got worse with more compute is not extrapolated further down or up).

    >>> round(extrapolate_loss((1e10, 0.4), (4e10, 0.2), 1.6e11), 6)
    0.1
    """
    (c1, l1), (c2, l2) = small, large
    if not (c1 > 0 and c2 > c1 and l1 > 0 and l2 > 0):
        raise ValueError(f"extrapolate_loss: expected 0 < C_small < C_large and positive losses, got {small}, {large}")
    b = max(0.0, math.log(l1 / l2) / math.log(c2 / c1))
    return l2 * (compute / c2) ** (-b)


class ProxyResult(BaseModel):
    """A two-run proxy score: the loss predicted at ``horizon`` x the budget (docs/evaluation.md 5).

    ``score`` is what to rank by; ``final_loss`` is the larger run's measured loss. The keys
    a search reads (``final_loss``, ``diverged``, ``reason``, ``train_flops``, ``steps``,
    ``wall_seconds``, ``params``, ``macs``, ``width``) mean what they mean in :class:`EvalResult`,
    summed over both runs where they are costs.
    """

    model_config = ConfigDict(frozen=True)

    spec: str
    structure: str | None
    task: str
    metric: str
    status: Literal["ok", "diverged", "failed"]
    score: float | None = Field(description="validation score predicted at horizon_budget")
    horizon_budget: float
    exponent: float | None = Field(description="the fitted b in loss ~ C^-b between the two runs")
    final_loss: float | None
    diverged: bool
    reason: str | None
    budget: float
    train_flops: float
    steps: int
    wall_seconds: float
    data_seconds: float = 0.0
    eval_seconds: float = 0.0
    flops_per_second: float = Field(default=0.0, description="both runs' FLOPs over their model time")
    params: int
    macs: int
    width: int
    seed: int
    device: str
    runs: list[EvalResult]

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def proxy(
    spec: str | Mapping[str, Any] | Spec | os.PathLike,
    task: str | Any = "mlp-regression",
    budget: float | None = None,
    seed: int = 0,
    device: Any = None,
    width: int | Literal["matched", "fixed"] | None = None,
    lr: float | None = None,
    *,
    horizon: float = 10.0,
    split: float = 0.25,
    task_options: Mapping[str, Any] | None = None,
    threads: int | None = None,
    seeds: Sequence[int] | None = None,
) -> ProxyResult | SeedsResult:
    """Score ``spec`` by two trainings that together spend ``budget`` FLOPs and extrapolate.

    The runs get ``split * budget`` and ``(1 - split) * budget`` (default a quarter and three
    quarters, a 3x ratio); their final validation scores give a power law per structure, and
    ``score`` is its prediction at ``horizon * budget``. Never raises for divergence: if either
    run diverges or fails, the result does, with that run's reason. ``seeds=[...]``: every seed's
    proxy at once (each of the two trainings seed-batched), as a :class:`SeedsResult` of
    :class:`ProxyResult`.
    """
    from structsearch.tasks import get_task

    if not (isinstance(horizon, (int, float)) and horizon >= 1):
        raise TaskError(f"horizon: expected a number >= 1, got {horizon!r}")
    if not (isinstance(split, (int, float)) and 0 < split < 0.5):
        raise TaskError(f"split: expected a fraction in (0, 0.5), got {split!r}")
    spec = _load_spec(spec)
    task_obj = get_task(task, **dict(task_options or {}))
    budget = float(task_obj.budget) if budget is None else budget
    if not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise TaskError(f"budget: expected a positive number of FLOPs, got {budget!r}")
    kwargs = {"device": device, "width": width, "lr": lr, "threads": threads}
    seed_list = _check_seeds(seeds)
    if seed_list is None:
        small, large = (
            evaluate(spec, task_obj, budget=part * budget, seed=seed, **kwargs) for part in (split, 1 - split)
        )
        return _proxy_result(spec, small, large, budget, horizon)
    small_s, large_s = (
        evaluate(spec, task_obj, budget=part * budget, seeds=seed_list, **kwargs) for part in (split, 1 - split)
    )
    pairs = zip(small_s.runs, large_s.runs, strict=True)
    results = [_proxy_result(spec, small, large, budget, horizon) for small, large in pairs]
    return SeedsResult.of(results, small_s.wall_seconds + large_s.wall_seconds, small_s.batched)


def _proxy_result(spec: Spec, small: EvalResult, large: EvalResult, budget: float, horizon: float) -> ProxyResult:
    runs = [small, large]
    bad = next((r for r in runs if r.status != "ok"), None)
    score = exponent = None
    if bad is None and small.final_loss and large.final_loss and large.train_flops > small.train_flops:
        score = extrapolate_loss(
            (small.train_flops, small.final_loss), (large.train_flops, large.final_loss), horizon * budget
        )
        exponent = max(
            0.0, math.log(small.final_loss / large.final_loss) / math.log(large.train_flops / small.train_flops)
        )
    status = bad.status if bad is not None else "ok"
    model_seconds = sum(r.wall_seconds - r.data_seconds for r in runs)
    return ProxyResult(
        spec=spec.paper,
        structure=spec.name,
        task=large.task,
        metric=large.metric,
        status=status,
        score=score,
        horizon_budget=horizon * budget,
        exponent=exponent,
        final_loss=large.final_loss,
        diverged=status == "diverged",
        reason=bad.reason if bad is not None else None,
        budget=float(budget),
        train_flops=small.train_flops + large.train_flops,
        steps=small.steps + large.steps,
        wall_seconds=small.wall_seconds + large.wall_seconds,
        data_seconds=small.data_seconds + large.data_seconds,
        eval_seconds=small.eval_seconds + large.eval_seconds,
        flops_per_second=(small.train_flops + large.train_flops) / model_seconds if model_seconds > 0 else 0.0,
        params=large.params,
        macs=large.macs,
        width=large.width,
        seed=large.seed,
        device=large.device,
        runs=runs,
    )


class SeedsResult(BaseModel):
    """Several seeds of one structure (``evaluate``/``proxy`` with ``seeds=``), trained together.

    ``runs`` holds one :class:`EvalResult` (or :class:`ProxyResult`) per seed, in seed order, each
    what the solo run with that seed returns (losses to float tolerance); its times are its
    1/S share of the batched run. ``wall_seconds`` is the whole batched run's training time.
    """

    model_config = ConfigDict(frozen=True)

    spec: str
    structure: str | None
    task: str
    metric: str
    status: Literal["ok", "diverged", "failed"] = Field(description="ok if every seed is ok, else the first other")
    seeds: list[int]
    scores: list[float | None] = Field(description="each seed's score (what to rank by), None if not ok")
    mean_score: float | None = Field(description="mean of the seeds' finite scores, None if there is none")
    std_score: float | None = Field(description="sample standard deviation of the finite scores (2 or more)")
    train_flops: float = Field(description="training FLOPs of all seeds together")
    wall_seconds: float = Field(description="training wall time of the batched run, all seeds together")
    batched: bool = Field(
        description="trained in one vectorised run (False: one by one, the task could not be or does not batch seeds)"
    )
    runs: list[EvalResult] | list[ProxyResult]

    @classmethod
    def of(cls, runs: list[Any], wall_seconds: float, batched: bool) -> SeedsResult:
        scores = [r.score if r.status == "ok" else None for r in runs]
        finite = [x for x in scores if x is not None and math.isfinite(x)]
        mean = sum(finite) / len(finite) if finite else None
        std = None
        if len(finite) > 1 and mean is not None:
            std = math.sqrt(sum((x - mean) ** 2 for x in finite) / (len(finite) - 1))
        first = runs[0]
        return cls(
            spec=first.spec,
            structure=first.structure,
            task=first.task,
            metric=first.metric,
            status=next((r.status for r in runs if r.status != "ok"), "ok"),
            seeds=[r.seed for r in runs],
            scores=scores,
            mean_score=mean,
            std_score=std,
            train_flops=sum(r.train_flops for r in runs),
            wall_seconds=wall_seconds,
            batched=batched,
            runs=runs,
        )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
