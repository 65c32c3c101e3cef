"""Integer class sizes of a spec at concrete layer sizes, and the padding they imply.

d_c = d_in^t_c for input classes, d_out^t_c for output classes and
min(d_in, d_out)^t_rho for the rank class, rounded to integers >= 1 (taxonomy.md 1).
Rounding every class independently can leave the product of the input classes
below d_in (silently dropping input features) or far above it; so on each side the
class with the largest exponent absorbs the remainder: it becomes
ceil(d / product of the others), the smallest size that covers the side. The layer pads x with zeros and truncates
y, and both ratios are reported (never hidden); more than ``MAX_PADDING`` is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from structsearch.errors import SizeError
from structsearch.spec import CLASSES, INPUT_CLASSES, OUTPUT_CLASSES, Spec

__all__ = ["MAX_PADDING", "ClassSizes", "check_layer_sizes", "class_sizes"]

MAX_PADDING = 0.15


@dataclass(frozen=True)
class ClassSizes:
    """The seven integer class sizes and how they cover d_in and d_out."""

    alpha: int
    beta: int
    gamma: int
    delta: int
    epsilon: int
    phi: int
    rho: int
    d_in: int
    d_out: int

    @property
    def as_dict(self) -> dict[str, int]:
        return {c: getattr(self, c) for c in CLASSES}

    @property
    def padded_in(self) -> int:
        """Product of the input classes (>= d_in): the length x is zero-padded to."""
        return self.alpha * self.beta * self.gamma

    @property
    def padded_out(self) -> int:
        """Product of the output classes (>= d_out): y is truncated from this length."""
        return self.delta * self.epsilon * self.phi

    @property
    def padding_in(self) -> float:
        """Relative input padding, (padded_in - d_in) / d_in."""
        return self.padded_in / self.d_in - 1.0

    @property
    def padding_out(self) -> float:
        """Relative output padding, (padded_out - d_out) / d_out."""
        return self.padded_out / self.d_out - 1.0

    @property
    def padding(self) -> float:
        """The larger of the two relative paddings."""
        return max(self.padding_in, self.padding_out)


def check_layer_sizes(d_in: object, d_out: object) -> tuple[int, int]:
    """Validate layer sizes: positive integers."""
    for name, value in (("d_in", d_in), ("d_out", d_out)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SizeError(f"{name}: expected a positive integer, got {value!r}")
        if value <= 0:
            raise SizeError(f"{name}: must be > 0, got {value}")
    return int(d_in), int(d_out)  # type: ignore[call-overload]


# Relabelling the cores (alpha <-> beta with delta <-> epsilon, taxonomy.md 3) gives the same
# operator family; a tie between the swapped classes is broken by their partners on the other
# side, so that a theta and its relabelled equivalent get swapped sizes, not merely similar ones.
_PARTNER = {"alpha": "delta", "beta": "epsilon", "delta": "alpha", "epsilon": "beta"}


def _absorber(names: tuple[str, ...], spec: Spec) -> str:
    """The class of one side that absorbs its remainder: the largest exponent.

    Ties go to the first in class order, except a tie of the two swapped classes (alpha and
    beta, or delta and epsilon), which goes to the one whose partner on the other side has the
    larger exponent (the first on a tie there too, where the relabelling leaves theta as it is).
    """
    top = max(getattr(spec, n) for n in names)
    tied = [n for n in names if getattr(spec, n) == top]
    swapped = [n for n in tied if n in _PARTNER]
    if len(swapped) == 2:
        first, second = swapped
        return second if getattr(spec, _PARTNER[second]) > getattr(spec, _PARTNER[first]) else first
    return tied[0]


def _cover(sizes: dict[str, int], names: tuple[str, ...], spec: Spec, target: int) -> None:
    """Let the class with the largest exponent absorb the remainder of the side."""
    largest = _absorber(names, spec)
    others = math.prod(sizes[n] for n in names if n != largest)
    sizes[largest] = max(1, -(-target // others))


def class_sizes(spec: Spec, d_in: int, d_out: int, max_padding: float | None = MAX_PADDING) -> ClassSizes:
    """Integer class sizes of ``spec`` for a d_in -> d_out layer.

    >>> class_sizes(Spec.parse("btt"), 1024, 1024).as_dict
    {'alpha': 32, 'beta': 1, 'gamma': 32, 'delta': 1, 'epsilon': 32, 'phi': 32, 'rho': 1}
    >>> round(class_sizes(Spec.parse("(1/3|0|2/3|0|1/3|2/3|0)"), 1024, 1024).padding, 4)
    0.0059
    """
    d_in, d_out = check_layer_sizes(d_in, d_out)
    base = {"rho": min(d_in, d_out)}
    base.update(dict.fromkeys(INPUT_CLASSES, d_in))
    base.update(dict.fromkeys(OUTPUT_CLASSES, d_out))
    # exp(t log d) rather than d ** t: the vectorised batch path computes it the same way
    sizes = {c: max(1, round(math.exp(getattr(spec, c) * math.log(base[c])))) for c in CLASSES}
    _cover(sizes, INPUT_CLASSES, spec, d_in)
    _cover(sizes, OUTPUT_CLASSES, spec, d_out)
    result = ClassSizes(**sizes, d_in=d_in, d_out=d_out)
    if max_padding is not None and result.padding > max_padding:
        side, ratio = (
            ("input", result.padding_in) if result.padding_in >= result.padding_out else ("output", result.padding_out)
        )
        padded, actual = (result.padded_in, d_in) if side == "input" else (result.padded_out, d_out)
        raise SizeError(
            f"{spec.paper} at d_in={d_in}, d_out={d_out}: {side} classes multiply to {padded}, "
            f"{ratio:.1%} padding over {actual} (limit {max_padding:.0%}; max_padding= raises it, None lifts it)"
        )
    return result
