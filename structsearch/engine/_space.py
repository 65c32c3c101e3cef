"""Search spaces: which part of the 7-class einsum space a search may propose, and under which constraints.

A space is a YAML file (or mapping) validated by :class:`Space`::

    name: btt
    description: BTT / Monarch family (beta = delta = 0) with an optional rank index
    zero: [beta, delta]          # classes pinned to 0
    rho: [0, 0.5]                # range of the rank exponent
    step: 1/12                   # lattice step of every exponent; null = continuous
    constraints: {omega_max: 0.5, psi_min: 0.5, nu_max: 1, max_padding: 0.15}
    moe: {experts: 8, k: 2}      # optional: every candidate is routed (BTT-MoE); needs zero: [beta, delta, rho]

How Optuna sees a space: each side (input alpha/beta/gamma, output delta/epsilon/phi) with k free
classes is a point on a (k-1)-simplex, parameterised by k-1 stick-breaking shares in [0, 1]
(``u_<class>``; the Beta(1, k-1) transform makes uniform shares uniform on the simplex), plus
``rho`` in its range. With a ``step`` every exponent is snapped to the lattice (largest remainder
rounding keeps each side summing to exactly 1). Shipped spaces live in ``search_spaces/`` and are
found by name (:func:`available_spaces`).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from structsearch.errors import SpaceError
from structsearch.spec import CLASSES, INPUT_CLASSES, OUTPUT_CLASSES, Routing

__all__ = [
    "LATTICE_CAP",
    "SPACES_DIR",
    "Constraints",
    "Space",
    "Steering",
    "available_spaces",
    "load_space",
    "register_space",
    "space_from_mapping",
]

SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
LATTICE_CAP = 1_000_000
"""Most lattice points a space may have (the full space: 107,653 at step 1/12, 882,000 at 1/19, the finest)."""
_REGISTERED: dict[str, Space] = {}


def _number(value: Any) -> Any:
    """Accept fractions written as strings (``"1/12"``) wherever a number is expected."""
    if isinstance(value, str):
        text = value.strip()
        match = re.fullmatch(r"([-+]?[0-9]*\.?[0-9]+)\s*/\s*([0-9]*\.?[0-9]+)", text)
        if match:  # a sign is read too, so that "-1/12" meets the field's own bound ("> 0"), not a parse error
            den = float(match.group(2))
            return float(match.group(1)) / den if den else value
        try:
            return float(text)
        except ValueError:
            return value
    return value


class Constraints(BaseModel):
    """Analytic constraints; a candidate outside them is settled without training.

    ``max_params`` and ``max_macs`` count one structured layer at the reference width
    (``width x width``); the exponents are dimension-free.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    omega_max: float | None = Field(default=None, ge=0.0, description="most parameter sharing allowed")
    psi_min: float | None = Field(default=None, le=1.0, description="least rank exponent allowed")
    nu_min: float | None = Field(default=None, description="least compute exponent allowed")
    nu_max: float | None = Field(default=1.0, description="most compute exponent allowed (dense = 1)")
    max_params: int | None = Field(default=None, gt=0, description="most parameters per layer")
    max_macs: int | None = Field(default=None, gt=0, description="most MACs per input vector per layer")
    max_padding: float = Field(default=0.15, ge=0.0, le=1.0, description="most relative padding")

    @field_validator("omega_max", "psi_min", "nu_min", "nu_max", "max_padding", mode="before")
    @classmethod
    def _fractions(cls, v: Any) -> Any:
        return _number(v)

    @model_validator(mode="after")
    def _ordered(self) -> Constraints:
        if self.nu_min is not None and self.nu_max is not None and self.nu_min > self.nu_max:
            raise ValueError(f"nu_min {self.nu_min:g} must be <= nu_max {self.nu_max:g}")
        return self

    def violations(self, omega: float, psi: float, nu: float, params: int, macs: int, padding: float) -> list[str]:
        """Human-readable reasons a candidate breaks the constraints (empty when it satisfies them).

        >>> Constraints(omega_max=0.25).violations(0.5, 1.0, 0.5, 10, 10, 0.0)
        ['omega 0.5 > omega_max 0.25']
        """
        eps = 1e-9
        out = []
        if self.omega_max is not None and omega > self.omega_max + eps:
            out.append(f"omega {omega:.4g} > omega_max {self.omega_max:g}")
        if self.psi_min is not None and psi < self.psi_min - eps:
            out.append(f"psi {psi:.4g} < psi_min {self.psi_min:g}")
        if self.nu_min is not None and nu < self.nu_min - eps:
            out.append(f"nu {nu:.4g} < nu_min {self.nu_min:g}")
        if self.nu_max is not None and nu > self.nu_max + eps:
            out.append(f"nu {nu:.4g} > nu_max {self.nu_max:g}")
        if self.max_params is not None and params > self.max_params:
            out.append(f"params {params} > max_params {self.max_params}")
        if self.max_macs is not None and macs > self.max_macs:
            out.append(f"MACs {macs} > max_macs {self.max_macs}")
        if padding > self.max_padding + eps:
            out.append(f"padding {padding:.1%} > max_padding {self.max_padding:.0%}")
        return out


class Steering(BaseModel):
    """How taxonomy steering ranks candidates before and alongside the data (see ``_steering``).

    The prior score is ``omega_weight * omega - psi_weight * psi + nu_weight * nu`` (lower is
    better; the paper: little sharing and full rank win, nu matters little).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_startup: int = Field(default=3, ge=0, le=100, description="prior-chosen trials before the surrogate")
    omega_weight: float = Field(default=1.0, description="prior penalty per unit of omega")
    psi_weight: float = Field(default=1.0, description="prior reward per unit of psi")
    nu_weight: float = Field(default=0.0, description="prior penalty per unit of nu")
    prior_strength: float = Field(default=0.5, ge=0.0, description="prior mean of the surrogate, in loss std units")


class Space(BaseModel):
    """A validated search space: free classes, rho range, lattice step and constraints.

    >>> s = Space(name="btt", zero=["beta", "delta"], rho=(0, 0.5), step="1/4")
    >>> s.theta_from_params({"u_alpha": 0.5, "u_epsilon": 0.5, "rho": 0.25})
    (0.5, 0.0, 0.5, 0.0, 0.5, 0.5, 0.25)
    >>> len(s.lattice())
    75
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    zero: tuple[str, ...] = Field(default=(), description="classes pinned to exponent 0")
    rho: tuple[float, float] = Field(default=(0.0, 1.0), description="range [lo, hi] of the rank exponent")
    step: float | None = Field(default=None, gt=0.0, le=1.0, description="lattice step; null = continuous")
    constraints: Constraints = Field(default_factory=Constraints)
    steering: Steering = Field(default_factory=Steering)
    moe: Routing | None = Field(default=None, description="route every candidate over E rank-one experts, top-k")

    @field_validator("step", mode="before")
    @classmethod
    def _step_number(cls, v: Any) -> Any:
        return _number(v)

    @field_validator("rho", mode="before")
    @classmethod
    def _rho_numbers(cls, v: Any) -> Any:
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            v = [v, v]
        if isinstance(v, Sequence) and not isinstance(v, str):
            return [_number(x) for x in v]
        return v

    @field_validator("zero", mode="before")
    @classmethod
    def _zero_list(cls, v: Any) -> Any:
        if v is None:
            return ()
        if isinstance(v, str):
            return (v,)
        return v

    @field_validator("zero")
    @classmethod
    def _zero_classes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in v if c not in CLASSES]
        if unknown:
            raise ValueError(f"unknown class(es) {', '.join(unknown)}; expected some of {', '.join(CLASSES)}")
        return tuple(c for c in CLASSES if c in v)

    @model_validator(mode="after")
    def _consistent(self) -> Space:
        for side, names in (("input", INPUT_CLASSES), ("output", OUTPUT_CLASSES)):
            if all(c in self.zero for c in names):
                raise ValueError(f"zero: pins every {side} class ({', '.join(names)}); one must stay free")
        if "rho" in self.zero and self.rho != (0.0, 0.0):
            raise ValueError("rho: must be [0, 0] when zero pins rho")
        if self.moe is not None and not {"beta", "delta", "rho"} <= set(self.zero):
            raise ValueError("moe: a routed space needs zero: [beta, delta, rho] (BTT family, experts as the rank)")
        lo, hi = self.rho
        if not (0.0 <= lo <= hi <= 1.0):
            raise ValueError(f"rho: expected 0 <= lo <= hi <= 1, got [{lo:g}, {hi:g}]")
        if self.step is not None:
            n = 1.0 / self.step
            if not math.isfinite(n) or n > LATTICE_CAP:
                raise ValueError(
                    f"step: {self.step:g} is finer than the lattice cap allows (at most {LATTICE_CAP:,} points)"
                )
            if abs(n - round(n)) > 1e-6:
                raise ValueError(f"step: 1/step must be an integer (e.g. 1/12, 0.25), got {self.step:g}")
            for bound in (lo, hi):
                if abs(bound * round(n) - round(bound * round(n))) > 1e-6:
                    raise ValueError(f"rho: bounds must be multiples of step {self.step:g}, got {bound:g}")
            points = self.lattice_size()
            if points > LATTICE_CAP:
                raise ValueError(
                    f"step: {self.step:g} gives a lattice of {points:,} points, more than the cap {LATTICE_CAP:,}; "
                    "use a coarser step or pin more classes"
                )
        return self

    @model_serializer(mode="wrap")
    def _without_unused_moe(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("moe") is None:
            data.pop("moe", None)  # an unrouted space dumps as before (studies recorded earlier still resume)
        return data

    # -- structure of the parameterisation -----------------------------------------
    @property
    def free_inputs(self) -> tuple[str, ...]:
        return tuple(c for c in INPUT_CLASSES if c not in self.zero)

    @property
    def free_outputs(self) -> tuple[str, ...]:
        return tuple(c for c in OUTPUT_CLASSES if c not in self.zero)

    @property
    def n_steps(self) -> int | None:
        """1/step, or None for a continuous space."""
        return None if self.step is None else round(1.0 / self.step)

    @property
    def param_names(self) -> tuple[str, ...]:
        """The Optuna parameter names, in suggestion order."""
        names = [f"u_{c}" for c in self.free_inputs[:-1]] + [f"u_{c}" for c in self.free_outputs[:-1]]
        if self.rho[1] > self.rho[0]:
            names.append("rho")
        return tuple(names)

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions of :attr:`param_names`."""
        from optuna.distributions import FloatDistribution

        out: dict[str, Any] = {}
        for name in self.param_names:
            if name == "rho":
                out[name] = FloatDistribution(self.rho[0], self.rho[1])  # snapped to the lattice afterwards
            else:
                out[name] = FloatDistribution(0.0, 1.0)
        return out

    def contains(self, theta: Sequence[float], tol: float = 1e-9) -> bool:
        """Whether a theta lies in this space (zeros, rho range, lattice)."""
        t = dict(zip(CLASSES, theta, strict=True))
        if any(abs(t[c]) > tol for c in self.zero):
            return False
        if not (self.rho[0] - tol <= t["rho"] <= self.rho[1] + tol):
            return False
        if self.n_steps is not None:
            n = self.n_steps
            return all(abs(v * n - round(v * n)) <= 1e-6 for v in theta)
        return True

    # -- params <-> theta ------------------------------------------------------------
    def _side(self, free: tuple[str, ...], params: Mapping[str, float]) -> dict[str, float]:
        k = len(free)
        values, remaining = {}, 1.0
        for i, c in enumerate(free[:-1]):
            u = min(max(float(params[f"u_{c}"]), 0.0), 1.0)
            share = 1.0 - (1.0 - u) ** (1.0 / (k - 1 - i))  # Beta(1, k-1-i) inverse CDF
            values[c] = remaining * share
            remaining -= values[c]
        values[free[-1]] = max(remaining, 0.0)
        if self.n_steps is not None:
            values = _snap(values, self.n_steps)
        return values

    def theta_from_params(self, params: Mapping[str, float]) -> tuple[float, ...]:
        """The theta (alpha..rho) that Optuna parameters stand for, snapped to the lattice."""
        t = dict.fromkeys(CLASSES, 0.0)
        t.update(self._side(self.free_inputs, params))
        t.update(self._side(self.free_outputs, params))
        rho = float(params.get("rho", self.rho[0]))
        if self.n_steps is not None:
            rho = round(rho * self.n_steps) / self.n_steps
        t["rho"] = min(max(rho, self.rho[0]), self.rho[1])
        return tuple(float(t[c]) for c in CLASSES)

    def params_from_theta(self, theta: Sequence[float]) -> dict[str, float]:
        """Optuna parameters that map back to ``theta`` (inverse of :meth:`theta_from_params`)."""
        t = dict(zip(CLASSES, (float(v) for v in theta), strict=True))
        params: dict[str, float] = {}
        for free in (self.free_inputs, self.free_outputs):
            k, remaining = len(free), 1.0
            for i, c in enumerate(free[:-1]):
                share = t[c] / remaining if remaining > 1e-12 else 0.0
                share = min(max(share, 0.0), 1.0)
                params[f"u_{c}"] = 1.0 - (1.0 - share) ** (k - 1 - i)
                remaining -= t[c]
        if "rho" in self.param_names:
            params["rho"] = t["rho"]
        return params

    # -- enumeration -----------------------------------------------------------------
    def lattice_size(self, n_steps: int | None = None) -> int:
        """How many points :meth:`lattice` holds, counted without building it.

        >>> Space(name="s", step="1/12").lattice_size()
        107653
        """
        n = self.n_steps or n_steps or 0
        lo, hi = round(self.rho[0] * n), round(self.rho[1] * n)
        ins, outs = len(self.free_inputs), len(self.free_outputs)
        return math.comb(n + ins - 1, ins - 1) * math.comb(n + outs - 1, outs - 1) * (hi - lo + 1)

    def lattice(self, n_steps: int | None = None) -> np.ndarray:
        """Every lattice point of the space as an array [N, 7] (``n_steps`` for continuous spaces).

        A lattice of more than ``LATTICE_CAP`` points is refused before anything is allocated.
        """
        n = self.n_steps or n_steps
        if n is None:
            raise SpaceError(f"space {self.name}: continuous; pass n_steps to enumerate a lattice")
        if self.lattice_size(n) > LATTICE_CAP:
            raise SpaceError(f"space {self.name}: {self.lattice_size(n):,} lattice points, more than {LATTICE_CAP:,}")

        def side(free: tuple[str, ...]) -> list[dict[str, float]]:
            out = []
            for combo in itertools.product(range(n + 1), repeat=len(free) - 1):
                if sum(combo) <= n:
                    vals = [*combo, n - sum(combo)]
                    out.append({c: v / n for c, v in zip(free, vals, strict=True)})
            return out

        lo, hi = round(self.rho[0] * n), round(self.rho[1] * n)
        rows = []
        for ins in side(self.free_inputs):
            for outs in side(self.free_outputs):
                for r in range(lo, hi + 1):
                    t = dict.fromkeys(CLASSES, 0.0)
                    t.update(ins)
                    t.update(outs)
                    t["rho"] = r / n
                    rows.append([t[c] for c in CLASSES])
        return np.asarray(rows, dtype=float).reshape(-1, len(CLASSES))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` points drawn uniformly from the parameterisation, as an array [n, 7]."""
        rows = []
        for _ in range(n):
            params = {name: float(rng.uniform(0.0, 1.0)) for name in self.param_names if name != "rho"}
            if "rho" in self.param_names:
                params["rho"] = float(rng.uniform(*self.rho))
            rows.append(self.theta_from_params(params))
        return np.asarray(rows, dtype=float).reshape(-1, len(CLASSES))

    def summary(self) -> str:
        step = "continuous" if self.step is None else f"step {Fraction(self.step).limit_denominator(1000)}"
        zero = ", ".join(self.zero) or "none"
        return f"{self.name}: zero [{zero}], rho [{self.rho[0]:g}, {self.rho[1]:g}], {step}"


def _snap(values: dict[str, float], n: int) -> dict[str, float]:
    """Round a side to multiples of 1/n that still sum to 1 (largest remainder).

    >>> _snap({"alpha": 0.34, "beta": 0.33, "gamma": 0.33}, 4)
    {'alpha': 0.5, 'beta': 0.25, 'gamma': 0.25}
    """
    scaled = {c: v * n for c, v in values.items()}
    floors = {c: math.floor(s + 1e-9) for c, s in scaled.items()}
    left = n - sum(floors.values())
    order = sorted(scaled, key=lambda c: (-(scaled[c] - floors[c]), list(values).index(c)))
    for c in order[: max(left, 0)]:
        floors[c] += 1
    return {c: floors[c] / n for c in values}


# -- loading and the registry ---------------------------------------------------------
def _format_error(err: ValidationError, where: str) -> SpaceError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if not loc:  # a whole-model check; its message starts with the field it is about
        return SpaceError(f"{where}: {msg}")
    got = ""
    if first["loc"] and "input" in first and not isinstance(first["input"], (dict, list)):
        got = f", got {first['input']!r}"
    return SpaceError(f"{where}: {loc}: {msg}{got}")


def space_from_mapping(data: Any, where: str = "space") -> Space:
    """Validate a mapping into a :class:`Space`, raising a one-line :class:`SpaceError` naming the field."""
    if not isinstance(data, Mapping):
        raise SpaceError(
            f"{where}: expected a mapping of fields (name, zero, rho, step, constraints), got {type(data).__name__}"
        )
    try:
        return Space.model_validate(dict(data))
    except ValidationError as err:
        raise _format_error(err, where) from None


def _shipped() -> dict[str, Path]:
    if not SPACES_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(SPACES_DIR.glob("*.yaml"))}


def available_spaces() -> tuple[str, ...]:
    """Names of the shipped (``search_spaces/*.yaml``) and registered spaces."""
    return tuple(sorted({*_shipped(), *_REGISTERED}))


def register_space(space: Space) -> Space:
    """Register a space under its name so that :func:`load_space` finds it."""
    _REGISTERED[space.name] = space
    return space


def load_space(value: str | Path | Mapping[str, Any] | Space) -> Space:
    """A space from a registered name, a YAML file path, a mapping or a :class:`Space`.

    >>> load_space("btt").zero
    ('beta', 'delta')
    """
    if isinstance(value, Space):
        return value
    if isinstance(value, Mapping):
        return space_from_mapping(value)
    text = str(value)
    if text in _REGISTERED:
        return _REGISTERED[text]
    shipped = _shipped()
    path = shipped.get(text)
    if path is None:
        candidate = Path(text)
        if candidate.suffix in (".yaml", ".yml", ".json") or candidate.exists():
            path = candidate
    if path is None:
        raise SpaceError(
            f"unknown search space {text!r}; expected one of {', '.join(available_spaces())} or a path to a .yaml file"
        )
    if not path.is_file():
        raise SpaceError(f"{path}: no such space file")
    import yaml

    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise SpaceError(f"{path}: cannot read the space file ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise SpaceError(f"{path}: not UTF-8 text (byte {err.start}); expected a YAML space file") from None
    except RecursionError:
        raise SpaceError(f"{path}: nested too deeply to be a space file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpaceError(f"{path}: invalid YAML{line}: {getattr(err, 'problem', None) or err}") from None
    return space_from_mapping(data, where=str(path))
