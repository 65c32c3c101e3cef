"""What a structure is: a validated, immutable point theta of the 7-class einsum space.

A spec is parsed once from any of the accepted forms and never changes afterwards:

- the paper's notation ``"(a|b|g|d|e|f|r)"`` (decimals or fractions such as ``1/2``),
- a JSON object (or mapping) keyed ``alpha`` .. ``rho``,
- a named structure with an optional exponent: ``dense``, ``low-rank:0.5``,
  ``kronecker``, ``sum-kronecker:0.25``, ``btt``, ``monarch``, ``btt:0.25``, ``tt:0.25``;
- a routed structure (taxonomy.md 6): ``btt-moe:experts=8,k=2``, or any BTT-family theta
  with rho = 0 followed by ``moe:experts=E,k=K`` (``"(1/3|0|2/3|0|2/3|1/3|0) moe:experts=4,k=1"``),
  or a JSON object with a ``"moe": {"experts": E, "k": K}`` key. Its rank index is the E
  experts (rank-one BTT terms), of which each token uses k.

Nothing here imports torch or optuna.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from structsearch.errors import SpecError

__all__ = [
    "CLASSES",
    "FILE_FORMAT",
    "FILE_VERSION",
    "INPUT_CLASSES",
    "OUTPUT_CLASSES",
    "SUM_TOLERANCE",
    "Routing",
    "Spec",
    "SpecLike",
    "as_fraction",
    "known_name",
    "load_spec",
    "named_structures",
    "parse_spec",
    "routing",
]

CLASSES: tuple[str, ...] = ("alpha", "beta", "gamma", "delta", "epsilon", "phi", "rho")
INPUT_CLASSES: tuple[str, ...] = ("alpha", "beta", "gamma")
OUTPUT_CLASSES: tuple[str, ...] = ("delta", "epsilon", "phi")
SUM_TOLERANCE = 1e-6
# The header of a spec file (what `structsearch export` writes and EinsumLinear.from_spec reads).
FILE_FORMAT = "structsearch.specs"
FILE_VERSION = 1


def as_fraction(value: float, max_denominator: int = 1000) -> Fraction:
    """The simple fraction a float exponent stands for (``0.3333333`` -> ``1/3``).

    >>> as_fraction(0.3333333333)
    Fraction(1, 3)
    """
    approx = Fraction(value).limit_denominator(max_denominator)
    if abs(float(approx) - value) <= 1e-9:
        return approx
    return Fraction(value)


class Routing(BaseModel):
    """Top-k routing over the rank index: E experts (rank-one terms), k of them per token.

    >>> routing(8, 2).label
    'experts=8,k=2'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    experts: int = Field(description="E: rank-one BTT terms (experts) in the layer")
    k: int = Field(description="experts each token is routed to")

    @model_validator(mode="after")
    def _k_within_experts(self) -> Routing:
        problem = _routing_problem(self.experts, self.k)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def label(self) -> str:
        return f"experts={self.experts},k={self.k}"


def _routing_problem(experts: object, k: object) -> str | None:
    for key, value in (("experts", experts), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"btt-moe: {key} must be an integer, got {value!r}"
    if experts < 1:  # type: ignore[operator]
        return f"btt-moe: experts must be >= 1, got experts={experts}"
    if not 1 <= k <= experts:  # type: ignore[operator]
        return f"btt-moe: k must be between 1 and experts={experts}, got k={k}"
    return None


def routing(experts: object, k: object) -> Routing:
    """Validated routing; a bad E or k raises a one-line :class:`SpecError`.

    >>> routing(8, 9)
    Traceback (most recent call last):
    ...
    structsearch.errors.SpecError: btt-moe: k must be between 1 and experts=8, got k=9
    """
    problem = _routing_problem(experts, k)
    if problem:
        raise SpecError(problem)
    return Routing(experts=experts, k=k)  # type: ignore[arg-type]


class Spec(BaseModel):
    """A point theta of the two-core einsum space (taxonomy.md section 1).

    >>> Spec.parse("(0.5|0|0.5|0|0.5|0.5|0)").paper
    '(1/2|0|1/2|0|1/2|1/2|0)'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(ge=0.0, le=1.0, description="input index consumed by A")
    beta: float = Field(ge=0.0, le=1.0, description="input index consumed by B")
    gamma: float = Field(ge=0.0, le=1.0, description="input index shared by A and B")
    delta: float = Field(ge=0.0, le=1.0, description="output index produced by A")
    epsilon: float = Field(ge=0.0, le=1.0, description="output index produced by B")
    phi: float = Field(ge=0.0, le=1.0, description="output index shared by A and B")
    rho: float = Field(ge=0.0, le=1.0, description="rank index between the cores")
    moe: Routing | None = Field(default=None, description="top-k routing over E rank-one terms (BTT-MoE)")

    @model_validator(mode="after")
    def _exponents_sum_to_one(self) -> Spec:
        for side, names in (("input", INPUT_CLASSES), ("output", OUTPUT_CLASSES)):
            total = sum(getattr(self, n) for n in names)
            if abs(total - 1.0) > SUM_TOLERANCE:
                raise ValueError(
                    f"{side} exponents {'+'.join(names)} must sum to 1 (tolerance {SUM_TOLERANCE:g}), got {total:.6g}"
                )
        if self.moe is not None and (self.beta, self.delta, self.rho) != (0, 0, 0):
            raise ValueError(
                "moe: routing needs a BTT-family theta (beta = delta = 0) with rho = 0 (the experts are "
                f"the rank index), got {self.base.paper}"
            )
        return self

    # -- construction -------------------------------------------------------------
    @classmethod
    def parse(cls, value: str | Mapping[str, Any] | Sequence[float] | Spec) -> Spec:
        """Parse any accepted form; see :func:`parse_spec`."""
        return parse_spec(value)

    @classmethod
    def from_theta(cls, theta: Sequence[float]) -> Spec:
        """Build from seven numbers in the order alpha..rho."""
        if len(theta) != len(CLASSES):
            raise SpecError(f"theta: expected 7 entries (alpha..rho), got {len(theta)}")
        return _validated(dict(zip(CLASSES, (float(t) for t in theta), strict=True)))

    # -- views -------------------------------------------------------------------
    @property
    def theta(self) -> tuple[float, ...]:
        """The seven exponents in the order alpha..rho."""
        return tuple(getattr(self, c) for c in CLASSES)

    @property
    def fractions(self) -> tuple[Fraction, ...]:
        """The exponents as the simple fractions they stand for."""
        return tuple(as_fraction(t) for t in self.theta)

    @property
    def paper(self) -> str:
        """The paper's notation, with simple fractions where the float is one (and the routing, if any)."""
        theta = "(" + "|".join(str(f) for f in self.fractions) + ")"
        return theta if self.moe is None else f"{theta} moe:{self.moe.label}"

    @property
    def base(self) -> Spec:
        """The theta without routing (for a routed spec, one expert's structure)."""
        return self if self.moe is None else Spec(**self.as_dict())

    def routed(self, moe: Routing | None) -> Spec:
        """This theta with ``moe`` routing (validated: BTT family, rho = 0)."""
        return _validated({**self.as_dict(), "moe": moe})

    def document(self) -> dict[str, Any]:
        """The JSON object form: alpha..rho, plus ``moe`` when routed (what exports write)."""
        doc: dict[str, Any] = self.as_dict()
        if self.moe is not None:
            doc["moe"] = {"experts": self.moe.experts, "k": self.moe.k}
        return doc

    @property
    def name(self) -> str | None:
        """The known structure this theta is, if any (``btt``, ``low-rank:1/2``, ...)."""
        return known_name(self)

    def as_dict(self) -> dict[str, float]:
        return {c: getattr(self, c) for c in CLASSES}

    def relabelled(self) -> Spec:
        """Swap the roles of the cores: alpha<->beta and delta<->epsilon (taxonomy.md 3)."""
        t = self.as_dict()
        t["alpha"], t["beta"] = t["beta"], t["alpha"]
        t["delta"], t["epsilon"] = t["epsilon"], t["delta"]
        return Spec(**t)

    def __str__(self) -> str:
        return self.paper


# -- named structures ---------------------------------------------------------------
# Each builder takes the optional exponent after the colon (the rank exponent r).
NamedBuilder = Callable[[float | None], tuple[float, ...]]


def _require(param: float | None, default: float | None, structure: str) -> float:
    if param is None:
        if default is None:
            raise SpecError(f"{structure}: needs a rank exponent, e.g. '{structure}:0.5'")
        return default
    return param


def _no_param(structure: str, theta: tuple[float, ...]) -> NamedBuilder:
    def build(param: float | None) -> tuple[float, ...]:
        if param is not None:
            raise SpecError(f"{structure}: takes no exponent, got ':{param:g}'")
        return theta

    return build


def _ranked(structure: str, base: tuple[float, ...], default: float | None) -> NamedBuilder:
    def build(param: float | None) -> tuple[float, ...]:
        r = _require(param, default, structure)
        return (*base[:6], r)

    return build


_h, _q = 0.5, 0.25
_NAMED: dict[str, NamedBuilder] = {
    "dense": _no_param("dense", (1, 0, 0, 1, 0, 0, 0)),
    "low-rank": _ranked("low-rank", (1, 0, 0, 0, 1, 0, 0), default=0.5),
    "kronecker": _no_param("kronecker", (_h, _h, 0, _h, _h, 0, 0)),
    "sum-kronecker": _ranked("sum-kronecker", (_h, _h, 0, _h, _h, 0, 0), default=0.25),
    "btt": _ranked("btt", (_h, 0, _h, 0, _h, _h, 0), default=0.0),
    "monarch": _no_param("monarch", (_h, 0, _h, 0, _h, _h, 0)),
    "tt": _ranked("tt", (_h, _q, _q, _q, _h, _q, 0), default=0.0),
}
# Names that print for a theta: the first registered match wins (btt before monarch).
_CANONICAL_NAMES = ("dense", "kronecker", "btt", "low-rank", "sum-kronecker", "tt")


_ROUTED_DEFAULT = (8, 2)  # btt-moe with no options: E = 8 experts, k = 2 per token


def named_structures() -> tuple[str, ...]:
    """The registered structure names, for error messages and ``--help``."""
    return (*_NAMED, "btt-moe")


def known_name(spec: Spec, tol: float = 1e-9) -> str | None:
    """The name a theta is known by, with its exponent where it has one.

    >>> known_name(Spec.from_theta((1, 0, 0, 0, 1, 0, 0.5)))
    'low-rank:1/2'
    """
    if spec.moe is not None:
        return f"btt-moe:{spec.moe.label}" if known_name(spec.base) == "btt" else None
    theta = spec.theta
    for name in _CANONICAL_NAMES:
        builder = _NAMED[name]
        try:
            base = builder(None) if name in ("dense", "kronecker") else builder(theta[6])
        except SpecError:
            continue
        if all(abs(a - b) <= tol for a, b in zip(base, theta, strict=True)):
            if name in ("dense", "kronecker") or (name in ("btt", "tt") and theta[6] == 0):
                return name
            return f"{name}:{as_fraction(theta[6])}"
    return None


# -- parsing ------------------------------------------------------------------------
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([0-9]*\.?[0-9]+)\s*)?$")


def _parse_number(text: str, where: str) -> float:
    match = _NUMBER.match(text)
    if not match:
        stripped = text.strip()
        if stripped.startswith("-"):
            raise SpecError(f"{where}: must be >= 0, got {stripped}")
        raise SpecError(f"{where}: expected a number or fraction like 1/2, got {text.strip()!r}")
    num = float(match.group(1))
    if match.group(2) is None:
        return num
    den = float(match.group(2))
    if den == 0:
        raise SpecError(f"{where}: division by zero in {text.strip()!r}")
    return num / den


def _validated(fields: Mapping[str, Any]) -> Spec:
    try:
        return Spec(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        where = f"theta.{loc}" if loc else "theta"
        got = f", got {first['input']!r}" if loc and "input" in first else ""
        raise SpecError(f"{where}: {msg}{got}") from None


def _routing_from_mapping(raw: Any) -> Routing:
    if not isinstance(raw, Mapping) or set(raw) - {"experts", "k"}:
        raise SpecError(f'theta.moe: expected an object {{"experts": E, "k": K}}, got {raw!r}')
    return routing(raw.get("experts", _ROUTED_DEFAULT[0]), raw.get("k", _ROUTED_DEFAULT[1]))


def _parse_routing(text: str, where: str) -> Routing:
    """``experts=8,k=2`` (either may be left out: 8 and 2)."""
    values = dict(zip(("experts", "k"), _ROUTED_DEFAULT, strict=True))
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = (s.strip() for s in part.partition("="))
        if key not in values or not eq or not re.fullmatch(r"-?[0-9]+", value):
            raise SpecError(f"{where}: expected options like experts=8,k=2, got {text.strip()!r}")
        values[key] = int(value)
    return routing(values["experts"], values["k"])


def _from_mapping(obj: Mapping[str, Any]) -> Spec:
    if "moe" in obj:
        moe = _routing_from_mapping(obj["moe"])
        return _from_mapping({key: value for key, value in obj.items() if key != "moe"}).routed(moe)
    unknown = sorted(set(obj) - set(CLASSES))
    if unknown:
        raise SpecError(f"theta: unknown key(s) {', '.join(unknown)}; expected {', '.join(CLASSES)}")
    missing = [c for c in CLASSES if c not in obj]
    if missing:
        raise SpecError(f"theta: missing key(s) {', '.join(missing)}")
    values: dict[str, float] = {}
    for key in CLASSES:
        raw = obj[key]
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise SpecError(f"theta.{key}: expected a number, got {raw!r}")
        value = _parse_number(raw, f"theta.{key}") if isinstance(raw, str) else float(raw)
        if not math.isfinite(value):
            raise SpecError(f"theta.{key}: must be finite, got {raw!r}")
        values[key] = value
    return _validated(values)


def _from_paper(text: str) -> Spec:
    inner = text.strip()
    close = inner.find(")")
    if inner.startswith("(") and 0 < close < len(inner) - 1:  # a routing suffix: "(...) moe:experts=8,k=2"
        suffix = inner[close + 1 :].strip()
        if not suffix.startswith("moe:"):
            raise SpecError(f"theta: unexpected {suffix!r} after the theta; a routing suffix reads moe:experts=8,k=2")
        return _from_paper(inner[: close + 1]).routed(_parse_routing(suffix[4:], "moe"))
    if not (inner.startswith("(") and inner.endswith(")")):
        raise SpecError(f"theta: paper notation needs parentheses, e.g. (1/2|0|1/2|0|1/2|1/2|0), got {text!r}")
    body = inner[1:-1]
    parts = body.split("|" if "|" in body else ",")  # the paper writes |, taxonomy.md's tables commas
    if len(parts) != len(CLASSES):
        raise SpecError(
            "theta: expected 7 entries separated by '|' or ',' (alpha|beta|gamma|delta|epsilon|phi|rho), "
            f"got {len(parts)}"
        )
    return _validated({c: _parse_number(p, f"theta.{c}") for c, p in zip(CLASSES, parts, strict=True)})


def _from_name(text: str) -> Spec:
    name, _, param_text = text.strip().lower().partition(":")
    if name == "btt-moe":
        return Spec.from_theta(_NAMED["btt"](None)).routed(_parse_routing(param_text, "btt-moe"))
    builder = _NAMED.get(name)
    if builder is None:
        raise SpecError(
            f"unknown structure {name!r}; expected one of {', '.join(named_structures())}, "
            "a theta like (1/2|0|1/2|0|1/2|1/2|0), or a JSON object keyed alpha..rho"
        )
    param = _parse_number(param_text, f"{name} exponent") if param_text else None
    return Spec.from_theta(builder(param))


def parse_spec(value: str | Mapping[str, Any] | Sequence[float] | Spec) -> Spec:
    """Parse a theta from any accepted form into a validated :class:`Spec`.

    >>> parse_spec("btt").paper
    '(1/2|0|1/2|0|1/2|1/2|0)'
    >>> parse_spec({"alpha": 1, "beta": 0, "gamma": 0, "delta": 0, "epsilon": 1, "phi": 0, "rho": 0.5}).name
    'low-rank:1/2'
    """
    if isinstance(value, Spec):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise SpecError(f"theta: cannot parse {type(value).__name__}; decode it to a string first")
    if isinstance(value, Mapping) and not all(isinstance(k, str) for k in value):
        bad = next(k for k in value if not isinstance(k, str))
        raise SpecError(f"theta: keys must be the strings alpha..rho, got a {type(bad).__name__} key")
    try:
        return _parse(value)
    except SpecError as err:
        if "\n" in str(err) or "\r" in str(err):  # a key or value with a line break, quoted as it came
            raise SpecError(" ".join(str(err).splitlines())) from None
        raise
    except RecursionError:
        raise SpecError("theta: nested too deeply to be a theta") from None
    except (ValueError, TypeError, OverflowError) as err:  # huge integers, odd element types, ...
        raise SpecError(f"theta: cannot read a {type(value).__name__} as a theta ({_short(err)})") from None


# What load_spec (and so every layer factory, evaluate and the CLI) takes as a structure.
SpecLike = Spec | str | Mapping[str, Any] | os.PathLike


def _spec_from_document(doc: Any, where: str, index: int) -> Spec:
    """A bare theta object, or an export document with a "specs" list of {"theta": ...} entries."""
    if isinstance(doc, Mapping) and "specs" in doc:
        if doc.get("format", FILE_FORMAT) != FILE_FORMAT:
            raise SpecError(f"{where}: format {doc.get('format')!r} is not {FILE_FORMAT!r}")
        version = doc.get("version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FILE_VERSION:
            raise SpecError(f"{where}: version {version!r} is not one this structsearch reads (1-{FILE_VERSION})")
        specs = doc["specs"]
        if not isinstance(specs, list) or not specs:
            raise SpecError(f"{where}: 'specs' must be a non-empty list")
        if not -len(specs) <= index < len(specs):
            raise SpecError(f"{where}: spec index {index} out of range for {len(specs)} specs")
        entry = specs[index]
        if not isinstance(entry, Mapping) or "theta" not in entry:
            raise SpecError(f"{where}: specs[{index}] needs a 'theta' object")
        doc, where = entry["theta"], f"{where}: specs[{index}].theta"
    elif isinstance(doc, Mapping) and "theta" in doc and not set(doc) & set(CLASSES):
        doc, where = doc["theta"], f"{where}: theta"
    try:
        return parse_spec(doc)
    except SpecError as err:
        raise SpecError(f"{where}: {err}") from None


def load_spec(spec_or_path: SpecLike, index: int = 0) -> Spec:
    """A spec from a Spec, a spec string, a theta mapping, or a path to an exported JSON file.

    >>> load_spec("btt").paper
    '(1/2|0|1/2|0|1/2|1/2|0)'
    """
    if isinstance(spec_or_path, Spec):
        return spec_or_path
    is_path = isinstance(spec_or_path, os.PathLike) or (
        isinstance(spec_or_path, str) and spec_or_path.strip().endswith(".json")
    )
    text = spec_or_path if isinstance(spec_or_path, str) else None
    if text is not None and not is_path and not text.strip().startswith("{") and "\x00" not in text:
        is_path = os.path.isfile(text)
        if (os.sep in text or text.startswith(".")) and os.path.isdir(text):
            raise SpecError(f"{text}: is a folder; expected a spec file (such as runs/<study>/best.json)")
    if not is_path:
        return parse_spec(spec_or_path)  # type: ignore[arg-type]
    if isinstance(index, bool) or not isinstance(index, int):
        raise SpecError(f"index: expected an integer, got {index!r}")
    path = Path(spec_or_path)  # type: ignore[arg-type]
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise SpecError(f"{path}: cannot read spec file ({err.strerror or err})") from None
    except json.JSONDecodeError as err:
        raise SpecError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text (byte {err.start}); expected a JSON spec file") from None
    except (ValueError, RecursionError) as err:  # integers too long to convert, nesting too deep
        raise SpecError(f"{path}: cannot read the JSON ({type(err).__name__}: {str(err)[:200]})") from None
    return _spec_from_document(doc, str(path), index)


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:200]


def _parse(value: str | Mapping[str, Any] | Sequence[float]) -> Spec:
    if isinstance(value, Mapping):
        return _from_mapping(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise SpecError("theta: empty string; expected a theta, a structure name or a JSON object")
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as err:
                raise SpecError(f"theta: invalid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(obj, dict):
                raise SpecError("theta: JSON must be an object keyed alpha..rho")
            return _from_mapping(obj)
        if text.startswith("(") or "|" in text:
            return _from_paper(text)
        return _from_name(text)
    if isinstance(value, Sequence):
        return Spec.from_theta(value)
    raise SpecError(f"theta: cannot parse a {type(value).__name__}")
