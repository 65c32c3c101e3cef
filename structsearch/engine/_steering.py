"""Taxonomy steering: propose structures from canonical candidates, ranked by what the taxonomy predicts.

Plain Optuna samples raw theta: most of the 7-class space is redundant or degenerate
(``nu > 1``), many thetas round to the same integer sizes, and nothing tells the sampler that
parameter sharing (omega) and rank (psi) are what governs compute efficiency. Steering uses
three things the taxonomy knows before any training:

1. **A pool of canonical candidates.** Every lattice point of the space is canonicalised
   (redundant points relabelled), degenerate ones and those outside the constraints dropped,
   and points with the same integer class sizes merged: each pool member costs one training,
   and none is wasted.
2. **A prior in taxonomy coordinates.** ``score = w_omega*omega - w_psi*psi + w_nu*nu``
   (lower is better; the paper: little sharing, full rank). The first ``n_startup`` proposals
   are best-scored candidates spread out in (omega, psi, nu) (farthest-point), each the most
   central theta of its taxonomy cell, so that they also explore.
3. **A surrogate in taxonomy coordinates.** A Gaussian process fitted to log-loss whose mean
   function is the prior score and whose kernel is a Bayesian linear trend in the taxonomy's
   numbers (omega, psi, nu, log params, log MACs) plus an RBF over ``(omega, psi, nu)`` (short
   length scale) and theta (long length scale): the trend learns from a handful of trials how
   the loss moves with the exponents at this task and budget (for instance that, at a fixed
   width, cheap structures win because they get more steps), the RBF what the trend misses.
   The next proposal maximises expected improvement over the untried pool. For the Pareto
   objective the loss prediction is scalarised with the exact log-MACs under a random weight
   per proposal (ParEGO-style). A proposal is claimed at once (its ``sizes`` user attribute),
   so that concurrent workers pick different candidates.

:class:`TaxonomySampler` is an ordinary Optuna sampler: it proposes whole points through
``sample_relative`` by returning the space's parameters of the chosen candidate, so studies,
storages and the dashboard see nothing unusual.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from structsearch.engine._space import Space
from structsearch.spec import CLASSES
from structsearch.taxonomy import batch_taxonomy

__all__ = ["CandidatePool", "TaxonomySampler", "candidate_pool", "prior_score", "sizes_key"]

CONTINUOUS_POOL_STEPS = 12  # lattice used for the pool of a continuous space
MAX_POOL = 20000
_SWAP = [1, 0, 2, 4, 3, 5, 6]  # relabelling: alpha<->beta, delta<->epsilon


def sizes_key(sizes: Sequence[int]) -> str:
    """The dedupe key of a candidate: its seven integer class sizes.

    >>> sizes_key([8, 1, 8, 1, 8, 8, 1])
    '8,1,8,1,8,8,1'
    """
    return ",".join(str(int(s)) for s in sizes)


@dataclass
class CandidatePool:
    """Canonical, constraint-satisfying candidates of a space, one per integer size pattern."""

    thetas: np.ndarray
    omega: np.ndarray
    psi: np.ndarray
    nu: np.ndarray
    params: np.ndarray
    macs: np.ndarray
    keys: list[str]
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {k: i for i, k in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def features(self) -> np.ndarray:
        return np.column_stack([self.omega, self.psi, self.nu, self.thetas])


def prior_score(space: Space, omega: np.ndarray, psi: np.ndarray, nu: np.ndarray) -> np.ndarray:
    """The steering prior (lower is better).

    >>> from structsearch.engine._space import Space
    >>> prior_score(Space(name="s"), np.array([0.0, 0.5]), np.array([1.0, 1.0]), np.array([0.5, 0.5])).tolist()
    [-1.0, -0.5]
    """
    s = space.steering
    return s.omega_weight * omega - s.psi_weight * psi + s.nu_weight * nu


def candidate_pool(space: Space, width: int, seed: int = 0, max_points: int = MAX_POOL) -> CandidatePool:
    """The canonical candidates of ``space`` at the reference layer ``width x width``.

    Candidates outside the space's constraints, and those dense dominates (at least its MACs
    with at most its parameters), are left out: they would be settled without training anyway.

    >>> from structsearch.engine._space import load_space
    >>> pool = candidate_pool(load_space("kronecker"), 64)
    >>> len(pool) > 10, bool((pool.nu <= 1).all())
    (True, True)
    """
    thetas = space.lattice(None if space.step is not None else CONTINUOUS_POOL_STEPS)
    info = batch_taxonomy(thetas, width, width)
    flip = ~info["non_redundant"]
    thetas = thetas.copy()
    thetas[flip] = thetas[flip][:, _SWAP]
    info = batch_taxonomy(thetas, width, width)
    if space.moe is not None:  # a routed layer: E terms of parameters, k terms of MACs, plus the router
        e, k = space.moe.experts, space.moe.k
        info["params"], info["macs"] = e * info["params"] + width * e, k * info["macs"] + width * e
        info["sizes"][:, CLASSES.index("rho")] = e  # the rank index is the experts, as the objective records it
    zero_cols = [CLASSES.index(c) for c in space.zero]
    keep = info["canonical"] & info["valid"]
    if zero_cols:
        keep &= (np.abs(thetas[:, zero_cols]) <= 1e-12).all(1)
    c = space.constraints
    eps = 1e-9
    if c.omega_max is not None:
        keep &= info["omega"] <= c.omega_max + eps
    if c.psi_min is not None:
        keep &= info["psi"] >= c.psi_min - eps
    if c.nu_min is not None:
        keep &= info["nu"] >= c.nu_min - eps
    if c.nu_max is not None:
        keep &= info["nu"] <= c.nu_max + eps
    if c.max_params is not None:
        keep &= info["params"] <= c.max_params
    if c.max_macs is not None:
        keep &= info["macs"] <= c.max_macs
    keep &= info["padding"] <= c.max_padding + eps
    dense = width * width  # dense dominates: as many MACs or more for as many parameters or fewer
    keep &= ~(
        (info["macs"] >= dense) & (info["params"] <= dense) & ((info["macs"] != dense) | (info["params"] != dense))
    )
    idx = np.flatnonzero(keep)
    # one candidate per integer size pattern (the first in lattice order)
    _, first = np.unique(info["sizes"][idx], axis=0, return_index=True)
    idx = idx[np.sort(first)]
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_points, replace=False))
    return CandidatePool(
        thetas=thetas[idx],
        omega=info["omega"][idx],
        psi=info["psi"][idx],
        nu=info["nu"][idx],
        params=info["params"][idx],
        macs=info["macs"][idx],
        keys=[sizes_key(s) for s in info["sizes"][idx]],
    )


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = float(np.std(x))
    return (x - float(np.mean(x))) / (sd if sd > 1e-12 else 1.0)


class _GP:
    """A small fixed-hyperparameter Gaussian process: Bayesian linear trend + RBF residual.

    ``k(x, x') = lin(x) . lin(x') + exp(-|x - x'|^2 / 2)`` with prior mean ``mean``: the linear
    part learns how the loss moves with the taxonomy coordinates from a handful of trials, the
    RBF part what they do not explain.
    """

    def __init__(self, x: np.ndarray, lin: np.ndarray, y: np.ndarray, mean: np.ndarray, noise: float = 1e-2) -> None:
        self.x, self.lin = x, lin
        k = self._kernel(x, lin, x, lin) + noise * np.eye(len(x))
        self.chol = np.linalg.cholesky(k)
        self.alpha = np.linalg.solve(self.chol.T, np.linalg.solve(self.chol, y - mean))

    @staticmethod
    def _kernel(a: np.ndarray, la: np.ndarray, b: np.ndarray, lb: np.ndarray) -> np.ndarray:
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-0.5 * d2) + la @ lb.T

    def predict(self, x: np.ndarray, lin: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ks = self._kernel(x, lin, self.x, self.lin)
        mu = mean + ks @ self.alpha
        v = np.linalg.solve(self.chol, ks.T)
        prior_var = 1.0 + (lin**2).sum(1)
        var = np.maximum(prior_var - (v**2).sum(0), 1e-9)
        return mu, np.sqrt(var)


def _expected_improvement(mu: np.ndarray, sd: np.ndarray, best: float, xi: float = 0.01) -> np.ndarray:
    from scipy.stats import norm

    z = (best - mu - xi) / sd
    return (best - mu - xi) * norm.cdf(z) + sd * norm.pdf(z)


class TaxonomySampler(BaseSampler):
    """An Optuna sampler that proposes untried members of a :class:`CandidatePool`.

    Contract: ``infer_relative_search_space`` returns the space's distributions and
    ``sample_relative`` returns the parameters of one whole candidate (or ``{}`` once the
    pool is exhausted, when sampling falls back to uniform random). A trial is matched to
    the pool through its ``sizes`` user attribute, which the objective records.

    ``mode``: ``"surrogate"`` (prior start-up, then GP expected improvement), ``"random"``
    (prior start-up, then uniform over the untried pool) or ``"grid"`` (the pool in prior order).
    """

    def __init__(
        self,
        space: Space,
        pool: CandidatePool,
        *,
        mode: str = "surrogate",
        seed: int | None = None,
        multi_objective: bool = False,
        length_scales: tuple[float, float] = (0.3, 1.0),
    ) -> None:
        if mode not in ("surrogate", "random", "grid"):
            raise ValueError(f"mode: expected surrogate, random or grid, got {mode!r}")
        self._space = space
        self._pool = pool
        self._mode = mode
        self._rng = np.random.default_rng(seed)
        self._fallback = RandomSampler(seed=seed)
        self._multi = multi_objective
        tax_ls, theta_ls = length_scales
        scale = np.array([tax_ls] * 3 + [theta_ls] * len(CLASSES))
        self._x = pool.features() / scale
        self._prior = prior_score(space, pool.omega, pool.psi, pool.nu)
        self._prior_z = _zscore(self._prior) if len(pool) else self._prior
        self._log_macs_z = _zscore(np.log(np.maximum(pool.macs, 1).astype(float))) if len(pool) else self._prior
        # the linear trend's inputs: the taxonomy coordinates and the exact log counts, standardised,
        # each weight with prior variance trend_var / n_features (in loss standard deviations)
        trend = [
            pool.omega,
            pool.psi,
            pool.nu,
            np.log(np.maximum(pool.params, 1).astype(float)),
            np.log(np.maximum(pool.macs, 1).astype(float)),
        ]
        self._lin = (
            np.column_stack([_zscore(np.asarray(f, dtype=float)) for f in trend]) / np.sqrt(len(trend))
            if len(pool)
            else np.zeros((0, len(trend)))
        )

    # -- the Optuna sampler interface ---------------------------------------------------
    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()
        self._fallback.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._space.distributions()

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        if not search_space or not len(self._pool):
            return {}
        pick = self.choose(study.get_trials(deepcopy=False))
        if pick is None:
            return {}
        if not trial.system_attrs.get("fixed_params"):
            # claim the candidate at once, so that concurrent workers pick another one
            study._storage.set_trial_user_attr(trial._trial_id, "sizes", self._pool.keys[pick])
        params = self._space.params_from_theta(self._pool.thetas[pick])
        return {k: v for k, v in params.items() if k in search_space}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    # -- choosing ---------------------------------------------------------------------
    def choose(self, trials: Sequence[FrozenTrial]) -> int | None:
        """The pool index of the next proposal given the trials so far (None: pool exhausted)."""
        tried: set[int] = set()
        observed: dict[int, float | None] = {}
        for t in trials:
            i = self._pool.index.get(str(t.user_attrs.get("sizes", "")))
            if i is None:
                continue
            tried.add(i)
            if t.state == TrialState.COMPLETE and t.values and t.user_attrs.get("status") == "evaluated":
                observed[i] = float(t.values[0])
            elif t.state == TrialState.PRUNED and t.user_attrs.get("status") in ("diverged", "pruned"):
                observed[i] = None  # a pruned ladder lost to the others at a cheap rung: scored as the worst
        untried = np.array([i for i in range(len(self._pool)) if i not in tried], dtype=int)
        if not len(untried):
            return None
        if self._mode == "grid":
            order = np.lexsort((self._pool.nu[untried], self._prior[untried]))
            return int(untried[order[0]])
        n_startup = self._space.steering.n_startup
        if len(tried) < n_startup or len(observed) < 2:
            return self.startup_pick(untried, sorted(tried))
        if self._mode == "random":
            return int(self._rng.choice(untried))
        return self._surrogate_pick(untried, observed)

    def startup_pick(self, untried: np.ndarray, tried: list[int]) -> int:
        """A prior-ranked pick spread out in taxonomy coordinates (the start-up rule).

        Among the best-scored quarter of the untried pool, take the (omega, psi, nu) cell
        farthest from the cells tried so far (the first pick: the best score, median nu), and
        within that cell the most central theta, so that start-up structures are typical of
        their cell rather than corners of the simplex. The first pick is the medoid (in taxonomy
        coordinates and theta) of the best-scored candidates.
        """
        score = self._prior[untried]
        cutoff = np.quantile(score, 0.25) if len(untried) > 4 else score.max()
        top = untried[score <= cutoff + 1e-12]
        tax = self._x[:, :3]
        if not tried:  # the medoid of the best-scored candidates: the most typical of them
            best = top[self._prior[top] <= self._prior[top].min() + 1e-12]
            x = self._x[best]
            return int(best[np.argmin(((x - x.mean(0)) ** 2).sum(1) + 1e-9 * self._rng.random(len(best)))])
        else:
            d2 = ((tax[top][:, None, :] - tax[tried][None, :, :]) ** 2).sum(-1).min(1)
            cell = top[d2 >= d2.max() - 1e-12]
            cell = cell[np.all(np.abs(tax[cell] - tax[cell[0]]) <= 1e-9, axis=1)]
        theta = self._pool.thetas[cell]
        central = ((theta - theta.mean(0)) ** 2).sum(1)
        return int(cell[np.argmin(central + 1e-9 * self._rng.random(len(cell)))])

    def _surrogate_pick(self, untried: np.ndarray, observed: dict[int, float | None]) -> int:
        idx = np.array(list(observed), dtype=int)
        vals = [v for v in observed.values() if v is not None and np.isfinite(v) and v > 0]
        logs = np.log(np.array(vals)) if vals else np.zeros(1)
        worst = float(logs.max()) + max(float(np.std(logs)), 0.5)
        y = np.array([np.log(v) if (v is not None and np.isfinite(v) and v > 0) else worst for v in observed.values()])
        mean, sd = float(y.mean()), float(y.std()) if len(y) > 1 and y.std() > 1e-12 else 1.0
        yz = (y - mean) / sd
        strength = self._space.steering.prior_strength
        gp = _GP(self._x[idx], self._lin[idx], yz, strength * self._prior_z[idx])
        mu, sigma = gp.predict(self._x[untried], self._lin[untried], strength * self._prior_z[untried])
        if self._multi:
            w = float(self._rng.uniform(0.1, 0.9))
            obs = w * yz + (1 - w) * self._log_macs_z[idx]
            mu = w * mu + (1 - w) * self._log_macs_z[untried]
            sigma = w * sigma
            best = float(obs.min())
        else:
            best = float(yz.min())
        ei = _expected_improvement(mu, sigma, best)
        return int(untried[np.argmax(ei + 1e-12 * self._rng.random(len(untried)))])
