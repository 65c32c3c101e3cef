"""Two worker processes share one study on PostgreSQL (several machines would do the same)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from structsearch.engine._storage import _with_driver

REPO = Path(__file__).resolve().parents[1]
URL = os.environ.get("STRUCTSEARCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

pytestmark = pytest.mark.postgres


def _reachable() -> str | None:
    try:
        import psycopg2
    except ImportError:
        return "psycopg2 is not installed (pip install psycopg2-binary)"
    try:
        psycopg2.connect(URL, connect_timeout=3).close()
    except Exception as err:
        return f"PostgreSQL at {URL} is unreachable: {str(err).strip().splitlines()[0]}"
    return None


@pytest.fixture
def postgres():
    reason = _reachable()
    if reason:
        pytest.skip(reason)
    return URL


def test_two_workers_share_a_postgres_study(postgres, tmp_path):
    study = f"pg-{uuid.uuid4().hex[:10]}"
    command = [
        sys.executable,
        "-m",
        "structsearch",
        "search",
        "--space",
        "kronecker",
        "--task",
        "toy",
        "--evaluator",
        "tests.test_faults:slow_evaluate",
        "--width",
        "64",
        "--trials",
        "10",
        "--study",
        study,
        "--storage",
        postgres,
        "--no-progress",
        "--json",
        "--runs-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "STRUCTSEARCH_TEST_SLEEP": "0.2"}
    workers = [
        subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [w.communicate(timeout=180) for w in workers]
    try:
        for w, (_out, err) in zip(workers, outs, strict=True):
            assert w.returncode == 0, err
        loaded = optuna.load_study(study_name=study, storage=_with_driver(postgres))
        trials = loaded.get_trials()
        done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert 10 <= len(done) <= 11  # two workers may both take the last slot
        assert not [t for t in trials if t.state == TrialState.RUNNING]
        assert len({t.user_attrs["worker"] for t in done}) == 2  # both did work
        trained = [t.user_attrs["sizes"] for t in done if t.user_attrs["status"] == "evaluated"]
        assert len(trained) == len(set(trained))  # nothing trained twice
        assert loaded.user_attrs["structsearch"]["task"] == "toy"
        report = subprocess.run(
            [sys.executable, "-m", "structsearch", "report", study, "--storage", postgres, "--json", "--no-plots"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert report.returncode == 0, report.stderr
    finally:
        optuna.delete_study(study_name=study, storage=_with_driver(postgres))
