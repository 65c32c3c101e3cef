"""One trial: turn Optuna's proposal into a canonical candidate, settle it analytically or train it.

The decision, in order (each step's outcome is recorded in the trial's user attributes
``status`` and ``reason``; only ``evaluated`` costs training):

=============  ===========================================================  ==========
status         when                                                         state
=============  ===========================================================  ==========
invalid        the proposal is not a valid theta                            PRUNED
degenerate     nu > 1 and no canonical equivalent (dense dominates it)       PRUNED
constraint     outside the space's constraints (omega, psi, nu, params,     PRUNED
               MACs, padding at the reference width)
dominated      dense dominates it at the search width: MACs at or above     PRUNED
               dense's with parameters at or below dense's
padding        the evaluator refuses the padding at its width               PRUNED
duplicate      same integer class sizes as an earlier trial: its answer     as earlier
redundant      a relabelled / rank-capped proposal whose canonical          as earlier
               equivalent was already trained: its answer
concurrent     another worker is training the same integer sizes right now  PRUNED
evaluated      trained; values = score (and MACs for the Pareto objective)  COMPLETE
pruned         the pruner stopped its ladder after a cheap rung             PRUNED
diverged       trained, the loss diverged                                   PRUNED
failed         trained, the run failed (out of memory, the task raised,    PRUNED
               the budget buys no step, ...)
=============  ===========================================================  ==========

Every proposal is canonicalised first: a redundant theta is replaced by its relabelled
equivalent, a degenerate one by its rank-capped equivalent where one exists
(``canonicalised_from`` records the proposal). Pruned trials teach TPE that a region is bad;
NSGA-II ignores them.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from structsearch.engine._scorers import score_attrs
from structsearch.engine._space import Space
from structsearch.engine._steering import sizes_key
from structsearch.errors import SizeError, SpecError
from structsearch.spec import Spec
from structsearch.taxonomy import analyze

__all__ = ["EvaluateFn", "Objective", "TrialOutcome", "dominated_by_dense", "toy_evaluate", "worker_id"]

EvaluateFn = Callable[..., Any]
"""``evaluate_fn(spec, task=..., budget=..., seed=..., width=...)`` returning an object with
``final_loss``, ``diverged``, ``train_flops``, ``steps``, ``wall_seconds``, ``params``, ``macs``,
``width`` (and optionally ``status``, ``reason``, ``to_dict()``), like
:func:`structsearch.evaluation.evaluate`."""


def worker_id() -> str:
    """``host:pid`` of this process, recorded on every trial to detect ones a killed worker left."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class TrialOutcome:
    """What to tell the study about one trial."""

    state: TrialState
    values: list[float] | None
    attrs: dict[str, Any]


@dataclass
class _ToyResult:
    final_loss: float | None
    diverged: bool
    train_flops: float
    steps: int
    wall_seconds: float
    params: int
    macs: int
    width: int
    status: str = "ok"
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def toy_evaluate(
    spec: Spec, task: str = "toy", budget: float | None = None, seed: int = 0, width: int | None = None, **_: Any
) -> _ToyResult:
    """An analytic stand-in for :func:`structsearch.evaluation.evaluate` (no training, for tests and dry runs).

    The loss falls with the rank exponent psi and the steps the budget buys, rises with
    sharing omega: ``(1 + omega) * (2 - psi) * (1 + 0.1 * |nu - 0.6|) * (1 + 0.01 * (seed % 3))``.

    >>> round(toy_evaluate(Spec.parse("btt"), width=64).final_loss, 4)
    1.01
    """
    width = width or 64
    tax = analyze(spec, width, width, max_padding=None)
    loss = (1 + tax.omega) * (2 - tax.psi) * (1 + 0.1 * abs(tax.nu - 0.6)) * (1 + 0.01 * (seed % 3))
    budget = float(budget or 1e9)
    steps = max(1, int(budget // (6 * max(tax.macs, 1))))
    return _ToyResult(
        final_loss=loss,
        diverged=False,
        train_flops=float(steps * 6 * tax.macs),
        steps=steps,
        wall_seconds=0.0,
        params=tax.params,
        macs=tax.macs,
        width=width,
    )


def dominated_by_dense(params: int, macs: int, width: int) -> str | None:
    """Why dense dominates a structure at ``width`` x ``width`` (None if it does not).

    A structure that costs at least dense's MACs with at most dense's parameters buys nothing
    for its compute; dense itself (equal counts) is not dominated.

    >>> dominated_by_dense(4096, 8192, 64) is not None, dominated_by_dense(4096, 4096, 64)
    (True, None)
    """
    dense = width * width
    if macs >= dense and params <= dense and (macs, params) != (dense, dense):
        return (
            f"dense dominates it at width {width}: {macs:,} MACs >= dense's {dense:,} "
            f"with {params:,} parameters <= dense's {dense:,}"
        )
    return None


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class Objective:
    """Scores one Optuna trial of a search (see the module docstring for the decision table)."""

    def __init__(
        self,
        space: Space,
        *,
        task: str,
        budget: float | None,
        seed: int,
        width: int,
        evaluate_fn: EvaluateFn,
        pareto: bool = False,
    ) -> None:
        self.space = space
        self.task = task
        self.budget = budget
        self.seed = seed
        self.width = width
        self.evaluate_fn = evaluate_fn
        self.pareto = pareto

    # -- proposal -> canonical candidate -------------------------------------------
    def propose(self, trial: optuna.Trial) -> tuple[float, ...]:
        params = {}
        for name, dist in self.space.distributions().items():
            params[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step)
        return self.space.theta_from_params(params)

    def __call__(self, study: optuna.Study, trial: optuna.Trial) -> TrialOutcome:
        trial.set_user_attr("worker", worker_id())
        theta = self.propose(trial)
        return self.settle(study, trial, theta)

    def settle(self, study: optuna.Study, trial: optuna.Trial, theta: Sequence[float]) -> TrialOutcome:
        attrs: dict[str, Any] = {}
        try:
            spec = Spec.from_theta(theta).routed(self.space.moe)
        except SpecError as err:
            return TrialOutcome(
                TrialState.PRUNED, None, {"status": "invalid", "reason": str(err), "theta": list(map(float, theta))}
            )
        proposed = spec
        tax = analyze(spec, self.width, self.width, max_padding=None)
        if not tax.canonical:
            equivalent = tax.canonical_equivalent
            if equivalent is None:
                attrs.update(self._describe(spec, tax))
                attrs.update(
                    status="degenerate",
                    reason=f"nu {tax.nu:.4g} > 1 and no canonical equivalent: dense dominates this family",
                )
                return TrialOutcome(TrialState.PRUNED, None, attrs)
            spec = equivalent
            attrs["canonicalised_from"] = proposed.paper
            tax = analyze(spec, self.width, self.width, max_padding=None)
        attrs.update(self._describe(spec, tax))
        trial_attrs = {"sizes": attrs["sizes"], "theta": attrs["theta"]}
        for k, v in trial_attrs.items():  # early: concurrent workers and the steering sampler see them
            trial.set_user_attr(k, v)
        violations = self.space.constraints.violations(tax.omega, tax.psi, tax.nu, tax.params, tax.macs, tax.padding)
        if violations:
            attrs.update(status="constraint", reason="; ".join(violations))
            return TrialOutcome(TrialState.PRUNED, None, attrs)
        dominated = dominated_by_dense(tax.params, tax.macs, self.width)
        if dominated:
            attrs.update(status="dominated", reason=dominated)
            return TrialOutcome(TrialState.PRUNED, None, attrs)
        earlier = self._earlier(study, attrs["sizes"], trial.number)
        if earlier is not None:
            status = "redundant" if "canonicalised_from" in attrs else "duplicate"
            attrs.update(
                status=status,
                duplicate_of=earlier.number,
                reason=f"same integer sizes as trial {earlier.number}: answered from the record",
            )
            for k in ("loss", "final_loss", "train_flops", "steps", "eval_params", "eval_macs", "eval_width"):
                if k in earlier.user_attrs:
                    attrs[k] = earlier.user_attrs[k]
            if earlier.state == TrialState.COMPLETE:
                return TrialOutcome(TrialState.COMPLETE, list(earlier.values), attrs)
            attrs["reason"] += f" ({earlier.user_attrs.get('status')})"
            return TrialOutcome(TrialState.PRUNED, None, attrs)
        # A twin still running elsewhere is not in the record yet. Mark this trial as training
        # before looking, so that a worker whose claim this one could not see yields to it.
        trial.set_user_attr("training", True)
        busy = self._in_progress(study, attrs["sizes"], trial.number)
        if busy is not None:
            trial.set_user_attr("training", False)
            attrs.update(
                status="concurrent",
                duplicate_of=busy.number,
                reason=f"same integer sizes as trial {busy.number}, which worker "
                f"{busy.user_attrs.get('worker', '?')} is training: not trained twice",
            )
            return TrialOutcome(TrialState.PRUNED, None, attrs)
        trial.set_user_attr("claim_checked", True)  # later claimants with lower numbers yield to this one
        return self._train(spec, attrs, trial)

    def _describe(self, spec: Spec, tax: Any) -> dict[str, Any]:
        return {
            "theta": [float(t) for t in spec.theta],
            "paper": spec.paper,
            "name": spec.name,
            "moe": spec.document().get("moe"),
            "omega": float(tax.omega),
            "psi": float(tax.psi),
            "nu": float(tax.nu),
            "params": int(tax.params),
            "macs": int(tax.macs),
            "padding": float(tax.padding),
            "sizes": sizes_key(tax.dims.as_dict.values()),
            "ref_width": self.width,
        }

    @staticmethod
    def _earlier(study: optuna.Study, key: str, number: int) -> FrozenTrial | None:
        """The first finished trial trained (or answered) with the same integer sizes."""
        settled = ("evaluated", "diverged", "failed", "padding", "pruned")
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if t.number != number and t.user_attrs.get("sizes") == key and t.user_attrs.get("status") in settled:
                return t
        return None

    @staticmethod
    def _in_progress(study: optuna.Study, key: str, number: int) -> FrozenTrial | None:
        """A trial of another worker that holds the same integer sizes right now.

        The lower trial number wins a tie: a trial yields to a lower-numbered one with the same
        sizes (unless that one has itself yielded), and to a higher-numbered one only once that
        one has passed this check (``claim_checked``: it did not see this trial's claim in time
        and is training). Two claims at the same instant therefore leave exactly one trainer; a
        claim that lands between another's check and its ``claim_checked`` may train the
        candidate twice, which costs compute but never leaves it untrained. A trial whose result
        is being recorded (status set, not yet told) still counts.
        """
        me = worker_id()
        abandoned = ("interrupted", "error", "concurrent")
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number == number or t.user_attrs.get("sizes") != key or t.user_attrs.get("worker") == me:
                continue
            if t.user_attrs.get("status") in abandoned or t.user_attrs.get("training") is False:
                continue  # interrupted, or it yielded to someone else
            if t.number < number or t.user_attrs.get("claim_checked"):
                return t
        return None

    def _rung_reporter(self, trial: optuna.Trial) -> dict[str, Any]:
        """``on_rung`` for scorers that report rungs: each rung's loss to Optuna, and its pruner's verdict."""
        if self.pareto or not getattr(self.evaluate_fn, "reports_rungs", False):
            return {}  # Optuna's pruners are single-objective

        def on_rung(step: int, loss: float) -> bool:
            trial.report(loss, step)
            return trial.should_prune()

        return {"on_rung": on_rung}

    def _train(self, spec: Spec, attrs: dict[str, Any], trial: optuna.Trial) -> TrialOutcome:
        try:
            result = self.evaluate_fn(
                spec, task=self.task, budget=self.budget, seed=self.seed, width=self.width, **self._rung_reporter(trial)
            )
        except SizeError as err:
            attrs.update(status="padding", reason=str(err))
            return TrialOutcome(TrialState.PRUNED, None, attrs)
        except optuna.TrialPruned:
            raise
        except Exception as err:  # a task or scorer failing on this candidate fails this trial, not the search
            attrs.update(status="failed", reason=f"{type(err).__name__}: {str(err).strip()[:500]}")
            return TrialOutcome(TrialState.PRUNED, None, attrs)
        # rank by the scorer's score where it has one (the proxy's extrapolated loss)
        loss = _finite(getattr(result, "score", getattr(result, "final_loss", None)))
        measured = _finite(getattr(result, "final_loss", None))
        if measured is not None:
            attrs["final_loss"] = measured
        attrs.update(
            train_flops=float(getattr(result, "train_flops", 0.0) or 0.0),
            steps=int(getattr(result, "steps", 0) or 0),
            wall_seconds=float(getattr(result, "wall_seconds", 0.0) or 0.0),
            flops_per_second=float(getattr(result, "flops_per_second", 0.0) or 0.0),  # achieved, model time
            eval_params=int(getattr(result, "params", 0) or 0),
            eval_macs=int(getattr(result, "macs", 0) or 0),
            eval_width=int(getattr(result, "width", self.width) or self.width),
            **score_attrs(result),
        )
        status = str(getattr(result, "status", "ok") or "ok")
        if status == "pruned":
            attrs.update(status="pruned", reason=str(getattr(result, "reason", None) or "pruned"))
            return TrialOutcome(TrialState.PRUNED, None, attrs)
        if getattr(result, "diverged", False) or status == "diverged" or (loss is None and status == "ok"):
            reason = getattr(result, "reason", None) or getattr(result, "divergence_reason", None) or "diverged"
            attrs.update(status="diverged", reason=str(reason))
            return TrialOutcome(TrialState.PRUNED, None, attrs)
        if status != "ok" or loss is None:
            attrs.update(status="failed", reason=str(getattr(result, "reason", None) or status))
            return TrialOutcome(TrialState.PRUNED, None, attrs)
        attrs.update(status="evaluated", loss=loss, reason="trained")
        values = [loss, float(attrs["eval_macs"] or attrs["macs"])] if self.pareto else [loss]
        return TrialOutcome(TrialState.COMPLETE, values, attrs)
