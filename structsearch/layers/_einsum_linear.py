"""``EinsumLinear``: a linear layer whose weight is the two-core contraction of a spec.

y = (x . A) . B + bias, with x zero-padded to the product of the input classes and y
truncated from the product of the output classes (taxonomy.md 1). Everything is validated
and decided in ``__init__`` (sizes, padding, which contraction path runs); ``forward`` only
reshapes and multiplies.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structsearch.errors import SpecError
from structsearch.layers._fast_paths import (
    PATHS,
    broadcast_contract,
    btt_contract,
    dense_contract,
    general_contract,
    has_unit_contraction,
    kronecker_contract,
    materialise_from,
    materialise_weight,
    materialised_contract,
    select_path,
)
from structsearch.layers._init import CoreInfo, init_core_
from structsearch.sizes import MAX_PADDING, check_layer_sizes
from structsearch.spec import CLASSES, SpecLike, load_spec
from structsearch.taxonomy import Taxonomy, analyze

__all__ = ["EinsumLinear"]

_CORE_CLASSES = {"A": ("phi", "delta", "rho", "gamma", "alpha"), "B": ("phi", "epsilon", "rho", "gamma", "beta")}


def check_input_width(layer: nn.Module, x: Tensor) -> None:
    """Inputs (..., layer.d_in), as nn.Linear checks, instead of a reshape's puzzling message."""
    if x.shape[-1:] != (layer.d_in,):
        raise RuntimeError(f"{type(layer).__name__}: expected inputs (..., {layer.d_in}), got {tuple(x.shape)}")


class EinsumLinear(nn.Module):
    """A d_in -> d_out linear layer structured by a spec theta (taxonomy.md 1).

    Parameters ``A ~ (gamma, alpha, rho, phi, delta)`` and ``B ~ (phi, gamma, beta, rho,
    epsilon)`` (the taxonomy's cores, axes ordered for batched matmuls), and ``bias``.
    ``params`` and ``macs`` are the taxonomy's numbers; ``cores`` lists each core's fan-in
    and fan-out for :func:`param_groups`; ``to_dense()`` is the d_out x d_in weight.
    ``path`` is how ``forward`` computes (docs/layers.md, "Contraction paths"):
    ``structural_path`` is the fastest contraction through the cores, and ``"materialised"``
    means calls of at least ``materialise_from`` vectors multiply by the weight built from them.

    >>> layer = EinsumLinear("btt", 64, 64)
    >>> layer.params, layer.macs, layer.path
    (1024, 1024, 'btt')
    >>> small = EinsumLinear("btt", 16, 16)  # 128 MACs, half of dense's: one GEMM by W is faster
    >>> small.path, small.structural_path, small.materialise_from
    ('materialised', 'btt', 4)
    """

    def __init__(
        self,
        spec: SpecLike,
        d_in: int,
        d_out: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        max_padding: float | None = MAX_PADDING,
        zero_init: bool = False,
        path: str | None = None,
    ) -> None:
        super().__init__()
        self.spec = load_spec(spec)
        if self.spec.moe is not None:
            raise SpecError(
                f"{self.spec.name or self.spec.paper}: a routed spec builds a BTTMoE; use BTTMoE, "
                "EinsumLinear.from_spec or structurize"
            )
        self.d_in, self.d_out = check_layer_sizes(d_in, d_out)
        self.taxonomy: Taxonomy = analyze(self.spec, self.d_in, self.d_out, max_padding=max_padding)
        sizes = self.taxonomy.dims
        self.dims: dict[str, int] = sizes.as_dict
        self.padded_in, self.padded_out = sizes.padded_in, sizes.padded_out
        self.padding_in, self.padding_out = sizes.padding_in, sizes.padding_out
        # A core whose classes all have exponent 0 has no index: a scalar folded into the
        # other core (the taxonomy counts neither its parameter nor a step for it).
        present = {name: any(getattr(self.spec, c) != 0 for c in classes) for name, classes in _CORE_CLASSES.items()}
        # structural_path: the fastest way through the cores; path: what forward runs (the
        # materialised weight instead, from materialise_from vectors per call, where one GEMM by
        # it is faster: _fast_paths.materialise_from)
        self.structural_path = select_path(self.dims, present)
        threshold, applicable = None, {self.structural_path, "general"}
        if self.structural_path != "dense":  # the dense point has one core: no outer product, nothing to build
            threshold = materialise_from(
                self.taxonomy.macs, self.dims["rho"], self.d_in, self.d_out, self.padded_in, self.padded_out
            )
            applicable |= {"materialised"} | ({"broadcast"} if has_unit_contraction(self.dims) else set())
        default = "materialised" if threshold is not None else self.structural_path
        if path is not None and path not in PATHS:
            raise SpecError(f"path: expected one of {', '.join(PATHS)}, got {path!r}")
        if path is not None and path not in applicable:
            raise SpecError(
                f"path: {path!r} does not apply to {self.spec.paper} at {self.d_in}x{self.d_out}; "
                f"expected one of {', '.join(sorted(applicable))}"
            )
        self.path = path or default
        # Calls with fewer vectors run the structural path (the weight's build would not pay);
        # a path="materialised" the caller asked for materialises every call.
        self.materialise_from = (0 if path else threshold) if self.path == "materialised" else None

        a, b, g, d, e, f, r = (self.dims[c] for c in CLASSES)
        factory = {"device": device, "dtype": dtype}
        # (name, shape, fan_in, fan_out, batch) of each core, taxonomy.md 5
        layouts = (("A", (g, a, r, f, d), a, d * f * r, g), ("B", (f, g, b, r, e), b * g * r, e, f))
        self._fans = tuple((name, fi, fo, bt) for name, _, fi, fo, bt in layouts if present[name])
        for name, shape, *_ in layouts:
            param = nn.Parameter(torch.empty(shape, **factory)) if present[name] else None
            self.register_parameter(name, param)
        self.bias = nn.Parameter(torch.empty(self.d_out, **factory)) if bias else None
        self.reset_parameters(zero_init=zero_init)

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec_or_path: SpecLike, d_in: int, d_out: int, *, index: int = 0, **kwargs: Any) -> nn.Module:
        """Build from a spec, a spec string, or an exported JSON file (bare theta or ``{"specs": [...]}``).

        A routed spec (``btt-moe:experts=8,k=2``) gives a :class:`~structsearch.layers.BTTMoE`.
        """
        spec = load_spec(spec_or_path, index=index)
        if spec.moe is not None:
            from structsearch.layers._moe import make_layer

            return make_layer(spec, d_in, d_out, **kwargs)
        return cls(spec, d_in, d_out, **kwargs)

    def reset_parameters(self, zero_init: bool = False) -> None:
        """Spectral init of both cores (``zero_init``: B starts at zero, so y starts at zero); zero bias."""
        cores = self.cores
        for k, core in enumerate(cores):
            init_core_(core, zero=zero_init and k == len(cores) - 1)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @property
    def cores(self) -> tuple[CoreInfo, ...]:
        """Each core as a batch of fan_in x fan_out matrices (for init and :func:`param_groups`)."""
        return tuple(CoreInfo(name, getattr(self, name), fi, fo, bt) for name, fi, fo, bt in self._fans)

    # -- counts --------------------------------------------------------------------------
    @property
    def params(self) -> int:
        """Weight parameters of the two cores (the taxonomy's count; the bias is extra)."""
        return self.taxonomy.params

    @property
    def macs(self) -> int:
        """Multiply-accumulates per input vector, order x.A then .B (the taxonomy's count)."""
        return self.taxonomy.macs

    @property
    def padding(self) -> float:
        return max(self.padding_in, self.padding_out)

    # -- compute ---------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        check_input_width(self, x)
        batch = x.shape[:-1]
        core_a, core_b, bias = self.A, self.B, self.bias
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
            x = x.to(dtype)
            core_a, core_b, bias = (None if t is None else t.to(dtype) for t in (core_a, core_b, bias))
        with torch.autocast(x.device.type, enabled=False):
            y = self._contract(x.reshape(-1, self.d_in), core_a, core_b, bias)  # (n, d_out)
        return y.reshape(*batch, self.d_out)

    def _contract(self, x: Tensor, core_a: Tensor | None, core_b: Tensor | None, bias: Tensor | None) -> Tensor:
        """x (n, d_in) -> y (n, d_out), bias included."""
        path = self.path
        if path == "materialised":
            if x.shape[0] >= self.materialise_from:  # W is sliced to d_out x d_in: no padding, no truncation
                return materialised_contract(x, core_a, core_b, bias, self.dims, self.d_in, self.d_out)
            path = self.structural_path
        if self.padded_in != self.d_in:
            x = F.pad(x, (0, self.padded_in - self.d_in))  # (n, padded_in)
        fused = bias if self.padded_out == self.d_out else None
        if path == "dense":
            y = dense_contract(x, core_a if core_b is None else core_b, fused)  # (n, padded_out)
        elif path == "btt":
            y = btt_contract(x, core_a, core_b, fused, self.dims)  # (n, padded_out)
        elif path == "kronecker":
            y = kronecker_contract(x, core_a, core_b, fused, self.dims)  # (n, padded_out)
        elif path == "broadcast":
            y = broadcast_contract(x, core_a, core_b, self.dims)  # (n, padded_out)
            if fused is not None:
                y = y + fused
        else:  # a core with no index is the scalar 1 (only when the general path is forced on the dense point)
            a, b, g, d, e, f, r = (self.dims[c] for c in CLASSES)
            core_a = x.new_ones(g, a, r, f, d) if core_a is None else core_a
            core_b = x.new_ones(f, g, b, r, e) if core_b is None else core_b
            y = general_contract(x, core_a, core_b, self.dims)  # (n, padded_out)
            if fused is not None:
                y = y + fused
        if self.padded_out != self.d_out:
            y = y[:, : self.d_out]  # (n, d_out)
            y = y + bias if bias is not None else y.contiguous()
        return y

    def to_dense(self) -> Tensor:
        """The d_out x d_in weight W with layer(x) == x @ W.T + bias (differentiable)."""
        if self.A is None or self.B is None:  # dense point: one (d_in x d_out) core
            core = self.A if self.B is None else self.B
            return core.reshape(self.padded_in, self.padded_out).t()[: self.d_out, : self.d_in]
        return materialise_weight(self.A, self.B, self.dims, self.d_in, self.d_out)  # (d_out, d_in)

    def extra_repr(self) -> str:
        name = f" {self.spec.name}" if self.spec.name else ""
        dims = " ".join(f"{c}={self.dims[c]}" for c in CLASSES if self.dims[c] > 1)
        pad = f"padding in {self.padding_in:.1%} out {self.padding_out:.1%}"
        if self.padding == 0:
            pad = "no padding"
        return (
            f"{self.spec.paper}{name}, d_in={self.d_in}, d_out={self.d_out}, bias={self.bias is not None}, "
            f"sizes[{dims or 'all 1'}], params={self.params:,}, macs={self.macs:,}, {pad}, path={self.path}"
            + (f" (from {self.materialise_from} vectors per call)" if self.materialise_from else "")
        )
