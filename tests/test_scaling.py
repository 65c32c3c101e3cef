"""Scaling: frontier extraction, power-law fits, multipliers, the scale() ladder and its CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from structsearch.scaling import (
    PowerLawFit,
    ScalePoint,
    StructureScaling,
    _with_multipliers,
    compute_at_loss,
    fit_power_law,
    ladder_frontier,
    pareto_frontier,
    scale,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~10x faster than two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_frontier_on_a_hand_made_example():
    points = [
        (1e9, 0.90),  # cheapest: always on the frontier
        (2e9, 0.95),  # worse and dearer than the first: dominated
        (3e9, 0.70),
        (3e9, 0.75),  # same compute, higher loss: dominated
        (5e9, 0.72),  # dearer than (3e9, 0.70) and worse: dominated
        (8e9, 0.50),
        (9e9, math.nan),  # failed runs never enter
    ]
    assert pareto_frontier(points) == [(1e9, 0.90), (3e9, 0.70), (8e9, 0.50)]
    assert pareto_frontier([]) == []


def test_ladder_frontier_takes_the_best_width_per_budget():
    def pt(width, budget, flops, loss):
        return ScalePoint(width=width, budget=budget, status="ok", train_flops=flops, final_loss=loss)

    points = [
        pt(64, 1e10, 0.99e10, 0.32),
        pt(512, 1e10, 0.92e10, 0.76),  # cheapest by a few steps, but the worst width at this budget
        pt(128, 3e10, 2.99e10, 0.28),
        pt(512, 3e10, 2.95e10, 0.30),
        pt(128, 1e11, 0.99e11, 0.29),  # best at its budget but beaten by a cheaper point
        pt(256, 1e11, 0.98e11, 0.30),
        ScalePoint(width=16, budget=1e10, status="diverged"),
    ]
    assert ladder_frontier(points) == [(0.99e10, 0.32), (2.99e10, 0.28)]
    assert pareto_frontier([(p.train_flops, p.final_loss) for p in points[:6]])[0] == (0.92e10, 0.76)


def test_power_law_fit_recovers_a_and_b():
    rng = np.random.default_rng(0)
    c = np.geomspace(1e9, 1e13, 12)
    a, b = 30.0, 0.12
    loss = a * c**-b * np.exp(rng.normal(0, 0.01, c.size))
    fit = fit_power_law(c, loss)
    assert fit.b == pytest.approx(b, abs=0.01)
    assert fit.a == pytest.approx(a, rel=0.3)
    assert fit.b_err is not None and 0 < fit.b_err < 0.01
    assert abs(fit.b - b) < 4 * fit.b_err
    assert fit.log_rmse < 0.02
    # exact data: exact recovery
    exact = fit_power_law(c, a * c**-b)
    assert exact.b == pytest.approx(b, rel=1e-6) and exact.a == pytest.approx(a, rel=1e-5)
    assert exact.predict(1e10) == pytest.approx(a * 1e10**-b, rel=1e-6)
    assert exact.compute_for(a * 1e11**-b) == pytest.approx(1e11, rel=1e-5)


def test_power_law_fit_with_offset():
    c = np.geomspace(1e9, 1e14, 15)
    fit = fit_power_law(c, 50.0 * c**-0.2 + 0.1, offset=True)
    assert fit.offset and fit.c == pytest.approx(0.1, rel=0.02)
    assert fit.b == pytest.approx(0.2, rel=0.02)
    assert fit.compute_for(0.05) is None  # below the irreducible loss
    with pytest.raises(ValueError, match="at least 4 points"):
        fit_power_law([1, 2, 3], [3, 2, 1], offset=True)


def test_two_point_fit_has_no_error_bars():
    fit = fit_power_law([1e9, 1e10], [2.0, 1.0])
    assert fit.b == pytest.approx(math.log10(2))
    assert fit.b_err is None


def test_compute_at_loss_interpolates_log_log():
    frontier = [(1e9, 2.0), (1e10, 1.0), (1e12, 0.5)]
    assert compute_at_loss(frontier, 1.0) == pytest.approx(1e10)
    assert compute_at_loss(frontier, 2.0**-0.5) == pytest.approx(1e11)
    assert compute_at_loss(frontier, 0.4) is None  # the frontier never gets there
    assert compute_at_loss([], 1.0) is None


def test_multiplier_against_the_baseline():
    c = [1e9, 1e10, 1e11]
    dense = StructureScaling(
        spec="d",
        structure="dense",
        points=[],
        frontier=[(x, 10 * x**-0.1) for x in c],
        fit=PowerLawFit(a=10, b=0.1, n_points=3, log_rmse=0),
    )
    # the same curve shifted to 4x less compute: L(C) = 10 (4 C)^-0.1
    better = StructureScaling(
        spec="b",
        structure="btt",
        points=[],
        frontier=[(x, 10 * (4 * x) ** -0.1) for x in c],
        fit=PowerLawFit(a=10 * 4**-0.1, b=0.1, n_points=3, log_rmse=0),
    )
    rows, target = _with_multipliers([dense, better], dense)
    assert target == pytest.approx(10 * 1e11**-0.1)
    assert rows[0].multiplier == pytest.approx(1.0) and rows[0].multiplier_measured == pytest.approx(1.0)
    assert rows[1].multiplier == pytest.approx(4.0, rel=1e-6)
    assert rows[1].multiplier_measured == pytest.approx(4.0, rel=1e-4)
    assert rows[1].reaches_target and not rows[1].measured_is_lower_bound
    # a structure whose cheapest run already beats L*: the measured multiplier is a lower bound
    cheap = better.model_copy(update={"frontier": [(1e9, 0.5)], "fit": None})
    (row,), _ = _with_multipliers([cheap], dense)
    assert row.measured_is_lower_bound and row.multiplier_measured == pytest.approx(1e11 / 1e9)
    assert row.multiplier is None


def test_scale_ladder_end_to_end(tmp_path):
    plot = tmp_path / "frontier.png"
    result = scale(
        ["btt", "dense"],
        task="structsearch.tasks.example_plugin:make_task",
        widths=[16, 36],
        budgets=[2e6, 6e6],
        device="cpu",
        plot=str(plot),
        task_options={"dim": 8},
    )
    assert [row.structure for row in result.structures] == ["dense", "btt"]  # baseline first
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for row in result.structures:
        assert len(row.points) == 4
        assert all(p.status == "ok" for p in row.points)
        assert row.frontier == ladder_frontier(row.points)
        assert set(row.frontier) <= {(p.train_flops, p.final_loss) for p in row.points}
        assert row.fit is not None
    assert result.structures[0].multiplier == pytest.approx(1.0)
    json.dumps(result.to_dict(), allow_nan=False)


def test_scale_records_padding_as_skipped():
    result = scale(
        "btt",
        task="structsearch.tasks.example_plugin:make_task",
        widths=[10, 16],
        budgets=[2e6],
        device="cpu",
        baseline=None,
        task_options={"dim": 8},
    )
    (row,) = result.structures
    assert [p.status for p in row.points] == ["skipped", "ok"]
    assert "padding" in row.points[0].reason


def test_cli_scale_help_and_json(capsys):
    out = subprocess.run(
        [sys.executable, "-m", "structsearch", "scale", "--help"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and "--widths" in out.stdout and "--budgets" in out.stdout
    args = [
        "scale",
        "btt",
        "--task",
        "structsearch.tasks.example_plugin:make_task",
        "--option",
        "dim=8",
        "--widths",
        "16",
        "--budgets",
        "2e6",
        "4e6",
        "--json",
    ]
    from structsearch.cli import main

    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [s["structure"] for s in payload["structures"]] == ["dense", "btt"]
    assert payload["target_loss"] is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"widths": 16}, "widths: expected a list"),
        ({"widths": [16.5]}, "widths: expected positive integers"),
        ({"budgets": "1e8"}, "budgets: expected a list"),
        ({"threads": 0}, "threads: expected an integer from 1"),
        ({"device": "meta"}, "device: expected 'cpu'"),
        ({"plot": ""}, "plot: expected a file name"),
    ],
)
def test_scale_refuses_bad_arguments_before_training(kwargs, message):
    from structsearch.errors import TaskError

    started = []
    with pytest.raises(TaskError, match=message):
        scale(
            ["btt"],
            **{"widths": [16], "budgets": [1e8], **kwargs},
            baseline=None,
            progress=lambda *a: started.append(a),
        )
    assert not started  # no progress display began
