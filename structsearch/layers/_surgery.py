"""Model surgery: swap the ``nn.Linear`` modules of an existing model for structured layers.

:func:`structurize` picks modules by fnmatch-style name patterns, builds an
:class:`EinsumLinear` of the same sizes (optionally projected from the dense weight it
replaces) and returns a :class:`StructurizeSummary` of what changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from structsearch.errors import SizeError, SpecError
from structsearch.layers._einsum_linear import SpecLike, load_spec
from structsearch.layers._init import init_linear_
from structsearch.layers._moe import make_layer
from structsearch.layers._project import project_dense
from structsearch.sizes import MAX_PADDING

__all__ = ["INIT_MODES", "LayerChange", "StructurizeSummary", "linear_factory", "structurize"]

INIT_MODES = ("random", "project")


@dataclass(frozen=True)
class LayerChange:
    """One replaced (or skipped) linear layer."""

    name: str
    d_in: int
    d_out: int
    params_before: int
    macs_before: int
    params_after: int
    macs_after: int
    padding: float = 0.0
    projection_error: float | None = None  # relative Frobenius error when init="project"
    skipped: str | None = None  # why the layer was left dense


@dataclass
class StructurizeSummary:
    """What :func:`structurize` did; renders as a rich table (``rich.print(summary)``)."""

    spec: str
    init: str
    layers: list[LayerChange] = field(default_factory=list)

    @property
    def replaced(self) -> list[LayerChange]:
        return [layer for layer in self.layers if layer.skipped is None]

    @property
    def params_before(self) -> int:
        return sum(layer.params_before for layer in self.layers)

    @property
    def params_after(self) -> int:
        return sum(layer.params_after for layer in self.layers)

    @property
    def macs_before(self) -> int:
        return sum(layer.macs_before for layer in self.layers)

    @property
    def macs_after(self) -> int:
        return sum(layer.macs_after for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "init": self.init,
            "layers": [asdict(layer) for layer in self.layers],
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
        }

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title=f"structurize {self.spec} (init={self.init})")
        for column in ("layer", "d_in x d_out", "params", "MACs/vector", "padding", "proj. error", "note"):
            table.add_column(column, justify="left" if column in ("layer", "note") else "right")
        for layer in self.layers:
            error = "" if layer.projection_error is None else f"{layer.projection_error:.3g}"
            table.add_row(
                layer.name,
                f"{layer.d_in} x {layer.d_out}",
                f"{layer.params_before:,} -> {layer.params_after:,}",
                f"{layer.macs_before:,} -> {layer.macs_after:,}",
                f"{layer.padding:.1%}",
                error,
                layer.skipped or "",
            )
        table.add_row(
            "total",
            "",
            f"{self.params_before:,} -> {self.params_after:,}",
            f"{self.macs_before:,} -> {self.macs_after:,}",
            "",
            "",
            "",
            end_section=True,
        )
        return table

    def __str__(self) -> str:
        lines = [f"structurize {self.spec} (init={self.init}): {len(self.replaced)} of {len(self.layers)} layers"]
        for layer in self.layers:
            note = f" [skipped: {layer.skipped}]" if layer.skipped else ""
            err = "" if layer.projection_error is None else f", error {layer.projection_error:.3g}"
            lines.append(
                f"  {layer.name}: {layer.d_in}x{layer.d_out} params {layer.params_before:,} -> "
                f"{layer.params_after:,}, MACs {layer.macs_before:,} -> {layer.macs_after:,}{err}{note}"
            )
        return "\n".join(lines)


def _patterns(value: str | Sequence[str], what: str) -> tuple[str, ...]:
    patterns = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(p, str) for p in patterns):
        raise SpecError(f"{what}: expected name patterns (strings), got {value!r}")
    return patterns


def structurize(
    model: nn.Module,
    spec: SpecLike,
    include: str | Sequence[str] = "*",
    exclude: str | Sequence[str] = (),
    init: str = "random",
    *,
    max_padding: float | None = MAX_PADDING,
    skip_invalid: bool = False,
    fit_steps: int = 100,
) -> StructurizeSummary:
    """Replace the matching ``nn.Linear`` modules of ``model`` (in place) with :class:`EinsumLinear`.

    ``include``/``exclude`` are fnmatch patterns over dotted module names (``"blocks.*.mlp.*"``).
    ``init="project"`` fits each new layer to the dense weight it replaces and reports the
    relative Frobenius error. A layer whose sizes need more than ``max_padding`` raises
    :class:`SizeError` naming it, or is left dense with ``skip_invalid=True``.

    >>> model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> summary = structurize(model, "btt", exclude="2")
    >>> [(c.name, c.params_before, c.params_after) for c in summary.layers]
    [('0', 256, 128)]
    """
    parsed = load_spec(spec)
    if init not in INIT_MODES:
        raise SpecError(f"init: expected one of {', '.join(INIT_MODES)}, got {init!r}")
    includes, excludes = _patterns(include, "include"), _patterns(exclude, "exclude")
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if name  # the root module cannot replace itself
        and isinstance(module, nn.Linear)
        and any(fnmatchcase(name, p) for p in includes)
        and not any(fnmatchcase(name, p) for p in excludes)
    ]
    summary = StructurizeSummary(spec=parsed.name or parsed.paper, init=init)
    for name, linear in targets:
        before = linear.in_features * linear.out_features
        try:
            layer = make_layer(
                parsed,
                linear.in_features,
                linear.out_features,
                bias=linear.bias is not None,
                device=linear.weight.device,
                dtype=linear.weight.dtype,
                max_padding=max_padding,
            )
        except SizeError as err:
            if not skip_invalid:
                raise SizeError(f"layer {name!r}: {err}") from err
            summary.layers.append(
                LayerChange(
                    name, linear.in_features, linear.out_features, before, before, before, before, skipped=str(err)
                )
            )
            continue
        error = None
        if init == "project":
            error = project_dense(layer, linear.weight, linear.bias, fit_steps=fit_steps)
        layer.train(linear.training)
        layer.requires_grad_(linear.weight.requires_grad)  # a frozen layer stays frozen
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer)
        summary.layers.append(
            LayerChange(
                name,
                layer.d_in,
                layer.d_out,
                before,
                before,
                layer.params,
                layer.macs,
                padding=layer.padding,
                projection_error=error,
            )
        )
    return summary


def linear_factory(spec: SpecLike, **kwargs: Any) -> Callable[..., nn.Module]:
    """``factory(d_in, d_out, bias=True)`` building the spec's layer.

    The dense spec gives a plain ``nn.Linear`` (the fastest dense path) with the same
    spectral initialisation; any other spec an :class:`EinsumLinear`.
    """
    parsed = load_spec(spec)
    if parsed.name == "dense":

        def dense(d_in: int, d_out: int, bias: bool = True) -> nn.Module:
            factory = {k: kwargs[k] for k in ("device", "dtype") if k in kwargs}
            return init_linear_(nn.Linear(d_in, d_out, bias=bias, **factory))

        return dense

    def structured(d_in: int, d_out: int, bias: bool = True) -> nn.Module:
        return make_layer(parsed, d_in, d_out, bias=bias, **kwargs)

    return structured
