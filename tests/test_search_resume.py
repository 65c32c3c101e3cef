"""Kill a search process (SIGKILL, SIGINT) and run the same command again: nothing finished is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from structsearch.engine import load_existing_study, toy_evaluate

REPO = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.WARNING)


def slow_evaluate(spec, **kw):
    """toy_evaluate that takes a while, so that a kill lands mid-training; it logs each start."""
    started = os.environ.get("STRUCTSEARCH_TEST_STARTED")
    if started:
        with open(started, "a") as log:
            log.write(f"{spec.paper}\n")
    time.sleep(float(os.environ.get("STRUCTSEARCH_TEST_SLEEP", "0.4")))
    return toy_evaluate(spec, **kw)


@pytest.fixture
def runs():
    import shutil
    import tempfile

    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="structsearch-resume-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _command(runs: Path, trials: int, study: str = "kill") -> list[str]:
    return [
        sys.executable,
        "-m",
        "structsearch",
        "search",
        "--space",
        "btt",
        "--task",
        "toy",
        "--width",
        "64",
        "--trials",
        str(trials),
        "--study",
        study,
        "--runs-dir",
        str(runs),
        "--no-progress",
        "--evaluator",
        "tests.test_search_resume:slow_evaluate",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "STRUCTSEARCH_HEARTBEAT_S": "1", "STRUCTSEARCH_GRACE_S": "2"}


def _finished(runs: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    try:
        loaded, _ = load_existing_study(study, runs_dir=runs)
    except Exception:
        return []
    return [t for t in loaded.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def _start_and_stop(runs: Path, sig: int, study: str, trials: int = 8, after: int = 2) -> subprocess.CompletedProcess:
    """Signal the search once ``after`` trainings have finished and the next one is under way."""
    started = runs / f"{study}.started"
    env = {**_env(), "STRUCTSEARCH_TEST_STARTED": str(started)}
    proc = subprocess.Popen(
        _command(runs, trials, study),
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a background CI job may run with SIGINT ignored, which the child would inherit
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

    def trainings_started() -> int:
        return len(started.read_text().splitlines()) if started.exists() else 0

    deadline = time.time() + 60
    while trainings_started() <= after and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.05)  # inside the (after + 1)-th training, which sleeps 0.4 s
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_kill_9_then_rerun_resumes(runs):
    killed = _start_and_stop(runs, signal.SIGKILL, "kill")
    assert killed.returncode == -signal.SIGKILL
    loaded, _ = load_existing_study("kill", runs_dir=runs)
    before = {t.number: (t.state, t.values, t.params) for t in loaded.get_trials() if t.state.is_finished()}
    running = [t for t in loaded.get_trials() if t.state == TrialState.RUNNING]
    assert len(before) >= 2 and len(running) == 1

    again = subprocess.run(_command(runs, 8, "kill"), env=_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    loaded, _ = load_existing_study("kill", runs_dir=runs)
    trials = loaded.get_trials()
    for number, (state, values, params) in before.items():  # nothing finished was lost or changed
        assert (trials[number].state, trials[number].values, trials[number].params) == (state, values, params)
    orphan = trials[running[0].number]
    assert orphan.state == TrialState.FAIL and orphan.user_attrs["status"] == "interrupted"
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 8
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    if orphan.params:  # its proposal was re-run
        assert any(t.user_attrs.get("retry_of") == orphan.number and t.state.is_finished() for t in trials)
    assert "1 interrupted trial(s) re-queued" in again.stdout


def test_ctrl_c_marks_the_trial_and_requeues_it(runs):
    stopped = _start_and_stop(runs, signal.SIGINT, "ctrlc", after=1)
    assert stopped.returncode == 130
    assert stopped.stderr.strip().splitlines()[-1] == "structsearch search: interrupted"
    assert "Traceback" not in stopped.stderr
    loaded, _ = load_existing_study("ctrlc", runs_dir=runs)
    trials = loaded.get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["status"] == "interrupted"
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == failed[0].number
    assert not [t for t in trials if t.state == TrialState.RUNNING]
