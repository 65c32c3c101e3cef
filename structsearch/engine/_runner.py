"""The :func:`search` API: open (or resume) a study, propose, settle or train, record, show progress."""

from __future__ import annotations

import math
import platform
import signal
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from structsearch.engine._confirm import confirm_study
from structsearch.engine._heartbeat import Watch
from structsearch.engine._objective import EvaluateFn, Objective, TrialOutcome, worker_id
from structsearch.engine._progress import trials_bar
from structsearch.engine._pruning import make_pruner
from structsearch.engine._references import ensure_references, stored_references
from structsearch.engine._scorers import (
    FRONTIER_EVALUATOR,
    TRAINERS,
    FrontierScorer,
    check_budget_buys_a_step,
    resolve_evaluator,
    study_slope_rule,
    study_target_flops,
)
from structsearch.engine._space import Space, load_space
from structsearch.engine._steering import CandidatePool, TaxonomySampler, candidate_pool
from structsearch.engine._storage import (
    DEFAULT_RUNS_DIR,
    JOURNAL_NAME,
    StudyLocation,
    check_study_name,
    open_storage,
)
from structsearch.engine._team import local_workers
from structsearch.errors import SpaceError, StructSearchError, StudyError, TaskError

__all__ = ["OBJECTIVES", "SAMPLERS", "SearchResult", "count_done", "search"]

SAMPLERS = ("tpe", "nsga2", "random", "grid")
OBJECTIVES = ("loss", "pareto")
CONFIG_ATTR = "structsearch"
DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
# settings that must match when a study is resumed (the rest may change between sessions)
_PINNED = ("task", "budget", "objective", "width", "seed", "space", "evaluator", "target_flops", "slope_rule")


@dataclass
class SearchResult:
    """What a search session leaves behind (the study itself holds everything else)."""

    study: str
    storage: str
    run_dir: str
    trials: int
    target: int
    evaluated: int
    statuses: dict[str, int]
    best: dict[str, Any] | None
    new_trials: int
    resumed: bool
    elapsed_seconds: float
    objective: str
    stale_recovered: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    references: dict[str, dict[str, Any]] = field(default_factory=dict)
    confirmation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title=f"study {self.study} ({self.storage})", show_header=False)
        table.add_row(
            "trials",
            f"{self.trials} / {self.target} done ({self.new_trials} this session"
            + (f", {self.stale_recovered} interrupted trial(s) re-queued" if self.stale_recovered else "")
            + ")",
        )
        table.add_row("trained", str(self.evaluated))
        table.add_row("settled", ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items())) or "-")
        if self.best:
            b = self.best
            table.add_row(
                "best",
                f"#{b['number']} {b['paper']}"
                + (f" [{b['name']}]" if b.get("name") else "")
                + f" loss {b['loss']:.5g}  omega {b['omega']:.3g}  psi {b['psi']:.3g}  nu {b['nu']:.3g}",
            )
        if self.best and self.references:
            table.add_row("references", self._against_references())
        if self.confirmation and self.confirmation.get("comparisons"):
            from structsearch.confirmation import Comparison

            lines = [Comparison.model_validate(c).sentence() for c in self.confirmation["comparisons"]]
            table.add_row("confirmed", "\n".join(lines))
        table.add_row("elapsed", f"{self.elapsed_seconds:.1f} s")
        where = self._where()
        table.add_row(
            "next", f"structsearch report {self.study}{where}  |  structsearch export {self.study}{where} --top 3"
        )
        return table

    def _where(self) -> str:
        """The flag that finds this study again: --runs-dir for a journal outside runs/, --storage otherwise."""
        run_dir = Path(self.run_dir)
        if Path(self.storage) == run_dir / JOURNAL_NAME:
            return "" if run_dir.parent == DEFAULT_RUNS_DIR else f" --runs-dir {run_dir.parent}"
        return f" --storage {self.storage}"

    def _against_references(self) -> str:
        """Each reference's score next to the best's, said so when a reference scored better."""
        best = self.best["loss"] if self.best else None
        parts = []
        for name, row in self.references.items():
            loss = row.get("loss")
            if loss is None or best is None:
                parts.append(f"{name} {row.get('status', 'failed')}")
                continue
            if loss < best:
                verdict = "the reference scores better"
            else:  # relative where both are positive losses; a plug-in's scores may be 0 or negative
                verdict = f"best {best / loss - 1:+.1%}" if loss > 0 and best > 0 else f"best {best - loss:+.4g}"
            parts.append(f"{name} {loss:.5g} ({verdict})")
        return ";  ".join(parts)


def count_done(study: optuna.Study) -> int:
    """Finished trials (COMPLETE or PRUNED): what ``trials`` counts. FAIL ones are interruptions or errors."""
    return len(study.get_trials(deepcopy=False, states=DONE_STATES))


def _count_evaluated(study: optuna.Study) -> int:
    return sum(
        t.user_attrs.get("status") in ("evaluated", "diverged", "failed")
        for t in study.get_trials(deepcopy=False, states=DONE_STATES)
    )


def _task_defaults(task: str, strict: bool) -> tuple[float | None, int | None]:
    from structsearch.tasks import get_task

    try:
        obj = get_task(task)
    except TaskError:
        if strict:
            raise
        return None, None
    return float(obj.budget), int(obj.default_width)


def _versions() -> dict[str, str]:
    import numpy

    from structsearch import __version__

    out = {
        "structsearch": __version__,
        "optuna": optuna.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
    try:
        from importlib.metadata import version

        out["torch"] = version("torch")
    except Exception:  # torch absent: the analytic paths still work
        pass
    return out


def _default_study_name(space: Space, task: str, objective: str) -> str:
    safe_task = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in task)
    return f"{space.name}-{safe_task}-{objective}"


def _check_resume(study: optuna.Study, config: dict[str, Any], location: StudyLocation) -> None:
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        if study.get_trials(deepcopy=False):
            raise StudyError(
                f"study {study.study_name} in {location.description} was not made by structsearch "
                "search; pick another --study name"
            )
        if study_slope_rule(config) is not None and config.get("slope_rule") is None:
            from structsearch.frontier import DEFAULT_SLOPE_RULE

            config = {**config, "slope_rule": DEFAULT_SLOPE_RULE}
        study.set_user_attr(CONFIG_ATTR, config)
        return
    for key in _PINNED:
        have, want = stored.get(key), config.get(key)
        if key == "space":  # what the space admits must match; its description and steering may change

            def admits(d: dict[str, Any]) -> dict[str, Any]:
                return {k: v for k, v in (d or {}).items() if k not in ("description", "steering")}

            same = admits(have) == admits(want)
            have, want = (have or {}).get("name"), want["name"]
        elif key == "target_flops":  # a study stored before targets were resolved has None: read it resolved
            have, want = study_target_flops(stored), study_target_flops(config)
            same = have == want or (have is not None and want is not None and math.isclose(have, want, rel_tol=1e-9))
        elif key == "slope_rule":  # not given: the study's own rule
            have = study_slope_rule(stored)
            same = want is None or want == have
        elif key == "budget" and isinstance(have, (int, float)) and isinstance(want, (int, float)):
            same = math.isclose(have, want, rel_tol=1e-9)
        else:
            same = have == want
        if not same and key == "space" and have == want:
            raise StudyError(
                f"study {study.study_name} in {location.description}: space {want!r} has changed since "
                "the study was created (zero, rho, step or constraints); pick another --study name"
            )
        if not same:
            raise StudyError(
                f"study {study.study_name} in {location.description} was created with {key}={have!r}, got "
                f"{want!r}; resume with the same settings or pick another --study name"
            )


def _make_sampler(
    name: str, pool: CandidatePool | None, space: Space, seed: int, pareto: bool, trials: int
) -> tuple[optuna.samplers.BaseSampler, list[dict[str, float]]]:
    """The Optuna sampler of a session (steered when ``pool`` is given) and the parameters to enqueue."""
    from optuna.samplers import NSGAIISampler, RandomSampler, TPESampler

    enqueue: list[dict[str, float]] = []
    if pool is not None:
        if name in ("tpe", "random", "grid"):
            mode = {"tpe": "surrogate", "random": "random", "grid": "grid"}[name]
            return TaxonomySampler(space, pool, mode=mode, seed=seed, multi_objective=pareto), enqueue
        # nsga2 + steer: a prior-chosen, spread-out first generation
        picker = TaxonomySampler(space, pool, mode="surrogate", seed=seed)
        population = max(4, min(50, trials // 3))
        chosen: list[Any] = []
        for _ in range(min(population, len(pool))):
            i = picker.startup_pick(np.array([j for j in range(len(pool)) if j not in chosen]), chosen)
            chosen.append(i)
            enqueue.append(space.params_from_theta(pool.thetas[i]))
        return NSGAIISampler(seed=seed, population_size=population), enqueue
    if name == "tpe":
        return TPESampler(seed=seed), enqueue
    if name == "nsga2":
        return NSGAIISampler(seed=seed, population_size=max(4, min(50, trials // 3))), enqueue
    if name == "random":
        return RandomSampler(seed=seed), enqueue
    if space.step is None:
        raise SpaceError(f"space {space.name}: continuous (step: null); --sampler grid needs a space with a step")
    return RandomSampler(seed=seed), enqueue


def _enqueue_grid(study: optuna.Study, space: Space, seed: int, trials: int) -> None:
    """Queue the next lattice points (in a seeded shuffled order) that the study has not seen yet."""
    existing = study.get_trials(deepcopy=False)
    waiting = sum(t.state == TrialState.WAITING for t in existing)
    need = trials - count_done(study) - waiting
    if need <= 0:
        return
    seen = set()
    for t in existing:
        params = t.params or dict(t.system_attrs.get("fixed_params", {}))
        if set(space.param_names).issubset(params):
            seen.add(space.theta_from_params(params))
    lattice = space.lattice()
    for i in np.random.default_rng(seed).permutation(len(lattice)):
        theta = space.theta_from_params(space.params_from_theta(lattice[i]))
        if theta in seen:
            continue
        study.enqueue_trial(space.params_from_theta(lattice[i]), user_attrs={"enqueued_by": "grid"})
        need -= 1
        if need <= 0:
            break


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C so that ``kill`` leaves the study as cleanly as Ctrl-C does."""
    try:
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _requeue(study: optuna.Study, trial: Any, reason: str) -> None:
    """Mark a trial FAIL (interrupted) and enqueue its parameters so it is re-run."""
    storage = study._storage
    trial_id = trial._trial_id
    storage.set_trial_user_attr(trial_id, "status", "interrupted")
    storage.set_trial_user_attr(trial_id, "reason", reason)
    params = dict(trial.params) if hasattr(trial, "params") else {}
    try:
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    except (ValueError, RuntimeError):
        return
    names = set(study.user_attrs.get(CONFIG_ATTR, {}).get("param_names", []))
    if params and names.issubset(params):
        study.enqueue_trial(params, user_attrs={"retry_of": trial.number})


def _best(study: optuna.Study) -> dict[str, Any] | None:
    best = None
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        loss = t.user_attrs.get("loss")
        if loss is None or not t.values:
            continue
        if best is None or loss < best.user_attrs["loss"]:
            best = t
    if best is None:
        return None
    a = best.user_attrs
    return {
        "number": best.number,
        "paper": a.get("paper"),
        "name": a.get("name"),
        "theta": a.get("theta"),
        "loss": a.get("loss"),
        "omega": a.get("omega"),
        "psi": a.get("psi"),
        "nu": a.get("nu"),
        "params": a.get("params"),
        "macs": a.get("macs"),
    }


@local_workers
def search(
    space: str | Path | Space = "steered-default",
    task: str = "mlp-regression",
    budget: float | None = None,
    trials: int = 12,
    *,
    study: str | None = None,
    storage: str | None = None,
    sampler: str | None = None,
    objective: str = "loss",
    steer: bool = True,
    seed: int = 0,
    width: int | None = None,
    evaluate_fn: str | EvaluateFn | None = None,
    target_flops: float | None = None,
    slope_rule: str | None = None,
    pruner: str | None = None,
    references: bool = True,
    confirm: bool = True,
    confirm_top: int = 3,
    confirm_seeds: Sequence[int] = (0, 1, 2),
    confirm_flops: float | None = None,
    threads: int | None = None,
    max_trainings: int | None = None,
    progress: bool = True,
    runs_dir: str | Path | None = None,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], bool | None]] = (),
) -> SearchResult:
    """Search ``space`` for the structure with the lowest score on ``task``.

    Each candidate costs ``budget`` training FLOPs (default: the task's). ``evaluate_fn``:
    ``None`` / ``"frontier"`` scores by the compute-efficient frontier's predicted loss at
    ``target_flops`` (default 10 x ``budget``; :mod:`structsearch.frontier`; ``slope_rule``:
    how fitted exponents are carried past the ladder, default the study's own, else
    ``"parameter-growth"``), and ``pruner``
    (:data:`~structsearch.engine._pruning.PRUNERS`) stops weak ladders after their cheap rungs;
    ``"proxy"`` / ``"final"`` score at one width (the search ``width``, which is otherwise the
    width the taxonomy analyses candidates at); ``"toy"``, a callable or ``"module:function"``
    replaces the scorer. ``references`` scores dense and BTT the same way, once per study.
    ``threads`` sets torch's CPU threads of the built-in trainers.

    Runs until the study holds ``trials`` finished trials (COMPLETE or PRUNED; analytically
    settled ones included), or ``max_trainings`` trained ones; then, with ``confirm``, re-trains
    the top ``confirm_top`` and the references with ``confirm_seeds`` at ``confirm_flops``
    (default: ``budget``) and stores means, 95% intervals and paired tests in the study. The
    same call again resumes the same study: trials a killed worker left RUNNING are failed and
    re-queued. Each of ``callbacks`` is called as ``callback(study, finished_trial)`` after
    every trial; one returning True ends the session. ``workers=N`` runs N processes on the
    study, this one included (``structsearch search --workers N``; every setting then needs a
    command-line form, :mod:`structsearch.engine._team`); the result adds up their sessions.
    """
    started = time.monotonic()
    space_obj = load_space(space)
    pareto = objective == "pareto"
    sampler = sampler or ("nsga2" if pareto else "tpe")
    _check_arguments(objective, sampler, trials, max_trainings, budget, width, seed, confirm_top, confirm_seeds)
    if evaluate_fn == FRONTIER_EVALUATOR:  # the frontier named as a study records it: the built-in scorer
        evaluate_fn = "frontier"
    fn, evaluator_name = resolve_evaluator(
        evaluate_fn, target_flops=target_flops, threads=threads, slope_rule=slope_rule
    )
    default_budget, default_width = _task_defaults(task, strict=evaluate_fn is None or evaluate_fn in TRAINERS)
    budget = float(budget) if budget is not None else default_budget
    width = width or default_width or 64
    check_budget_buys_a_step(evaluate_fn, fn, task, budget, width)
    _check_stages(fn, evaluate_fn, task, pareto, pruner, confirm_flops if confirm else None)
    name = check_study_name(study if study is not None else _default_study_name(space_obj, task, objective))
    study_pruner = make_pruner(pruner)
    config: dict[str, Any] = {
        "space": space_obj.model_dump(mode="json"),
        "param_names": list(space_obj.param_names),
        "task": task,
        "budget": budget,
        "objective": objective,
        "width": width,
        "seed": seed,
        "sampler": sampler,
        "steer": steer,
        "evaluator": evaluator_name,
        "target_flops": getattr(fn, "target_flops", None),  # resolved below when left to the default
        "slope_rule": slope_rule,  # None: the study's own when resuming (_check_resume)
        "pruner": pruner or type(study_pruner).__name__,
        "versions": _versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    config["target_flops"] = study_target_flops(config)
    pool = None
    if steer:  # before the study is created: an empty space is refused without leaving one behind
        pool = candidate_pool(space_obj, width, seed=seed)
        if not len(pool):
            raise SpaceError(
                f"space {space_obj.name}: no canonical candidate satisfies the constraints at width {width}"
            )
    elif sampler == "grid" and space_obj.step is None:
        raise SpaceError(f"space {space_obj.name}: continuous (step: null); --sampler grid needs a space with a step")
    location = open_storage(name, storage, runs_dir)
    study_obj, resumed, watch = _open_study(name, location, pareto, objective, config, study_pruner)
    config["slope_rule"] = study_slope_rule(study_obj.user_attrs[CONFIG_ATTR])  # resolved: the study's own
    if isinstance(fn, FrontierScorer):
        fn.slope_rule = config["slope_rule"] or fn.slope_rule
    session_seed = seed + 7919 * len(study_obj.get_trials(deepcopy=False))
    opt_sampler, enqueue = _make_sampler(sampler, pool, space_obj, session_seed, pareto, trials)
    if enqueue and not resumed:
        for params in enqueue:
            study_obj.enqueue_trial(params, user_attrs={"enqueued_by": f"{sampler}{'+steer' if steer else ''}"})
    if sampler == "grid" and not steer:
        _enqueue_grid(study_obj, space_obj, seed, trials)
    study_obj.sampler = opt_sampler
    if references:
        ensure_references(study_obj, fn, task=task, budget=budget, seed=seed, width=width, progress=progress)

    scorer = Objective(space_obj, task=task, budget=budget, seed=seed, width=width, evaluate_fn=fn, pareto=pareto)
    label = f"{sampler}{'+steer' if steer else ''}"
    new = _run_trials(watch, scorer, label, trials, max_trainings, progress, callbacks)
    trains = evaluate_fn is None or evaluate_fn in TRAINERS  # the confirmation trains on the task itself
    if confirm and trains and not pareto and count_done(study_obj) >= trials:
        confirm_study(
            study_obj,
            task=task,
            compute=confirm_flops or budget,
            seeds=confirm_seeds,
            top=confirm_top,
            threads=threads,
            progress=progress,
        )

    trials_all = study_obj.get_trials(deepcopy=False, states=DONE_STATES)
    statuses = Counter(str(t.user_attrs.get("status", "?")) for t in trials_all)
    return SearchResult(
        study=name,
        storage=location.description,
        run_dir=str(location.run_dir),
        trials=len(trials_all),
        target=trials,
        evaluated=_count_evaluated(study_obj),
        statuses=dict(statuses),
        best=_best(study_obj),
        new_trials=new,
        resumed=resumed,
        elapsed_seconds=time.monotonic() - started,
        objective=objective,
        stale_recovered=watch.recovered,
        config=config,
        references=stored_references(study_obj),
        confirmation=study_obj.user_attrs.get("confirmation"),
    )


def _check_stages(
    fn: EvaluateFn, evaluate_fn: Any, task: str, pareto: bool, pruner: str | None, confirm_flops: float | None
) -> None:
    """Refuse, before a study is made, a pruner that could never prune and a confirmation that buys no step."""
    if pruner not in (None, "none") and (pareto or not getattr(fn, "reports_rungs", False)):
        raise TaskError(f"pruner: only the frontier evaluator reports rungs to prune on, got {pruner!r}")
    if confirm_flops is not None and (evaluate_fn is None or evaluate_fn in TRAINERS):
        from structsearch.confirmation import check_compute_buys_a_step

        check_compute_buys_a_step(task, confirm_flops)


def _check_arguments(
    objective: str,
    sampler: str,
    trials: Any,
    max_trainings: Any,
    budget: Any,
    width: Any,
    seed: Any,
    confirm_top: Any,
    confirm_seeds: Any,
) -> None:
    """One-line errors for bad arguments, before anything is created."""
    if objective not in OBJECTIVES:
        raise StudyError(f"objective: expected one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if sampler not in SAMPLERS:
        raise StudyError(f"sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise StudyError(f"trials: expected a positive integer, got {trials!r}")
    if max_trainings is not None and (not isinstance(max_trainings, int) or max_trainings < 1):
        raise StudyError(f"max_trainings: expected a positive integer, got {max_trainings!r}")
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0
    ):
        raise TaskError(f"budget: expected a positive number of FLOPs, got {budget!r}")
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
        raise TaskError(f"width: expected a positive integer, got {width!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise StudyError(f"seed: expected an integer in [0, 2^32), got {seed!r}")
    if isinstance(confirm_top, bool) or not isinstance(confirm_top, int) or confirm_top < 1:
        raise StudyError(f"confirm_top: expected a positive integer, got {confirm_top!r}")
    if isinstance(confirm_seeds, int):  # the CLI's --confirm-seeds is a count; here they are the seeds
        raise StudyError(
            f"confirm_seeds: expected a sequence of at least 2 distinct integer seeds, got {confirm_seeds!r} "
            f"(--confirm-seeds {confirm_seeds} is confirm_seeds=range({confirm_seeds}))"
        )
    seeds = list(confirm_seeds)
    in_range = all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 for v in seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or not in_range:
        raise StudyError(f"confirm_seeds: expected at least 2 distinct integer seeds in [0, 2^32), got {seeds!r}")


def _open_study(
    name: str,
    location: StudyLocation,
    pareto: bool,
    objective: str,
    config: dict[str, Any],
    pruner: optuna.pruners.BasePruner,
) -> tuple[optuna.Study, bool, Watch]:
    """Create or load the study, check that a resumed one matches, re-queue trials dead workers left."""
    directions = ["minimize", "minimize"] if pareto else ["minimize"]
    # Optuna logs "A new study created ..." at INFO: the search reports that itself (progress,
    # SearchResult.resumed), and a library call with progress=False should print nothing.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
    try:
        study_obj = _load_or_create(name, location.storage, directions, pruner)
    except ValueError as err:
        raise StudyError(f"study {name} in {location.description}: {err}") from None
    finally:
        optuna.logging.set_verbosity(verbosity)
    if list(study_obj.directions) != [optuna.study.StudyDirection.MINIMIZE] * len(directions):
        raise StudyError(
            f"study {name} in {location.description} has {len(study_obj.directions)} objective(s); "
            f"got objective={objective!r}; pick another --study name"
        )
    resumed = bool(study_obj.get_trials(deepcopy=False))
    _check_resume(study_obj, config, location)
    if pareto and not resumed:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study_obj.set_metric_names(["loss", "macs"])
    watch = Watch(study_obj, worker_id())  # heartbeats; dead workers' trials failed and re-queued
    watch.fail_stale()
    return study_obj, resumed, watch


def _load_or_create(name: str, storage: Any, directions: list[str], pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """The study, loaded if it exists (nothing written: a resume refused below leaves the storage as it was)."""
    try:
        return optuna.load_study(study_name=name, storage=storage, pruner=pruner)
    except KeyError:  # no such study yet
        pass
    try:
        return optuna.create_study(study_name=name, storage=storage, directions=directions, pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it in between
        return optuna.load_study(study_name=name, storage=storage, pruner=pruner)


def _run_trials(
    watch: Watch,
    scorer: Objective,
    label: str,
    trials: int,
    max_trainings: int | None,
    progress: bool,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], bool | None]],
) -> int:
    """Ask, settle or train, record, until the study holds ``trials``; returns the trials this session added.

    While other workers' running trials could still fill the study this worker waits for them
    instead of leaving; one whose worker dies is re-queued and run here (``_heartbeat``).
    """
    study_obj = watch.study
    new = 0
    best = _best(study_obj)
    with trials_bar(progress, trials, count_done(study_obj), best) as bar, _sigterm_as_interrupt():
        while True:
            done = count_done(study_obj)
            bar(done, best)
            if done >= trials or (max_trainings is not None and _count_evaluated(study_obj) >= max_trainings):
                break
            if watch.others_finish(trials, lambda d, b=best: bar(d, b)):  # waits on others' trials
                break
            trial = watch.ask()
            outcome = _score_trial(watch, trial, scorer, label)
            try:
                _record(study_obj, trial, outcome)
            except KeyboardInterrupt:
                _requeue(study_obj, trial, "interrupted (Ctrl-C / SIGTERM) while recording")
                raise
            new += 1
            if outcome.state == TrialState.COMPLETE:
                best = _best(study_obj)
            if callbacks:
                finished = study_obj._storage.get_trial(trial._trial_id)
                if any([bool(cb(study_obj, finished)) for cb in callbacks]):
                    break
        bar(count_done(study_obj), best)
    return new


def _score_trial(watch: Watch, trial: optuna.Trial, scorer: Objective, label: str) -> TrialOutcome:
    """Run the objective on one trial; an interruption re-queues it, an error fails it and propagates."""
    study_obj = watch.study
    try:
        with watch.beating(trial):
            trial.set_user_attr("sampler", label)
            return scorer(study_obj, trial)
    except KeyboardInterrupt:
        _requeue(study_obj, trial, "interrupted (Ctrl-C / SIGTERM)")
        raise
    except StructSearchError as err:
        trial.set_user_attr("status", "error")
        trial.set_user_attr("reason", str(err))
        study_obj.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as err:
        trial.set_user_attr("status", "error")
        trial.set_user_attr("reason", f"{type(err).__name__}: {err}"[:500])
        study_obj.tell(trial, state=TrialState.FAIL)
        raise


def _record(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome) -> None:
    have = trial.user_attrs
    for k, v in outcome.attrs.items():
        if have.get(k, object()) != v:
            trial.set_user_attr(k, v)
    if outcome.state == TrialState.COMPLETE:
        study.tell(trial, outcome.values)
    else:
        study.tell(trial, state=outcome.state)
