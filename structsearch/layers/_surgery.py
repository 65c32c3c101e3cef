"""Model surgery: swap the dense layers of an existing model for structured layers.

:func:`structurize` picks ``nn.Linear`` modules (and Hugging Face ``Conv1D``, GPT-2's
projection, whose weight is stored transposed) by fnmatch-style name patterns, builds an
:class:`EinsumLinear` of the same sizes (optionally projected from the dense weight it
replaces) and returns a :class:`StructurizeSummary` of what changed. Patterns that leave
nothing to replace raise :class:`SurgeryError` naming the patterns and the model's layer types.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from structsearch.errors import SizeError, SpecError, SurgeryError
from structsearch.layers._dense import REPLACEABLE, DenseLayer, dense_layer
from structsearch.layers._init import init_linear_
from structsearch.layers._moe import make_layer
from structsearch.layers._project import project_dense
from structsearch.sizes import MAX_PADDING
from structsearch.spec import SpecLike, load_spec

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
    kind: str = "Linear"  # the replaced module: "Linear" or "Conv1D"


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
                layer.name if layer.kind == "Linear" else f"{layer.name} ({layer.kind})",
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
            kind = "" if layer.kind == "Linear" else f" ({layer.kind})"
            lines.append(
                f"  {layer.name}{kind}: {layer.d_in}x{layer.d_out} params {layer.params_before:,} -> "
                f"{layer.params_after:,}, MACs {layer.macs_before:,} -> {layer.macs_after:,}{err}{note}"
            )
        return "\n".join(lines)


def _patterns(value: str | Sequence[str], what: str) -> tuple[str, ...]:
    patterns = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(p, str) for p in patterns):
        raise SpecError(f"{what}: expected name patterns (strings), got {value!r}")
    return patterns


def _nothing_to_replace(model: nn.Module, includes: tuple[str, ...], excludes: tuple[str, ...]) -> SurgeryError:
    """The one-line error for patterns that select no layer: what was asked, what the model has."""
    replaceable = [name for name, module in model.named_modules() if name and dense_layer(module) is not None]
    kinds = Counter(type(m).__name__ for name, m in model.named_modules() if name and not any(m.children()))
    types = ", ".join(f"{kind} x{n}" for kind, n in kinds.most_common(8)) or "none"
    if len(kinds) > 8:
        types += f", ... ({len(kinds)} types)"
    asked = f"include={list(includes)} exclude={list(excludes)}"
    if replaceable:
        shown = ", ".join(repr(n) for n in replaceable[:4]) + (", ..." if len(replaceable) > 4 else "")
        found = f"match none of the model's {len(replaceable)} replaceable layers ({shown})"
    else:
        root = dense_layer(model)
        found = "find no layer to replace" + (
            f" (the root module, a {root.kind}, is never replaced: wrap it in nn.Sequential)" if root else ""
        )
    return SurgeryError(
        f"structurize: {asked} {found}; replaceable types: {REPLACEABLE}; leaf layer types in the model: {types}"
    )


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
    index: int = 0,
) -> StructurizeSummary:
    """Replace the matching dense layers of ``model`` (in place) with :class:`EinsumLinear`.

    ``spec`` is a spec, a spec string, or an exported JSON file (``structsearch export``), of
    whose ranked specs ``index`` picks one (0: the best). The dense layers are ``nn.Linear``
    and Hugging Face ``Conv1D`` (GPT-2's projections, weight stored (d_in, d_out)).
    ``include``/``exclude`` are fnmatch patterns over dotted module names (``"blocks.*.mlp.*"``);
    when they select nothing, :class:`SurgeryError` says so.
    ``init="project"`` fits each new layer to the dense weight it replaces and reports the
    relative Frobenius error. A layer whose sizes need more than ``max_padding`` raises
    :class:`SizeError` naming it, or is left dense with ``skip_invalid=True``. A layer whose
    weight is tied to another parameter (GPT-2's ``lm_head`` and token embedding), or that its
    parent reads by weight (``nn.MultiheadAttention.out_proj``), is left dense, and the summary
    says why. An error leaves the model unchanged.

    >>> model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> summary = structurize(model, "btt", exclude="2")
    >>> [(c.name, c.params_before, c.params_after) for c in summary.layers]
    [('0', 256, 128)]
    """
    if not isinstance(model, nn.Module):
        raise SurgeryError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    parsed = load_spec(spec, index=index)
    if init not in INIT_MODES:
        raise SpecError(f"init: expected one of {', '.join(INIT_MODES)}, got {init!r}")
    includes, excludes = _patterns(include, "include"), _patterns(exclude, "exclude")
    targets: list[tuple[str, DenseLayer]] = []
    for name, module in model.named_modules():
        dense = dense_layer(module) if name else None  # the root module cannot replace itself
        if (
            dense is not None
            and any(fnmatchcase(name, p) for p in includes)
            and not any(fnmatchcase(name, p) for p in excludes)
        ):
            targets.append((name, dense))
    if not targets:
        raise _nothing_to_replace(model, includes, excludes)
    summary = StructurizeSummary(spec=parsed.name or parsed.paper, init=init)
    owners: dict[int, list[str]] = {}  # id(param) -> every name it goes by (tied weights have several)
    for pname, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(pname)
    built: list[tuple[str, nn.Module]] = []  # swapped in once all are built: an error leaves the model as it was
    for name, dense in targets:
        before = dense.d_in * dense.d_out
        weight = dense.weight
        tied = [other for other in owners.get(id(weight), []) if other != f"{name}.weight"]
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        note = None
        if tied:  # e.g. GPT-2's lm_head shares the token embedding: replacing it would untie them
            note = f"weight tied to {tied[0]!r}; replacing it would untie them (exclude it, or untie first)"
        elif isinstance(parent, nn.MultiheadAttention) and child == "out_proj":
            note = "nn.MultiheadAttention passes out_proj.weight to its attention kernel and never calls out_proj"
        if note is not None:
            change = LayerChange(name, dense.d_in, dense.d_out, before, before, before, before, kind=dense.kind)
            summary.layers.append(replace(change, skipped=note))
            continue
        try:
            layer = make_layer(
                parsed,
                dense.d_in,
                dense.d_out,
                bias=dense.bias is not None,
                device=weight.device,
                dtype=weight.dtype,
                max_padding=max_padding,
            )
        except SizeError as err:
            if not skip_invalid:
                raise SizeError(f"layer {name!r}: {err}") from err
            summary.layers.append(
                LayerChange(
                    name, dense.d_in, dense.d_out, before, before, before, before, skipped=str(err), kind=dense.kind
                )
            )
            continue
        error = None
        if init == "project":
            error = project_dense(layer, dense.matrix, dense.bias, fit_steps=fit_steps)
        layer.train(dense.module.training)
        layer.requires_grad_(weight.requires_grad)  # a frozen layer stays frozen
        built.append((name, layer))
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
                kind=dense.kind,
            )
        )
    for name, layer in built:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer)
    _close_fused_encoder_paths(model)
    return summary


def _close_fused_encoder_paths(model: nn.Module) -> None:
    """Send structured torch Transformer encoders down their unfused path, which calls the layers.

    In eval mode ``nn.TransformerEncoderLayer`` (and ``nn.TransformerEncoder``, for nested
    tensors) hand ``linear1.weight`` and ``linear2.weight`` to a fused kernel instead of calling
    them; a structured layer has no dense weight. ``activation_relu_or_gelu`` and
    ``use_nested_tensor`` only gate those fused paths: turning them off computes the same.
    """
    structured = set()
    for module in model.modules():
        if isinstance(module, nn.TransformerEncoderLayer) and not (
            isinstance(module.linear1, nn.Linear) and isinstance(module.linear2, nn.Linear)
        ):
            module.activation_relu_or_gelu = 0
            structured.add(id(module))
    for module in model.modules():
        if isinstance(module, nn.TransformerEncoder) and any(id(m) in structured for m in module.layers):
            module.use_nested_tensor = False


def linear_factory(spec: SpecLike, *, index: int = 0, **kwargs: Any) -> Callable[..., nn.Module]:
    """``factory(d_in, d_out, bias=True)`` building the spec's layer (``index``: which spec of an exported file).

    The dense spec gives a plain ``nn.Linear`` (the fastest dense path) with the same
    spectral initialisation; any other spec an :class:`EinsumLinear`.
    """
    parsed = load_spec(spec, index=index)
    if parsed.name == "dense":

        def dense(d_in: int, d_out: int, bias: bool = True) -> nn.Module:
            factory = {k: kwargs[k] for k in ("device", "dtype") if k in kwargs}
            return init_linear_(nn.Linear(d_in, d_out, bias=bias, **factory))

        return dense

    def structured(d_in: int, d_out: int, bias: bool = True) -> nn.Module:
        return make_layer(parsed, d_in, d_out, bias=bias, **kwargs)

    return structured
