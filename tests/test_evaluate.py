"""evaluate(): determinism, FLOP accounting, budget -> steps, divergence, failures, bad input, CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from structsearch.errors import BudgetError, SizeError, SpecError, TaskError
from structsearch.evaluation import EvalResult, evaluate, steps_for_budget
from structsearch.tasks import Task
from structsearch.tasks.example_plugin import LinearMapTask

MLP = {"teacher_width": 32, "teacher_depth": 2, "batch_size": 32, "val_size": 256}
PLUGIN = "structsearch.tasks.example_plugin:make_task"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~10x faster than two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(spec="btt", steps=20, **kwargs) -> EvalResult:
    kwargs.setdefault("task_options", MLP)
    return evaluate(spec, "mlp-regression", width=kwargs.pop("width", 64), steps=steps, device="cpu", **kwargs)


def test_deterministic_for_a_seed():
    a, b, c = run(seed=3), run(seed=3), run(seed=4)
    assert a.status == "ok" and a.final_loss is not None
    assert [p.val_loss for p in a.curve] == [p.val_loss for p in b.curve]
    assert a.final_loss == b.final_loss
    assert a.final_loss != c.final_loss


def test_result_fields_and_json():
    r = run("dense", steps=10, eval_points=5)
    d = r.to_dict()
    text = json.dumps(d, allow_nan=False)  # JSON-safe, no NaN
    assert json.loads(text)["final_loss"] == r.final_loss
    for key in ("final_loss", "diverged", "reason", "train_flops", "steps", "wall_seconds", "params", "macs", "width"):
        assert key in d
    assert d["diverged"] is False and d["reason"] is None and d["width"] == 64
    assert [p.step for p in r.curve] == [0, 2, 4, 6, 8, 10]
    assert r.curve[-1].train_flops == pytest.approx(r.train_flops)
    assert r.curve[0].val_loss == pytest.approx(1.0, abs=0.15)  # zero readout predicts 0: MSE ~ E[y^2] = 1
    assert set(r.versions) >= {"python", "torch", "numpy", "structsearch"}
    assert r.device == "cpu" and r.seed == 0 and r.layer_shapes == [(64, 64), (64, 64)]
    assert r.layer_paths == {"dense": 2} and d["layer_paths"] == {"dense": 2}


@pytest.mark.parametrize("spec", ["dense", "btt", "low-rank:0.5", "(1/4|7/12|1/6|1/12|1/6|3/4|1/12)"])
def test_flops_equal_the_formula(spec):
    # the last runs on its materialised weight (MACs 0.86 of dense's); it is charged and counted as its structure
    from structsearch.taxonomy import analyze

    r = run(spec, steps=2, width=64)
    expected_path = {"dense": "dense", "btt": "btt", "low-rank:0.5": "general"}.get(spec, "materialised")
    assert r.layer_paths == {expected_path: 2}
    f, batch, w = r.flops, MLP["batch_size"], 64
    hidden = analyze(spec, w, w).macs if spec != "dense" else w * w
    macs = {"inp": 32 * w, "hidden.0": hidden, "hidden.1": hidden, "out": w * 8}
    assert {layer.name: layer.macs_per_vector for layer in f.layers} == macs
    assert all(layer.vectors_per_step == batch for layer in f.layers)
    assert f.linear_macs_per_step == batch * sum(macs.values())
    assert f.linear_flops_per_step == 6 * f.linear_macs_per_step
    assert f.other_flops_per_step == pytest.approx(0.0, abs=1e-6 * f.flops_per_step)  # ReLU/MSE: no matmuls
    assert r.train_flops == r.steps * f.flops_per_step
    assert r.macs == sum(macs.values())
    # FlopCounterMode over the whole step: the formula less the input gradient the first layer
    # never computes (2 * its MACs), i.e. within a few percent of 6 * MACs.
    assert f.measured_flops_per_step == pytest.approx(f.flops_per_step - 2 * batch * macs["inp"], rel=0.01)


def test_flop_counter_agrees_with_formula_within_a_few_percent():
    r = run("dense", steps=1, width=256)
    assert r.flops.measured_ratio == pytest.approx(1.0, abs=0.03)


def test_char_lm_counts_attention_as_other_flops():
    opts = {"n_layer": 1, "seq_len": 16, "batch_size": 4, "val_tokens": 256}
    r = evaluate("btt", "char-lm", steps=2, width=64, task_options=opts, device="cpu")
    f = r.flops
    tokens = 4 * 16
    assert {layer.vectors_per_step for layer in f.layers} == {tokens}
    structured = [layer for layer in f.layers if layer.structured]
    assert len(structured) == 6  # q, k, v, o, fc, proj
    assert f.other_flops_per_step > 0  # attention scores and values, measured
    # every linear layer here gets an input gradient, so the formula matches the counter closely
    assert f.measured_ratio == pytest.approx(1.0, rel=0.02)
    assert r.metric == "bpc" and r.final_loss is not None and r.final_loss < 7


def test_budget_decides_steps():
    assert steps_for_budget(10.0, 3.0) == 3
    with pytest.raises(BudgetError, match="buys no training step; one step costs 3 FLOPs"):
        steps_for_budget(2.0, 3.0)
    fps = run(steps=1).flops_per_step
    with pytest.raises(BudgetError):  # a clear error, not one step past the budget
        evaluate("btt", "mlp-regression", budget=0.5 * fps, width=64, task_options=MLP, device="cpu")
    r = evaluate("btt", "mlp-regression", budget=5.5 * fps, width=64, task_options=MLP, device="cpu")
    assert r.steps == r.planned_steps == 5
    assert r.train_flops == pytest.approx(5 * fps) and r.train_flops <= r.budget


def test_default_budget_and_width_come_from_the_task():
    task = LinearMapTask()
    r = evaluate("dense", task, device="cpu")
    assert r.width == task.default_width and r.budget == task.budget
    assert r.steps == steps_for_budget(task.budget, r.flops_per_step)
    assert r.lr == task.lr and r.base_width == task.base_width


def test_absurd_lr_is_recorded_as_diverged():
    r = run("btt", steps=30, lr=1e4)
    assert r.status == "diverged" and r.diverged
    assert r.final_loss is None and r.divergence_step is not None and r.divergence_step <= 30
    assert "exploded" in r.reason or "non-finite" in r.reason
    json.dumps(r.to_dict(), allow_nan=False)


class _Broken(LinearMapTask):
    def loss(self, model, batch):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls > 3:  # 1 measurement + validation + 1 step, then fail
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().loss(model, batch)


def test_runtime_error_is_recorded_as_failed():
    r = evaluate("btt", _Broken(), steps=10, device="cpu")
    assert r.status == "failed" and not r.diverged and r.final_loss is None
    assert "RuntimeError" in r.reason and "out of memory" in r.reason


class _NoMemory(LinearMapTask):
    def build_model(self, linear, width):
        raise RuntimeError("CUDA out of memory. Tried to allocate 80.00 GiB")


def test_runtime_error_before_training_is_recorded_as_failed():
    state = torch.random.get_rng_state()
    r = evaluate("btt", _NoMemory(), steps=10, device="cpu")
    assert r.status == "failed" and r.steps == 0 and r.flops is None
    assert "before training" in r.reason and "out of memory" in r.reason
    json.dumps(r.to_dict(), allow_nan=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone


def test_bad_input_raises():
    with pytest.raises(SpecError):
        run("no-such-structure")
    with pytest.raises(TaskError, match="unknown task"):
        evaluate("btt", "no-such-task")
    with pytest.raises(TaskError, match="width"):
        run(width=0)
    with pytest.raises(TaskError, match="budget"):
        evaluate("btt", "mlp-regression", budget=-1.0, task_options=MLP)
    with pytest.raises(TaskError, match="lr"):
        run(lr=math.nan)
    # BTT at width 10: 3 x 4 = 12 input features, 20% padding over the 15% limit
    with pytest.raises(SizeError, match="padding"):
        run("btt", width=10)


def test_plugin_task_trains():
    r = evaluate("btt", PLUGIN, budget=2e7, task_options={"dim": 8}, device="cpu")
    assert r.status == "ok" and r.task == "linear-map" and r.steps >= 1
    assert r.curve[-1].val_loss < r.curve[0].val_loss


def test_plain_task_object_without_options():
    with pytest.raises(TaskError, match="options"):
        evaluate("btt", LinearMapTask(), task_options={"dim": 4})
    assert isinstance(LinearMapTask(), Task)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "structsearch", *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def test_cli_evaluate_json_and_errors():
    out = _cli("evaluate", "btt", "--task", PLUGIN, "--option", "dim=8", "--steps", "3", "--json")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["steps"] == 3 and payload["status"] == "ok"
    bad = _cli("evaluate", "btt", "--task", "nope")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "mlp-regression" in bad.stderr and "char-lm" in bad.stderr


def test_cli_evaluate_table_in_process(capsys):
    from structsearch.cli import main

    assert main(["evaluate", "dense", "--task", PLUGIN, "--steps", "2"]) == 0
    assert "final validation mse" in capsys.readouterr().out


def test_torch_is_not_imported_by_the_modules():
    code = (
        "import structsearch.evaluation, structsearch.scaling, structsearch.tasks, sys; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_uses_cpu_when_asked():
    assert torch.device(run(steps=1).device).type == "cpu"


def test_package_level_names_work_after_importing_the_modules():
    import structsearch
    import structsearch.engine
    import structsearch.evaluation
    import structsearch.exporting
    import structsearch.reporting  # importing a module must not shadow a function of the same API

    r = structsearch.evaluate("btt", PLUGIN, steps=2, device="cpu")
    assert r.status == "ok" and r.steps == 2
    assert structsearch.scale.__module__ == "structsearch.scaling"
    for name in ("search", "report", "export", "proxy"):
        assert callable(getattr(structsearch, name)), name


def test_matched_width_is_iso_flop():
    from structsearch.evaluation import linear_macs_at, matched_width
    from structsearch.tasks import MLPRegression

    task = MLPRegression(**MLP)
    assert matched_width("dense", task, 64) == 64
    target = linear_macs_at("dense", task, 64)
    assert target == 32 * 64 + 2 * 64 * 64 + 64 * 8
    w = matched_width("btt", task, 64)
    assert w > 64 and w % task.width_multiple == 0
    assert linear_macs_at("btt", task, w) <= target < linear_macs_at("btt", task, w + 64)
    # the per-(spec, task settings, width) cache: another task object with other settings is counted anew
    wider = MLPRegression(**{**MLP, "input_dim": MLP.get("input_dim", 32) + 8})
    assert linear_macs_at("dense", wider, 64) == target + 8 * 64
    r = evaluate("btt", task, width="matched", steps=1, device="cpu")
    assert r.width == matched_width("btt", task) and r.macs <= linear_macs_at("dense", task, task.default_width)
    assert evaluate("btt", task, width="fixed", steps=1, device="cpu").width == task.default_width
    with pytest.raises(TaskError, match="width"):
        evaluate("btt", task, width="widest", steps=1)


def test_macs_cache_tells_plugin_tasks_apart_by_their_settings():
    """A plug-in task without ``options`` keeps its settings as attributes: those key the cache too."""
    from torch import nn

    from structsearch.evaluation import linear_macs_at
    from structsearch.tasks import Task

    class Deep(Task):
        name = "deep"

        def __init__(self, depth: int) -> None:
            self.depth = depth

        def build_model(self, linear, width):
            return nn.Sequential(nn.Linear(8, width), *[linear(width, width, True) for _ in range(self.depth)])

    shallow, deep = linear_macs_at("dense", Deep(1), 64), linear_macs_at("dense", Deep(4), 64)
    assert (shallow, deep) == (8 * 64 + 64**2, 8 * 64 + 4 * 64**2)
    task = Deep(1)
    one = linear_macs_at("btt", task, 64)
    task.depth = 3  # changed after a call: counted anew, not served from the cache
    assert linear_macs_at("btt", task, 64) - 8 * 64 == 3 * (one - 8 * 64)


def test_extrapolate_loss_follows_the_power_law():
    from structsearch.evaluation import extrapolate_loss

    # L = 2 C^-0.5 through (1, 2) and (4, 1): at C = 100 it is 0.2
    assert extrapolate_loss((1.0, 2.0), (4.0, 1.0), 100.0) == pytest.approx(0.2)
    # a run that got worse with more compute is not extrapolated (exponent clamped at 0)
    assert extrapolate_loss((1.0, 1.0), (4.0, 1.2), 100.0) == pytest.approx(1.2)
    with pytest.raises(ValueError):
        extrapolate_loss((4.0, 1.0), (1.0, 2.0), 10.0)


def test_proxy_spends_the_budget_in_two_runs_and_extrapolates():
    from structsearch.evaluation import extrapolate_loss, proxy

    r = proxy("btt", PLUGIN, budget=4e7, task_options={"dim": 8}, device="cpu")
    small, large = r.runs
    assert r.status == "ok" and r.score is not None
    assert small.budget == pytest.approx(1e7) and large.budget == pytest.approx(3e7)
    assert r.train_flops == small.train_flops + large.train_flops <= 4e7
    assert r.horizon_budget == pytest.approx(4e8)
    expected = extrapolate_loss(
        (small.train_flops, small.final_loss), (large.train_flops, large.final_loss), r.horizon_budget
    )
    assert r.score == pytest.approx(expected) and r.final_loss == large.final_loss
    json.dumps(r.to_dict(), allow_nan=False)
    bad = proxy("btt", PLUGIN, budget=4e7, lr=1e4, task_options={"dim": 8}, device="cpu")
    assert bad.diverged and bad.score is None and bad.reason


def test_cli_proxy_json(capsys):
    from structsearch.cli import main

    args = ["evaluate", "btt", "--task", PLUGIN, "--option", "dim=8", "--budget", "4e7", "--proxy", "--json"]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["score"] is not None and len(payload["runs"]) == 2
    assert payload["horizon_budget"] == pytest.approx(4e8)


def test_threads_are_set_for_the_call_and_restored():
    before = torch.get_num_threads()
    r = run(steps=2, threads=1)
    assert r.status == "ok" and torch.get_num_threads() == before
    with pytest.raises(TaskError, match="threads"):
        run(steps=1, threads=0)


def test_step_counts_teacher_and_validation_are_made_once_and_change_nothing(monkeypatch):
    import importlib

    import structsearch.evaluation as evaluation

    mlp = importlib.import_module("structsearch.tasks.mlp_regression")  # the package exports a function of that name
    evaluation._ACCOUNTS.clear()
    mlp._VALIDATION.clear()
    mlp._teacher.cache_clear()
    counted = []
    real_count = evaluation.count_step_flops
    monkeypatch.setattr(evaluation, "count_step_flops", lambda *a, **k: counted.append(1) or real_count(*a, **k))
    first = evaluate("btt", "mlp-regression", budget=2e7, width=16, task_options=MLP)
    again = evaluate("btt", "mlp-regression", budget=2e7, width=16, task_options=MLP)
    assert len(counted) == 1 and mlp._teacher.cache_info().currsize == 1 and len(mlp._VALIDATION) == 1
    assert again.flops == first.flops and _losses(again) == _losses(first)  # bit-identical
    other_batch = evaluate("btt", "mlp-regression", budget=2e7, width=16, task_options={**MLP, "batch_size": 64})
    assert len(counted) == 2 and other_batch.flops.flops_per_step == 2 * first.flops.flops_per_step
    evaluation._ACCOUNTS.clear()
    mlp._VALIDATION.clear()
    mlp._teacher.cache_clear()
    fresh = evaluate("btt", "mlp-regression", budget=2e7, width=16, task_options=MLP)
    assert fresh.flops == first.flops and _losses(fresh) == _losses(first)


def _losses(result: EvalResult) -> list[tuple]:
    return [(p.step, p.train_flops, p.val_loss, p.train_loss) for p in result.curve]
