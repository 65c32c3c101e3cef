"""The search loop with a cheap fake evaluator: settlement, dedupe, steering, resume, samplers."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from structsearch.engine import (
    Objective,
    Space,
    TaxonomySampler,
    Watch,
    candidate_pool,
    count_done,
    load_existing_study,
    load_space,
    open_storage,
    search,
    toy_evaluate,
)
from structsearch.errors import SizeError, SpaceError, StudyError, TaskError
from structsearch.spec import Spec

optuna.logging.set_verbosity(optuna.logging.WARNING)
W = 64


@pytest.fixture
def tmp_path():
    """Studies on tmpfs where there is one: the journal fsyncs every record, slow on a shared disk."""
    import shutil
    import tempfile
    from pathlib import Path

    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="structsearch-test-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Counting:
    """toy_evaluate that counts its calls (what would cost training)."""

    def __init__(self, diverge: set[str] | None = None, size_error: set[str] | None = None) -> None:
        self.calls: list[str] = []
        self.diverge = diverge or set()
        self.size_error = size_error or set()

    def __call__(self, spec, **kw):
        self.calls.append(spec.paper)
        if spec.paper in self.size_error:
            raise SizeError(f"{spec.paper}: too much padding")
        result = toy_evaluate(spec, **kw)
        if spec.paper in self.diverge:
            result.final_loss, result.diverged, result.status, result.reason = None, True, "diverged", "nan at step 3"
        return result


def _run(tmp_path, **kw):
    kw.setdefault("task", "toy")
    kw.setdefault("width", W)
    kw.setdefault("progress", False)
    kw.setdefault("runs_dir", tmp_path)
    kw.setdefault("evaluate_fn", Counting())
    return search(**kw)


def _trials(tmp_path, study):
    loaded, _ = load_existing_study(study, runs_dir=tmp_path)
    return loaded.get_trials()


def _study(tmp_path, name="s"):
    location = open_storage(name, runs_dir=tmp_path)
    return optuna.create_study(study_name=name, storage=location.storage, load_if_exists=True)


def _settle(tmp_path, theta, space="full", fn=None, study=None):
    study = study or _study(tmp_path)
    obj = Objective(load_space(space), task="toy", budget=1e9, seed=0, width=W, evaluate_fn=fn or Counting())
    trial = study.ask()
    out = obj.settle(study, trial, theta)
    for k, v in out.attrs.items():
        trial.set_user_attr(k, v)
    study.tell(trial, out.values if out.state == TrialState.COMPLETE else None, state=out.state)
    return out, study


# -- the decision table ---------------------------------------------------------------
def test_redundant_proposal_is_canonicalised_and_trained(tmp_path):
    fn = Counting()
    out, _ = _settle(tmp_path, Spec.parse("(0|1/2|1/2|1/2|0|1/2|0)").theta, fn=fn)
    assert out.state == TrialState.COMPLETE and out.attrs["status"] == "evaluated"
    assert out.attrs["canonicalised_from"] == "(0|1/2|1/2|1/2|0|1/2|0)"
    assert out.attrs["name"] == "btt" and fn.calls == ["(1/2|0|1/2|0|1/2|1/2|0)"]


def test_redundant_twin_of_trained_is_answered_from_record(tmp_path):
    fn = Counting()
    first, study = _settle(tmp_path, Spec.parse("btt").theta, fn=fn)
    out, _ = _settle(tmp_path, Spec.parse("(0|1/2|1/2|1/2|0|1/2|0)").theta, fn=fn, study=study)
    assert out.attrs["status"] == "redundant" and out.attrs["duplicate_of"] == 0
    assert out.values == first.values and len(fn.calls) == 1


def test_duplicate_sizes_cost_no_training(tmp_path):
    fn = Counting()
    _, study = _settle(tmp_path, Spec.parse("btt").theta, fn=fn)
    out, _ = _settle(tmp_path, Spec.parse("monarch").theta, fn=fn, study=study)
    assert out.attrs["status"] == "duplicate" and out.state == TrialState.COMPLETE
    assert len(fn.calls) == 1


def test_twins_claimed_at_once_leave_exactly_one_trainer():
    from structsearch.engine._objective import Objective

    study = optuna.create_study()
    low, high = study.ask(), study.ask()  # two workers proposed the same sizes
    for t in (low, high):
        t.set_user_attr("sizes", "4,4")
        t.set_user_attr("worker", "elsewhere:1")
        t.set_user_attr("training", True)

    def holder(number: int):
        found = Objective._in_progress(study, "4,4", number)
        return None if found is None else found.number

    assert holder(high.number) == low.number  # the higher number yields to the lower ...
    assert holder(low.number) is None  # ... which does not yield back: it trains
    high.set_user_attr("claim_checked", True)  # the higher one checked before the lower claimed
    assert holder(low.number) == high.number
    high.set_user_attr("claim_checked", False)
    low.set_user_attr("training", False)  # a trial that yielded holds nothing
    assert holder(high.number) is None
    assert Objective._in_progress(study, "8,8", high.number) is None


def test_degenerate_without_equivalent_is_settled(tmp_path):
    fn = Counting()
    out, _ = _settle(tmp_path, Spec.parse("(0|0|1|1/12|1/12|5/6|1/2)").theta, fn=fn)
    assert out.state == TrialState.PRUNED and out.attrs["status"] == "degenerate"
    assert "nu" in out.attrs["reason"] and fn.calls == []


def test_degenerate_with_equivalent_is_rank_capped(tmp_path):
    fn = Counting()
    out, _ = _settle(tmp_path, Spec.parse("(1/2|0|1/2|0|1/2|1/2|3/4)").theta, fn=fn)
    assert out.attrs["canonicalised_from"] == "(1/2|0|1/2|0|1/2|1/2|3/4)"
    assert out.attrs["name"] == "btt:1/2" and out.attrs["status"] == "evaluated"


def test_constraints_settle_without_training(tmp_path):
    fn = Counting()
    out, _ = _settle(tmp_path, Spec.parse("kronecker").theta, space="steered-default", fn=fn)
    assert out.state == TrialState.PRUNED and out.attrs["status"] == "constraint"
    assert out.attrs["reason"] == "omega 0.5 > omega_max 0.25" and fn.calls == []


def test_invalid_padding_and_divergence_are_recorded(tmp_path):
    out, study = _settle(tmp_path, (0.5, 0.5, 0.5, 0.5, 0.5, 0, 0))
    assert out.attrs["status"] == "invalid" and "sum to 1" in out.attrs["reason"]
    fn = Counting(diverge={"(1/2|0|1/2|0|1/2|1/2|0)"}, size_error={"(1|0|0|1|0|0|0)"})
    out, _ = _settle(tmp_path, Spec.parse("btt").theta, fn=fn, study=study)
    assert out.state == TrialState.PRUNED and out.attrs["status"] == "diverged"
    assert out.attrs["reason"] == "nan at step 3"
    out, _ = _settle(tmp_path, Spec.parse("dense").theta, fn=fn, study=study)
    assert out.state == TrialState.PRUNED and out.attrs["status"] == "padding"
    # a duplicate of a diverged candidate is answered (diverged) without training
    out, _ = _settle(tmp_path, Spec.parse("monarch").theta, fn=fn, study=study)
    assert out.attrs["status"] == "duplicate" and out.state == TrialState.PRUNED and len(fn.calls) == 2


# -- whole searches ---------------------------------------------------------------------
def test_search_records_everything_and_counts_trials(tmp_path):
    fn = Counting()
    result = _run(tmp_path, space="full", trials=15, study="plain", steer=False, evaluate_fn=fn)
    assert result.trials == 15 and result.new_trials == 15
    trials = _trials(tmp_path, "plain")
    assert result.evaluated == sum(t.user_attrs["status"] == "evaluated" for t in trials)
    refs = result.references  # dense and BTT, scored the same way once per study, outside the trials
    assert list(refs) == ["dense", "btt"] and all(r["reference"] and r["loss"] > 0 for r in refs.values())
    assert len(fn.calls) == result.evaluated + len(refs)
    for t in trials:
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        assert t.user_attrs["status"] and t.user_attrs["reason"]
        assert t.user_attrs["sampler"] == "tpe"
    loaded, _ = load_existing_study("plain", runs_dir=tmp_path)
    assert loaded.user_attrs["structsearch"]["task"] == "toy"
    assert result.best["loss"] == min(t.user_attrs["loss"] for t in trials if "loss" in t.user_attrs)


def test_steered_search_never_wastes_a_trial(tmp_path):
    fn = Counting()
    result = _run(tmp_path, space="full", trials=12, study="steered", evaluate_fn=fn, references=False)
    assert result.statuses == {"evaluated": 12}
    assert len(set(fn.calls)) == 12  # no training repeated
    first = _trials(tmp_path, "steered")[0].user_attrs
    assert first["omega"] == 0 and first["psi"] == 1  # the prior's first pick


def test_resume_in_process_keeps_trials_and_finishes(tmp_path):
    first = _run(tmp_path, space="btt", trials=4, study="r")
    before = [(t.number, t.values) for t in _trials(tmp_path, "r")]
    second = _run(tmp_path, space="btt", trials=7, study="r")
    assert second.resumed and second.trials == 7 and second.new_trials == 3
    after = [(t.number, t.values) for t in _trials(tmp_path, "r")]
    assert after[:4] == before
    third = _run(tmp_path, space="btt", trials=7, study="r")
    assert third.new_trials == 0 and first.study == third.study


def test_resume_with_other_settings_is_refused(tmp_path):
    _run(tmp_path, space="btt", trials=2, study="m", budget=1e9)
    journal = tmp_path / "m" / "journal.log"
    before = journal.read_bytes()
    with pytest.raises(StudyError, match=r"created with budget=1000000000\.0, got 2000000000\.0"):
        _run(tmp_path, space="btt", trials=3, study="m", budget=2e9)
    with pytest.raises(StudyError, match="created with space='btt', got 'kronecker'"):
        _run(tmp_path, space="kronecker", trials=3, study="m", budget=1e9)
    with pytest.raises(StudyError, match="objective"):
        _run(tmp_path, space="btt", trials=3, study="m", budget=1e9, objective="pareto")
    with pytest.raises(StudyError, match="created with seed=0, got 5"):  # one training seed per ranking
        _run(tmp_path, space="btt", trials=3, study="m", budget=1e9, seed=5)
    assert len(_trials(tmp_path, "m")) == 2 and journal.read_bytes() == before  # a refused resume writes nothing
    _run(tmp_path, space=Space(name="mine", step=0.25, description="a"), trials=1, study="sp")
    _run(
        tmp_path, space=Space(name="mine", step=0.25, description="b", steering={"n_startup": 1}), trials=2, study="sp"
    )  # description and steering may change
    with pytest.raises(StudyError, match="space 'mine' has changed since the study was created"):
        _run(tmp_path, space=Space(name="mine", step=0.5), trials=3, study="sp")


def test_stale_running_trial_is_failed_and_requeued(tmp_path, monkeypatch):
    """A trial whose heartbeat is older than the grace period is failed and re-queued; a fresh one is left alone."""
    import time

    monkeypatch.setenv("STRUCTSEARCH_HEARTBEAT_S", "1")
    monkeypatch.setenv("STRUCTSEARCH_GRACE_S", "2")
    _run(tmp_path, space="btt", trials=2, study="k")
    study = optuna.load_study(study_name="k", storage=open_storage("k", runs_dir=tmp_path).storage)
    silent = study.ask()
    for name, dist in load_space("btt").distributions().items():
        silent.suggest_float(name, dist.low, dist.high)
    silent.set_user_attr("worker", "ghost-host:1")
    silent.set_user_attr("heartbeat", time.time())
    alive = study.ask()
    alive.set_user_attr("worker", "other-host:2")
    time.sleep(2.5)  # past the grace period since both started; only one keeps beating
    alive.set_user_attr("heartbeat", time.time())
    params = dict(silent.params)
    watch = Watch(study, "me:1")
    watch.fail_stale()
    trials = study.get_trials()
    assert watch.recovered == 1 and trials[2].state == TrialState.FAIL
    assert trials[2].user_attrs["status"] == "interrupted"
    assert "no heartbeat for 3 s" in trials[2].user_attrs["reason"]
    assert trials[3].state == TrialState.RUNNING  # its worker beats: left alone
    retry = trials[4]
    assert retry.state == TrialState.WAITING and retry.params == params and retry.user_attrs["retry_of"] == 2
    assert "worker" not in retry.user_attrs and "heartbeat" not in retry.user_attrs
    # the session waits for the other worker's trial; once it too goes silent, it is failed (no params: not re-run)
    result = _run(tmp_path, space="btt", trials=4, study="k")
    trials = _trials(tmp_path, "k")
    assert result.stale_recovered == 1 and trials[3].state == TrialState.FAIL
    assert count_done(load_existing_study("k", runs_dir=tmp_path)[0]) == 4
    assert [t.number for t in trials if t.user_attrs.get("retry_of") == 2 and t.state.is_finished()] == [4]
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_pareto_objective_with_nsga2(tmp_path):
    result = _run(tmp_path, space="kronecker", trials=10, study="p", objective="pareto", steer=False)
    loaded, _ = load_existing_study("p", runs_dir=tmp_path)
    assert len(loaded.directions) == 2 and loaded.metric_names == ["loss", "macs"]
    assert loaded.best_trials and all(len(t.values) == 2 for t in loaded.best_trials)
    assert result.trials == 10
    from structsearch.reporting import report

    front = report("p", runs_dir=tmp_path, plots=False).to_dict()["pareto_front_loss_macs"]
    assert front == sorted(t.number for t in loaded.best_trials)
    steered = _run(tmp_path, space="kronecker", trials=6, study="p2", objective="pareto", sampler="nsga2")
    assert steered.statuses.get("evaluated", 0) >= 5


@pytest.mark.parametrize(("sampler", "steer"), [("random", False), ("grid", False), ("grid", True), ("random", True)])
def test_other_samplers(tmp_path, sampler, steer):
    result = _run(tmp_path, space="low-rank", trials=5, study=f"{sampler}{steer}", sampler=sampler, steer=steer)
    assert result.trials == 5
    if sampler == "grid":
        names = [t.user_attrs["name"] for t in _trials(tmp_path, f"{sampler}{steer}") if t.state.is_finished()]
        assert len(set(names)) == 5


def test_grid_needs_a_step(tmp_path):
    with pytest.raises(SpaceError, match="continuous"):
        _run(tmp_path, space="full-continuous", trials=2, study="g", sampler="grid", steer=False)


def test_max_trainings_stops_early(tmp_path):
    result = _run(tmp_path, space="full", trials=100, study="mt", steer=False, max_trainings=3)
    assert result.evaluated == 3 and result.trials < 100


def test_bad_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(StudyError, match="sampler: expected one of tpe, nsga2, random, grid"):
        _run(tmp_path, space="btt", trials=2, sampler="cmaes")
    with pytest.raises(StudyError, match="trials: expected a positive integer"):
        _run(tmp_path, space="btt", trials=0)
    with pytest.raises(TaskError, match="budget"):
        _run(tmp_path, space="btt", trials=2, budget=-1.0)
    with pytest.raises(StudyError, match="study: expected a name"):
        _run(tmp_path, space="btt", trials=2, study="../escape")
    with pytest.raises(TaskError, match="evaluator"):
        _run(tmp_path, space="btt", trials=2, evaluate_fn="nope")
    with pytest.raises(StudyError, match=r"confirm_seeds: expected .* seeds.*got 3 \(--confirm-seeds 3 is"):
        _run(tmp_path, space="btt", trials=2, confirm_seeds=3)  # the CLI's count, not a list of seeds
    with pytest.raises(TaskError):
        search("btt", task="no-such-task", trials=1, runs_dir=tmp_path, progress=False)
    assert not (tmp_path / "btt-no-such-task-loss").exists()  # nothing created for bad input
    empty = Space(name="empty", constraints={"omega_max": 0, "psi_min": 1, "nu_max": 0.01})
    with pytest.raises(SpaceError, match="no canonical candidate"):
        _run(tmp_path, space=empty, trials=2, study="e")
    assert not (tmp_path / "e").exists()


def test_package_attributes_are_callable():
    import structsearch
    import structsearch.engine
    import structsearch.exporting
    import structsearch.reporting

    # the API functions live in modules of other names, so importing those never shadows them
    assert callable(structsearch.search) and callable(structsearch.report) and callable(structsearch.export)


def test_steering_sampler_exhausts_pool_then_falls_back(tmp_path):
    space = load_space("low-rank")
    pool = candidate_pool(space, W)
    sampler = TaxonomySampler(space, pool, seed=0)
    assert sampler.choose([]) is not None
    result = _run(tmp_path, space="low-rank", trials=len(pool) + 3, study="ex")
    assert result.evaluated == len(pool)
    assert result.statuses.get("duplicate", 0) == 3


def test_journal_torn_line_is_repaired(tmp_path):
    _run(tmp_path, space="btt", trials=2, study="torn")
    path = tmp_path / "torn" / "journal.log"
    with open(path, "ab") as f:
        f.write(b'{"op_code": 5, "worker_id": "x", "trial_id"')  # a crash mid-append
    result = _run(tmp_path, space="btt", trials=3, study="torn")
    assert result.trials == 3 and path.read_bytes().endswith(b"\n")


def test_library_search_without_progress_prints_nothing(tmp_path, capfd):
    """Optuna's "A new study created" INFO line is silenced for the call, and its verbosity restored."""
    optuna.logging.set_verbosity(optuna.logging.INFO)  # optuna's default in a user's process (this module quiets it)
    try:
        result = _run(tmp_path, space="btt", trials=2, study="quiet", progress=False)
        out, err = capfd.readouterr()
        assert result.trials == 2 and (out, err) == ("", "")
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_workers_need_settings_the_other_processes_can_be_given(tmp_path):
    """workers > 1 starts processes from a command line: a callable, callbacks or odd seeds are refused first."""
    with pytest.raises(StudyError, match="workers > 1: evaluate_fn must be a name"):
        _run(tmp_path, space="btt", trials=2, study="w", workers=2)  # _run's evaluator is a Counting object
    with pytest.raises(StudyError, match="workers > 1: callbacks would run in this process only"):
        _run(tmp_path, space="btt", trials=2, study="w", evaluate_fn="toy", callbacks=[print], workers=2)
    with pytest.raises(StudyError, match=r"confirm_seeds must be 0..k-1.*got \(1, 2\)"):
        _run(tmp_path, space="btt", trials=2, study="w", evaluate_fn="toy", confirm_seeds=(1, 2), workers=2)
    with pytest.raises(StudyError, match="workers: expected a positive integer, got 0"):
        _run(tmp_path, space="btt", trials=2, study="w", workers=0)
    assert not (tmp_path / "w").exists()  # nothing started, nothing written


def test_workers_command_line_takes_numpy_numbers_and_refuses_tasks_only_this_process_knows(tmp_path):
    import numpy as np

    from structsearch.engine._team import search_argv
    from structsearch.tasks import register_task

    argv = search_argv({"space": tmp_path / "s.yaml", "budget": np.float64(1e9), "trials": np.int64(4), "steer": 0})
    assert argv == ["search", "--space", str(tmp_path / "s.yaml"), "--budget", "1000000000.0", "--trials", "4",
                    "--no-steer", "--confirm-seeds", "3"]  # fmt: skip
    register_task("only-here", lambda **options: None)
    with pytest.raises(StudyError, match="task 'only-here' was registered in this process"):
        search_argv({"space": "btt", "task": "only-here"})
    assert search_argv({"space": "btt", "task": "mlp-regression"})[3:5] == ["--task", "mlp-regression"]
    with pytest.raises(StudyError, match="confirm_seeds: expected a sequence of seeds, got 3"):
        search_argv({"space": "btt", "confirm_seeds": 3})


def test_a_stored_confirmation_is_replaced_once_it_no_longer_describes_the_study(tmp_path, monkeypatch):
    """Extending a study (a new top), or other confirmation settings, re-runs the stage; the same ones reuse it."""
    from types import SimpleNamespace

    from structsearch import confirmation
    from structsearch.engine import confirm_study, top_trials

    calls = []

    def fake_confirm(structures, task, compute, seeds, *, trials, threads, progress):
        calls.append((dict(structures), compute, list(seeds)))
        rows = [{"role": "candidate", "trial": trials[k], "spec": v} for k, v in structures.items()]
        return SimpleNamespace(to_dict=lambda: {"compute": compute, "seeds": list(seeds), "structures": rows})

    monkeypatch.setattr(confirmation, "confirm", fake_confirm)
    _run(tmp_path, space="full", trials=8, study="c", steer=False)
    study = optuna.load_study(study_name="c", storage=open_storage("c", runs_dir=tmp_path).storage)
    settings = {"task": "toy", "compute": 1e9, "seeds": (0, 1), "top": 2}
    assert len(top_trials(study, 3)) == 3
    first = confirm_study(study, **settings)
    assert len(calls) == 1 and [r["trial"] for r in first["structures"]] == [t.number for t in top_trials(study, 2)]
    assert confirm_study(study, **settings) == first and len(calls) == 1  # still current: reused
    confirm_study(study, **{**settings, "seeds": (0, 1, 2)})
    confirm_study(study, **{**settings, "compute": 2e9})
    confirm_study(study, **{**settings, "compute": 2e9, "top": 3})
    assert len(calls) == 4 and [c[1:] for c in calls[1:]] == [(1e9, [0, 1, 2]), (2e9, [0, 1]), (2e9, [0, 1])]
    assert (
        study.user_attrs["confirmation"]["compute"] == 2e9 and len(study.user_attrs["confirmation"]["structures"]) == 3
    )
