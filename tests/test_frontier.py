"""Compute-optimal scoring: the frontier fit, its checks, pruning, and the confirmation statistics.

Trainings are replaced by a synthetic loss law (``loss = a * C^-b``, optionally with a curve
that turns up), so every expected number is a closed form.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from scipy import stats

import structsearch.evaluation as evaluation
import structsearch.frontier as frontier
from structsearch.confirmation import mean_interval, paired_comparison
from structsearch.engine import FrontierScorer, dominated_by_dense, load_existing_study, search
from structsearch.errors import TaskError
from structsearch.frontier import (
    TARGET_MULTIPLE,
    Ladder,
    check_extrapolation,
    frontier_score,
    parameter_growth,
    prediction_band,
)
from structsearch.spec import parse_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)
A, B = 40.0, 0.12


class Synthetic:
    """Stands in for ``evaluation.evaluate``: loss = scale * A * C^-B at the FLOPs the budget buys."""

    def __init__(self, scale=None, turn_up=False, noise=0.0):
        self.scale = scale or {}
        self.turn_up = turn_up
        self.rng = np.random.default_rng(0)
        self.noise = noise
        self.calls = []

    def __call__(self, spec, task=None, budget=None, seed=0, width=None, seeds=None, **_):
        if seeds is not None:  # a seed-batched call: one result per seed
            return SimpleNamespace(runs=[self(spec, task, budget, s, width) for s in seeds])
        flops = 0.98 * budget  # floor(budget / step) steps: a little under the budget
        loss = self.scale.get(spec.paper, 1.0) * A * flops**-B * math.exp(self.noise * self.rng.standard_normal())
        curve = [SimpleNamespace(train_flops=0.0, val_loss=2.0)]
        curve += [SimpleNamespace(train_flops=f * flops, val_loss=loss * (1.3 - 0.3 * f)) for f in (0.5, 1.0)]
        if self.turn_up:  # the curve's minimum came before the end
            curve[1] = SimpleNamespace(train_flops=0.5 * flops, val_loss=0.8 * loss)
        self.calls.append((spec.paper, width, budget))
        return SimpleNamespace(
            status="ok",
            final_loss=loss,
            train_flops=flops,
            steps=100,
            wall_seconds=0.01,
            params=10,
            macs=10,
            width=width,
            reason=None,
            curve=curve,
        )


@pytest.fixture
def synthetic(monkeypatch):
    fake = Synthetic()
    monkeypatch.setattr(evaluation, "evaluate", fake)
    return fake


def test_frontier_fit_recovers_a_known_power_law(synthetic):
    r = frontier_score("btt", "mlp-regression", budget=1e10, target_flops=3e11)
    assert r.status == "ok" and r.score_kind == "predicted" and not r.warnings
    assert r.fit.b == pytest.approx(B, rel=1e-6) and r.fit.a == pytest.approx(A, rel=1e-5)
    assert r.score == pytest.approx(A * 3e11**-B, rel=1e-6)
    assert r.prediction_low == pytest.approx(r.score, rel=1e-6) == pytest.approx(r.prediction_high, rel=1e-6)
    assert r.score_label.startswith("predicted mse at 3e+11 FLOPs (frontier fit over widths")
    # the ladder: budgets in the default shares, cheapest first, iso-FLOP widths (BTT wider than dense)
    assert [c[2] for c in synthetic.calls] == pytest.approx([1e9, 3e9, 6e9])
    assert r.train_flops == pytest.approx(0.98 * 1e10)
    assert all(g.width > g.reference_width for g in r.rungs)


def test_default_target_is_the_stated_multiple_of_the_budget(synthetic):
    r = frontier_score("dense", "mlp-regression", budget=2e9)
    assert r.target_flops == TARGET_MULTIPLE * 2e9
    assert [g.width for g in r.rungs] == [g.reference_width for g in r.rungs]  # dense is its own iso-FLOP width


def test_prediction_band_matches_the_regression_formula():
    rng = np.random.default_rng(1)
    c = np.geomspace(1e9, 1e10, 4)
    loss = A * c**-B * np.exp(0.03 * rng.standard_normal(4))
    low, high = prediction_band(list(zip(c, loss, strict=True)), 1e11)
    res = stats.linregress(np.log(c), np.log(loss))
    x0, x = math.log(1e11), np.log(c)
    s = math.sqrt(np.sum((np.log(loss) - res.intercept - res.slope * x) ** 2) / 2)
    half = stats.t.ppf(0.975, 2) * s * math.sqrt(1 / 4 + (x0 - x.mean()) ** 2 / np.sum((x - x.mean()) ** 2))
    assert math.log(low) == pytest.approx(res.intercept + res.slope * x0 - half)
    assert math.log(high) == pytest.approx(res.intercept + res.slope * x0 + half)


def test_overfitting_curve_falls_back_to_the_measured_loss(monkeypatch):
    monkeypatch.setattr(evaluation, "evaluate", Synthetic(turn_up=True))
    r = frontier_score("dense", "mlp-regression", budget=1e10, target_flops=3e11)
    assert r.score_kind == "measured" and r.score == r.final_loss == min(v for _, v in r.frontier)
    assert any("turns up" in w for w in r.warnings)
    assert r.score_label.startswith("measured mse of the best rung")


def test_checks_flag_bad_fits_far_targets_and_implausible_drops():
    from structsearch.frontier import Rung
    from structsearch.scaling import fit_power_law

    rungs = [
        Rung(reference_width=32, width=32, budget=c, status="ok", train_flops=c, final_loss=v, best_loss=v)
        for c, v in ((1e9, 1.0), (3e9, 0.5), (6e9, 0.45))
    ]
    fit = fit_power_law([1e9, 3e9, 6e9], [1.0, 0.5, 0.45])
    problems = check_extrapolation(rungs, fit, 1e15)
    assert any("poorly" in p for p in problems)
    assert any("x the largest rung" in p for p in problems)
    assert any("below the measured" in p for p in problems)
    assert check_extrapolation(rungs[:2], fit_power_law([1e9, 3e9], [1.0, 0.9]), 3e10) == []


def test_pruned_ladder_pays_only_for_the_rungs_it_ran(synthetic):
    seen = []
    r = frontier_score("btt", "mlp-regression", budget=1e10, on_rung=lambda step, loss: seen.append(step) or True)
    assert r.status == "pruned" and seen == [10] and len(r.rungs) == 1
    assert r.train_flops == pytest.approx(0.98 * 1e9) and r.score is None


def test_search_reports_rungs_and_a_pruned_trial_records_its_cost(tmp_path, monkeypatch):
    # the first four candidates are good, later ones 3x worse: the median pruner stops them at rung two
    class FirstGood(Synthetic):
        def __call__(self, spec, *args, **kw):
            self.scale.setdefault(spec.paper, 1.0 if len(self.scale) < 4 else 3.0)
            return super().__call__(spec, *args, **kw)

    monkeypatch.setattr(evaluation, "evaluate", FirstGood())
    result = search(
        "btt",
        task="mlp-regression",
        budget=1e9,
        trials=8,
        width=64,
        runs_dir=tmp_path,
        study="p",
        evaluate_fn=FrontierScorer(),
        pruner="median",
        progress=False,
        references=False,
        confirm=False,
    )
    loaded, _ = load_existing_study("p", runs_dir=tmp_path)
    trials = [t for t in loaded.get_trials() if t.user_attrs.get("status") in ("evaluated", "pruned")]
    pruned = [t for t in trials if t.user_attrs["status"] == "pruned"]
    assert pruned and result.statuses.get("pruned") == len(pruned)
    for t in pruned:
        # the pruners decide at the second rung (40% of the budget): pruned ladders paid for two rungs
        assert t.state == TrialState.PRUNED and list(t.intermediate_values) == [10, 40]
        assert len(t.user_attrs["ladder"]) == 2 and t.user_attrs["train_flops"] == pytest.approx(0.98 * 0.4e9)
    for t in trials:
        if t.user_attrs["status"] == "evaluated":
            assert list(t.intermediate_values) == [10, 40, 100] and len(t.user_attrs["ladder"]) == 3
            assert t.user_attrs["score_kind"] == "predicted" and t.user_attrs["train_flops"] == pytest.approx(0.98e9)


def test_dominated_candidates_are_settled_without_training(tmp_path):
    assert dominated_by_dense(2560, 4608, 64).startswith("dense dominates it at width 64")
    assert dominated_by_dense(4096, 4096, 64) is None and dominated_by_dense(8192, 8192, 64) is None
    calls = []

    def fn(spec, **kw):
        calls.append(spec)
        raise AssertionError("a dominated candidate must not be trained")

    from structsearch.engine import Objective, load_space, open_storage

    study = optuna.create_study(study_name="d", storage=open_storage("d", runs_dir=tmp_path).storage)
    obj = Objective(load_space("full"), task="toy", budget=1e9, seed=0, width=64, evaluate_fn=fn)
    out = obj.settle(study, study.ask(), (0, 0, 1, 1 / 6, 1 / 2, 1 / 3, 0))
    assert out.state == TrialState.PRUNED and out.attrs["status"] == "dominated" and calls == []


# -- confirmation statistics against scipy ------------------------------------------------
def test_mean_interval_agrees_with_scipy():
    values = [0.231, 0.219, 0.244, 0.226]
    mean, low, high = mean_interval(values)
    ref = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values)) and (low, high) == pytest.approx(ref)


def test_paired_test_agrees_with_scipy_and_says_tied_within_noise():
    best, dense = [0.210, 0.205, 0.220], [0.231, 0.226, 0.238]
    c = paired_comparison(best, dense, "x", "dense")
    diffs = np.subtract(best, dense)
    assert c.p_value == pytest.approx(stats.ttest_rel(best, dense).pvalue)
    assert (c.ci_low, c.ci_high) == pytest.approx(stats.t.interval(0.95, 2, loc=diffs.mean(), scale=stats.sem(diffs)))
    assert c.verdict == "better" and c.sentence().startswith("x is better than dense (-")
    tied = paired_comparison([0.21, 0.25, 0.22], [0.22, 0.22, 0.23])
    assert tied.verdict == "tied" and tied.p_value > 0.05
    assert paired_comparison([0.3, 0.31], [0.2, 0.2]).verdict == "worse"


# -- the command line -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-flops", "-1"], "--target-flops: expected a positive number of FLOPs"),
        (["--target-flops", "lots"], "--target-flops: expected a number of FLOPs like 1e9"),
        (["--target-flops", "1e12", "--evaluator", "proxy"], "target_flops: only the frontier evaluator"),
        (["--pruner", "sometimes"], "--pruner: invalid choice"),
        (["--pruner", "hyperband", "--evaluator", "final"], "pruner: only the frontier evaluator"),
        (["--slope-rule", "steep"], "--slope-rule: invalid choice"),
        (["--slope-rule", "fitted", "--evaluator", "proxy"], "slope_rule: only the frontier evaluator"),
    ],
)
def test_bad_target_flops_and_pruner_exit_2_with_one_line(tmp_path, args, message):
    cmd = [sys.executable, "-m", "structsearch", "search", "--runs-dir", str(tmp_path), "--trials", "1", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert message in out.stderr.strip().splitlines()[-1]
    assert not list(tmp_path.iterdir())  # refused before any study was created


def test_ladder_rejects_bad_shares():
    with pytest.raises(ValueError, match="increasing"):
        Ladder(fractions=(0.6, 0.3))
    with pytest.raises(ValueError, match="summing to at most 1"):
        Ladder(fractions=(0.5, 0.7))


def test_search_confirms_the_best_and_report_and_export_say_what_the_scores_are(tmp_path, monkeypatch):
    from structsearch.exporting import export
    from structsearch.reporting import report

    class PerSeed(Synthetic):  # BTT-like structures 10% better than dense; each seed shifts the loss a little
        def __call__(self, spec, *args, seed=0, seeds=None, **kw):
            if seeds is not None:
                return SimpleNamespace(runs=[self(spec, *args, seed=s, **kw) for s in seeds])
            self.scale[spec.paper] = (0.9 if spec.theta[2] > 0 else 1.0) * (1 + 0.01 * seed)
            return super().__call__(spec, *args, seed=seed, **kw)

    monkeypatch.setattr(evaluation, "evaluate", PerSeed())
    result = search(
        "btt",
        task="mlp-regression",
        budget=1e9,
        trials=3,
        width=64,
        runs_dir=tmp_path,
        study="c",
        pruner="none",
        progress=False,
        confirm_top=2,
    )
    conf = result.confirmation
    assert [r["label"] for r in conf["structures"]][:2] == ["best", "top 2"]
    assert {r["spec"] for r in conf["structures"] if r["role"] == "reference"} == {"(1|0|0|1|0|0|0)"}
    assert all(len(r["losses"]) == 3 and r["ci_low"] <= r["mean"] <= r["ci_high"] for r in conf["structures"])
    verdicts = {c["reference"]: c["verdict"] for c in conf["comparisons"]}
    assert verdicts["dense"] == "better" and conf["compute"] == 1e9
    rep = report("c", runs_dir=tmp_path)
    assert rep.score_label.startswith("predicted mse at 1e+10 FLOPs")
    head = str(rep.__rich__().renderables[0])  # the ladder picks widths: the head names the scoring, not a width
    assert "frontier scoring at 1e+10 FLOPs, parameter-growth slope (params and MACs at width 64)" in head
    assert list(rep.references) == ["dense", "btt"] and rep.confirmation == conf
    assert (tmp_path / "c" / "frontiers.png").stat().st_size > 0
    doc = export("c", top=2, runs_dir=tmp_path)
    best = doc["specs"][0]
    assert best["provenance"]["slope_rule"] == "parameter-growth"
    trial = load_existing_study("c", runs_dir=tmp_path)[0].trials[best["provenance"]["trial"]]
    assert best["score"]["width"] == trial.user_attrs["ladder"][-1]["width"] != doc["width"]  # the widest rung
    assert best["score"]["label"].startswith("predicted mse at 1e+10 FLOPs")
    assert best["score"]["kind"] == "predicted"
    assert best["confirmation"]["comparisons"][0]["verdict"] in ("better", "same structure")
    assert doc["references"]["dense"]["loss"] > best["score"]["loss"]


def test_a_far_target_is_cautioned_on_stderr_with_the_measured_lookahead(capsys: pytest.CaptureFixture[str]) -> None:
    from structsearch.cli.search_cmd import _caution_far_target
    from structsearch.frontier import lookahead_note

    assert lookahead_note(1e9, TARGET_MULTIPLE * 1e9) is None
    note = lookahead_note(1e9, 1e11)
    assert note is not None and note.startswith("the target is 100x") and "0.47-0.82 at 30x" in note
    args = argparse.Namespace(evaluator=None, target_flops=1e11, budget=1e9, task="mlp-regression")
    _caution_far_target(args)
    assert capsys.readouterr().err.startswith("note: the target is 100x")
    _caution_far_target(argparse.Namespace(evaluator="proxy", target_flops=1e11, budget=1e9, task="mlp-regression"))
    _caution_far_target(argparse.Namespace(evaluator=None, target_flops=1e11, budget=None, task="no-such-task"))
    assert capsys.readouterr().err == ""


def test_iso_flop_rule_falls_back_to_the_reference_width_when_no_narrower_width_matches() -> None:
    from structsearch.errors import SizeError
    from structsearch.evaluation import linear_macs_at, matched_width
    from structsearch.spec import parse_spec
    from structsearch.tasks import get_task

    task = get_task("char-lm")
    near_dense = parse_spec("(11/12|1/12|0|1/2|1/12|5/12|0)")
    # at char-lm's narrowest width (its multiple, 32) this structure costs more than dense ...
    assert linear_macs_at(near_dense, task, 32) > linear_macs_at("dense", task, 32)
    with pytest.raises(SizeError):
        matched_width(near_dense, task, 32)
    # ... so its rung trains at dense's width instead of failing; cheaper structures still widen
    assert Ladder().width_for(near_dense, task, 32) == 32
    assert Ladder().width_for(parse_spec("btt"), task, 32) == matched_width("btt", task, 32) > 32


def test_the_default_target_is_stored_resolved_so_naming_it_resumes_the_same_study(tmp_path, monkeypatch):
    from structsearch.engine._storage import open_storage
    from structsearch.errors import StudyError, TaskError
    from structsearch.exporting import export

    monkeypatch.setattr(evaluation, "evaluate", Synthetic())
    common = dict(task="mlp-regression", budget=1e9, width=64, runs_dir=tmp_path, study="t", progress=False)
    search("btt", trials=1, pruner="none", confirm=False, **common)
    loaded, _ = load_existing_study("t", runs_dir=tmp_path)
    assert loaded.user_attrs["structsearch"]["target_flops"] == 1e10
    writable = optuna.load_study(study_name="t", storage=open_storage("t", None, tmp_path).storage)
    writable.set_user_attr("structsearch", {**loaded.user_attrs["structsearch"], "target_flops": None})  # as before
    again = search("btt", trials=2, pruner="none", confirm=False, target_flops=TARGET_MULTIPLE * 1e9, **common)
    assert again.resumed and again.trials == 2
    with pytest.raises(StudyError, match=r"target_flops=10000000000\.0, got 30000000000\.0"):
        search("btt", trials=3, pruner="none", confirm=False, target_flops=3e10, **common)
    assert export("t", top=1, runs_dir=tmp_path)["specs"][0]["provenance"]["target_flops"] == 1e10
    for bad in (0, -1.0, math.nan, math.inf, "1e10", True):  # refused before any study is made
        with pytest.raises(TaskError, match="target_flops: expected a positive, finite number"):
            search("btt", trials=1, target_flops=bad, **{**common, "study": "bad"})
    assert not (tmp_path / "bad").exists()


def test_parameter_growth_is_the_params_over_flops_exponent():
    # taxonomy.md 3: params ~ d^(1+nu-omega), FLOPs ~ d^(1+nu)
    assert parameter_growth(parse_spec("kronecker")) == pytest.approx((1 + 1 / 2 - 1 / 2) / (1 + 1 / 2))
    assert parameter_growth(parse_spec("tt")) == pytest.approx((1 + 1 / 2 - 1 / 4) / (1 + 1 / 2))
    assert parameter_growth(parse_spec("sum-kronecker:0.25")) == pytest.approx((1 + 3 / 4 - 1 / 2) / (1 + 3 / 4))
    for no_sharing in ("dense", "btt", "low-rank:0.5", "(1|0|0|0|1/3|2/3|0)"):
        assert parameter_growth(parse_spec(no_sharing)) == 1.0


def test_parameter_growth_bends_the_exponent_past_the_last_rung_only(synthetic):
    plain = frontier_score("kronecker", "mlp-regression", budget=1e10, target_flops=3e11, slope_rule="fitted")
    bent = frontier_score("kronecker", "mlp-regression", budget=1e10, target_flops=3e11)
    assert bent.slope_rule == "parameter-growth" and plain.slope_rule == "fitted" and plain.slope_factor == 1.0
    assert bent.fit == plain.fit and plain.score == pytest.approx(A * 3e11**-B, rel=1e-6)
    largest = 0.98 * 6e9  # the last rung's FLOPs
    assert bent.frontier[-1][0] == pytest.approx(largest)
    assert bent.score == pytest.approx(A * largest**-B * (3e11 / largest) ** (-B * 2 / 3), rel=1e-6)
    assert bent.prediction_low / plain.prediction_low == pytest.approx(bent.score / plain.score)
    assert "exponent x0.667 for parameter sharing" in bent.score_label
    assert "parameter sharing" not in plain.score_label
    inside = frontier_score("kronecker", "mlp-regression", budget=1e10, target_flops=2e9)  # within the ladder
    assert inside.prediction == pytest.approx(A * 2e9**-B, rel=1e-6)
    with pytest.raises(TaskError, match="slope_rule: expected one of parameter-growth, fitted"):
        frontier_score("kronecker", "mlp-regression", budget=1e10, slope_rule="steep")


def test_a_study_keeps_its_slope_rule_when_resumed(tmp_path, monkeypatch):
    from structsearch.engine._storage import open_storage
    from structsearch.errors import StudyError

    monkeypatch.setattr(evaluation, "evaluate", Synthetic())
    # the space's first picks share no parameters: make every candidate's exponent bend under the default rule
    monkeypatch.setattr(frontier, "parameter_growth", lambda spec: 0.5)
    common = dict(task="mlp-regression", budget=1e9, width=64, runs_dir=tmp_path, pruner="none", progress=False)
    common.update(confirm=False, references=False)
    search("kronecker", trials=1, study="made", **common)
    made, _ = load_existing_study("made", runs_dir=tmp_path)
    assert all("parameter sharing" in t.user_attrs["score_label"] for t in made.trials)
    assert made.user_attrs["structsearch"]["slope_rule"] == "parameter-growth"  # the default, stored resolved

    search("kronecker", trials=1, study="f", slope_rule="fitted", **common)
    again = search("kronecker", trials=2, study="f", **common)  # not named: the study's own rule
    assert again.resumed
    loaded, _ = load_existing_study("f", runs_dir=tmp_path)
    labels = [t.user_attrs.get("score_label", "") for t in loaded.trials if t.user_attrs.get("score_kind")]
    assert labels and not any("parameter sharing" in label for label in labels)
    with pytest.raises(StudyError, match="slope_rule='fitted', got 'parameter-growth'"):
        search("kronecker", trials=3, study="f", slope_rule="parameter-growth", **common)

    # a study stored before the rule was recorded used the fitted exponent, and resumes with it
    writable = optuna.load_study(study_name="made", storage=open_storage("made", None, tmp_path).storage)
    old = {k: v for k, v in writable.user_attrs["structsearch"].items() if k != "slope_rule"}
    writable.set_user_attr("structsearch", old)
    assert search("kronecker", trials=2, study="made", slope_rule="fitted", **common).resumed
    with pytest.raises(TaskError, match="slope_rule: only the frontier evaluator"):
        search("kronecker", trials=1, study="p", evaluate_fn="proxy", slope_rule="fitted", **common)


def test_the_report_draws_the_bent_line_the_score_was_read_from(synthetic):
    from structsearch.engine._scorers import score_attrs
    from structsearch.reporting import _fit_line

    r = frontier_score("kronecker", "mlp-regression", budget=1e10, target_flops=3e11)
    fit = score_attrs(r)["fit"]
    assert fit["slope_factor"] == pytest.approx(2 / 3) and fit["largest"] == r.frontier[-1][0]
    assert _fit_line(fit, np.array([3e11]))[0] == pytest.approx(r.score, rel=1e-9)
    assert _fit_line(fit, np.array([2e9]))[0] == pytest.approx(A * 2e9**-B, rel=1e-6)  # within the ladder: as fitted
    plain = score_attrs(frontier_score("btt", "mlp-regression", budget=1e10, target_flops=3e11))["fit"]
    assert "slope_factor" not in plain


def test_a_target_inside_the_ladder_is_not_labelled_as_bent(synthetic):
    """Below the last rung the fit is read as fitted, so the label must not claim a scaled exponent."""
    inside = frontier_score("kronecker", "mlp-regression", budget=1e10, target_flops=2e9)
    assert inside.score_kind == "predicted" and inside.prediction == pytest.approx(A * 2e9**-B, rel=1e-6)
    assert "parameter sharing" not in inside.score_label


def test_the_search_result_names_the_slope_rule_the_study_scores_with(tmp_path, monkeypatch):
    """`search --json` prints the session's config: its slope rule is the one used, not the argument's None."""
    monkeypatch.setattr(evaluation, "evaluate", Synthetic())
    common = dict(task="mlp-regression", budget=1e9, width=64, runs_dir=tmp_path, pruner="none", progress=False)
    common.update(confirm=False, references=False)
    assert search("kronecker", trials=1, study="d", **common).config["slope_rule"] == "parameter-growth"
    search("kronecker", trials=1, study="f", slope_rule="fitted", **common)
    assert search("kronecker", trials=2, study="f", **common).config["slope_rule"] == "fitted"
    assert search("kronecker", trials=1, study="p", evaluate_fn="proxy", **common).config["slope_rule"] is None


def test_the_frontier_named_as_recorded_is_the_frontier_scorer(tmp_path, monkeypatch):
    """--evaluator structsearch.frontier:frontier_score (the name a study records) scores with the study's rule."""
    from structsearch.engine import resolve_evaluator

    fn, name = resolve_evaluator("structsearch.frontier:frontier_score", slope_rule="fitted")
    assert isinstance(fn, FrontierScorer) and fn.slope_rule == "fitted" and name.endswith(":frontier_score")
    monkeypatch.setattr(evaluation, "evaluate", Synthetic())
    monkeypatch.setattr(frontier, "parameter_growth", lambda spec: 0.5)  # every candidate would bend
    common = dict(task="mlp-regression", budget=1e9, width=64, runs_dir=tmp_path, pruner="none", progress=False)
    common.update(confirm=False, references=False)
    search("kronecker", trials=1, study="f", slope_rule="fitted", **common)
    search("kronecker", trials=2, study="f", evaluate_fn="structsearch.frontier:frontier_score", **common)
    loaded, _ = load_existing_study("f", runs_dir=tmp_path)
    labels = [t.user_attrs.get("score_label", "") for t in loaded.trials if t.user_attrs.get("score_kind")]
    assert len(labels) == 2 and not any("parameter sharing" in label for label in labels)


def test_the_far_target_caution_quotes_the_measurement_of_the_rule_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    """--slope-rule fitted ranked at 0.20-0.63 at 30x (frontier_fidelity_3e10.json, frontier_fidelity.json)."""
    from structsearch.cli.search_cmd import _caution_far_target
    from structsearch.frontier import lookahead_note

    note = lookahead_note(1e9, 1e11, slope_rule="fitted")
    assert note is not None and "0.20-0.63 at 30x" in note and "0.69-0.74 at 10x" in note
    args = argparse.Namespace(evaluator=None, target_flops=1e11, budget=1e9, task="mlp-regression", slope_rule="fitted")
    _caution_far_target(args)
    assert "0.20-0.63 at 30x" in capsys.readouterr().err


def test_frontier_score_takes_an_exported_spec_file_as_evaluate_does(synthetic, tmp_path):
    pytest.importorskip("torch")
    import json

    path = tmp_path / "best.json"
    path.write_text(json.dumps({"specs": [{"theta": parse_spec("kronecker").as_dict()}]}))
    for spec in (path, str(path)):
        r = frontier_score(spec, "mlp-regression", budget=1e10, target_flops=3e11)
        assert r.spec == parse_spec("kronecker").paper and r.slope_factor == pytest.approx(2 / 3)


def test_each_rung_validates_at_the_ladders_marks(monkeypatch):
    seen = []

    def recording(spec, task=None, budget=None, seed=0, width=None, eval_points=10, **kw):
        seen.append(eval_points)
        return Synthetic()(spec, task, budget, seed, width, **kw)

    monkeypatch.setattr(evaluation, "evaluate", recording)
    frontier_score("btt", "mlp-regression", budget=1e10)
    frontier_score("btt", "mlp-regression", budget=1e10, ladder=Ladder(eval_points=2))
    assert seen == [5, 5, 5, 2, 2, 2]
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        Ladder(eval_points=0)
