"""Faults, with real processes: signals, dead workers, fresh databases, a silent endpoint, files that are not studies.

The slow ones have a short default form; ``STRUCTSEARCH_FAULT_ROUNDS=N`` runs N fresh-database
rounds instead of 5. PostgreSQL tests use ``STRUCTSEARCH_TEST_POSTGRES`` (default the local
server, database ``test``), create a database of their own for every round and drop it after;
they are skipped, with the reason, when the server is unreachable.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from structsearch.engine import load_existing_study, toy_evaluate

REPO = Path(__file__).resolve().parents[1]
PG = os.environ.get("STRUCTSEARCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
optuna.logging.set_verbosity(optuna.logging.WARNING)
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def slow_evaluate(spec, **kw):
    """toy_evaluate that takes a while, so that a kill lands mid-training; it logs ``pid paper`` at each start."""
    started = os.environ.get("STRUCTSEARCH_TEST_STARTED")
    if started:
        with open(started, "a") as log:
            log.write(f"{os.getpid()} {spec.paper}\n")
    time.sleep(float(os.environ.get("STRUCTSEARCH_TEST_SLEEP", "0.4")))
    return toy_evaluate(spec, **kw)


@pytest.fixture
def runs():
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="structsearch-faults-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "STRUCTSEARCH_HEARTBEAT_S": "1",
        "STRUCTSEARCH_GRACE_S": "3",
        **extra,
    }


def _search(runs: Path, trials: int, study: str, *extra: str) -> list[str]:
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
        "tests.test_faults:slow_evaluate",
        "--no-references",  # every start the log records is a trial's
        *extra,
    ]


def _popen(command: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a background CI job may run with SIGINT ignored, which the child would inherit
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kw,
    )


def _starts(log: Path) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    return [(int(p), s) for p, _, s in (line.partition(" ") for line in log.read_text().splitlines() if line)]


def _wait_for(predicate, timeout: float = 90.0, procs: list[subprocess.Popen] = ()) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out waiting"
        assert not procs or any(p.poll() is None for p in procs), "every worker exited early"
        time.sleep(0.02)


def _states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.get_trials()]


# -- signals --------------------------------------------------------------------------------------


def _start_and_stop(runs: Path, sig: int, study: str, trials: int = 8, after: int = 2) -> subprocess.CompletedProcess:
    """Signal the search once ``after`` trainings have finished and the next one is under way."""
    log = runs / f"{study}.started"
    proc = _popen(_search(runs, trials, study), _env(STRUCTSEARCH_TEST_STARTED=str(log)))
    _wait_for(lambda: len(_starts(log)) > after, procs=[proc])
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

    again = subprocess.run(_search(runs, 8, "kill"), env=_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    loaded, _ = load_existing_study("kill", runs_dir=runs)
    trials = loaded.get_trials()
    for number, (state, values, params) in before.items():  # nothing finished was lost or changed
        assert (trials[number].state, trials[number].values, trials[number].params) == (state, values, params)
    orphan = trials[running[0].number]
    assert orphan.state == TrialState.FAIL and orphan.user_attrs["status"] == "interrupted"
    assert sum(t.state in DONE for t in trials) == 8
    assert TrialState.RUNNING not in _states(loaded)
    if orphan.params:  # its proposal was re-run
        assert any(t.user_attrs.get("retry_of") == orphan.number and t.state.is_finished() for t in trials)
    assert "1 interrupted trial(s) re-queued" in again.stdout


def test_ctrl_c_marks_the_trial_and_requeues_it(runs):
    stopped = _start_and_stop(runs, signal.SIGINT, "ctrlc", after=1)
    assert stopped.returncode == 130
    assert stopped.stderr.strip().splitlines() == ["structsearch search: interrupted"]
    loaded, _ = load_existing_study("ctrlc", runs_dir=runs)
    trials = loaded.get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["status"] == "interrupted"
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == failed[0].number
    assert TrialState.RUNNING not in _states(loaded)


def test_workers_flag_runs_n_processes_and_ctrl_c_stops_them_all(runs):
    log = runs / "team.started"
    env = _env(STRUCTSEARCH_TEST_STARTED=str(log), STRUCTSEARCH_TEST_SLEEP="3")
    team = _popen(_search(runs, 40, "team", "--workers", "3"), env, start_new_session=True)
    _wait_for(lambda: len({pid for pid, _ in _starts(log)}) == 3, procs=[team])  # all three are training
    os.killpg(team.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    out, err = team.communicate(timeout=30)
    assert team.returncode == 130 and err.strip().splitlines() == ["structsearch search: interrupted"], err
    pids = {pid for pid, _ in _starts(log)}
    assert not [pid for pid in pids if _alive(pid)]  # every worker has stopped
    loaded, _ = load_existing_study("team", runs_dir=runs)
    trials = loaded.get_trials()
    assert TrialState.RUNNING not in _states(loaded)
    interrupted = [t for t in trials if t.user_attrs.get("status") == "interrupted"]
    assert len(interrupted) == 3 and all(t.state == TrialState.FAIL for t in interrupted)
    assert len({t.user_attrs["worker"] for t in interrupted}) == 3

    # the same command again finishes the study with the three interrupted proposals re-run
    done = subprocess.run(
        _search(runs, 8, "team", "--workers", "2", "--json"),
        env=_env(STRUCTSEARCH_TEST_SLEEP="0.3"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    loaded, _ = load_existing_study("team", runs_dir=runs)
    assert sum(s in DONE for s in _states(loaded)) >= 8 and TrialState.RUNNING not in _states(loaded)


def _search_in_process(runs: Path, trials: int, study: str, evaluator: str, workers: int):
    """What _search runs from the command line, as a call of search() in this process."""
    from structsearch.engine import search

    return search(
        "btt",
        task="toy",
        width=64,
        trials=trials,
        study=study,
        runs_dir=runs,
        evaluate_fn=f"tests.test_faults:{evaluator}",
        references=False,
        confirm=False,
        progress=False,
        workers=workers,
    )


def test_python_search_with_workers_runs_n_processes_on_one_study(runs, monkeypatch):
    """search(..., workers=3) from Python starts the same team as --workers 3; its result adds up their sessions."""
    log = runs / "api.started"
    for key, value in _env(STRUCTSEARCH_TEST_STARTED=str(log), STRUCTSEARCH_TEST_SLEEP="0.6").items():
        monkeypatch.setenv(key, value)
    result = _search_in_process(runs, 9, "api", "slow_evaluate", workers=3)
    pids = {pid for pid, _ in _starts(log)}
    assert len(pids) == 3 and os.getpid() in pids  # this process and two more trained
    assert not [pid for pid in pids - {os.getpid()} if _alive(pid)]
    loaded, _ = load_existing_study("api", runs_dir=runs)
    finished = sum(s in DONE for s in _states(loaded))
    assert finished >= 9 and result.new_trials == finished and TrialState.RUNNING not in _states(loaded)


def crashing_evaluate(spec, **kw):
    """slow_evaluate in the worker that started the others; a hard crash in every worker it started."""
    if os.environ.get("STRUCTSEARCH_WORKER_OF"):
        os._exit(3)
    return slow_evaluate(spec, **kw)


def test_python_search_stops_early_and_says_so_when_a_worker_fails(runs, monkeypatch):
    for key, value in _env(STRUCTSEARCH_TEST_SLEEP="0.3").items():
        monkeypatch.setenv(key, value)
    from structsearch.errors import StudyError

    started = time.monotonic()
    with pytest.raises(StudyError, match=r"worker 2 \(pid \d+\) stopped with exit code 3"):
        _search_in_process(runs, 60, "crash", "crashing_evaluate", workers=2)
    loaded, _ = load_existing_study("crash", runs_dir=runs)
    # this process stopped after a trial or so once the other worker had died, not after all 60 (18 s)
    assert sum(s in DONE for s in _states(loaded)) < 30 and time.monotonic() - started < 15


def test_workers_flag_stops_early_and_says_so_when_a_worker_fails(runs):
    started = time.monotonic()
    done = subprocess.run(
        [*_search(runs, 60, "crash-cli", "--workers", "2"), "--evaluator", "tests.test_faults:crashing_evaluate"],
        env=_env(STRUCTSEARCH_TEST_SLEEP="0.3"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert re.fullmatch(
        r"structsearch search: error: worker 2 \(pid \d+\) stopped with exit code 3(: .*)?\n", done.stderr
    )
    assert time.monotonic() - started < 15  # not the 60 trials (18 s) this worker would have run alone


def killed_evaluate(spec, **kw):
    """slow_evaluate, except that a worker this process started is killed by SIGKILL in its first trial;
    this process waits for that before its own first trial, so the study cannot finish without the worker."""
    marker = Path(os.environ["STRUCTSEARCH_TEST_KILLED"])
    if os.environ.get("STRUCTSEARCH_WORKER_OF"):
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return slow_evaluate(spec, **kw)


def test_a_worker_killed_by_a_signal_leaves_the_others_to_finish_the_study(runs, monkeypatch):
    """kill -9 is not an error of the search: this worker re-runs the dead one's trial (heartbeat) and finishes."""
    for key, value in _env(
        STRUCTSEARCH_TEST_SLEEP="0.2", STRUCTSEARCH_TEST_KILLED=str(runs / "worker-killed.marker")
    ).items():
        monkeypatch.setenv(key, value)
    with pytest.warns(RuntimeWarning, match=r"worker 2 \(pid \d+\) was killed by SIGKILL"):
        result = _search_in_process(runs, 6, "killed", "killed_evaluate", workers=2)
    loaded, _ = load_existing_study("killed", runs_dir=runs)
    states = _states(loaded)
    assert sum(s in DONE for s in states) == 6 == result.trials and TrialState.RUNNING not in states
    assert any(t.user_attrs.get("retry_of") is not None for t in loaded.get_trials())  # the killed trial, re-run


def test_workers_stop_when_the_process_that_started_them_dies(runs):
    log = runs / "orphans.started"
    env = _env(STRUCTSEARCH_TEST_STARTED=str(log), STRUCTSEARCH_TEST_SLEEP="3")
    parent = _popen(_search(runs, 40, "orphans", "--workers", "2"), env)
    _wait_for(lambda: len({pid for pid, _ in _starts(log)}) == 2, procs=[parent])
    parent.kill()  # SIGKILL: no chance to stop its workers itself
    parent.communicate(timeout=30)
    others = {pid for pid, _ in _starts(log)} - {parent.pid}
    assert len(others) == 1
    _wait_for(lambda: not any(_alive(pid) for pid in others), timeout=30)  # SIGTERM from the kernel: a clean stop
    loaded, _ = load_existing_study("orphans", runs_dir=runs)
    interrupted = [t for t in loaded.get_trials() if t.user_attrs.get("status") == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0].user_attrs["worker"].endswith(f":{others.pop()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


# -- dead workers: survivors re-queue the trial and finish the study -------------------------------


def _kill_one_worker_mid_trial(runs: Path, study: str, storage: tuple[str, ...], trials: int = 10) -> optuna.Study:
    log = runs / f"{study}.started"
    env = _env(STRUCTSEARCH_TEST_STARTED=str(log), STRUCTSEARCH_TEST_SLEEP="1.5")
    workers = [_popen(_search(runs, trials, study, *storage), env) for _ in range(3)]
    try:
        by_pid = {w.pid: w for w in workers}
        _wait_for(lambda: len({pid for pid, _ in _starts(log)}) >= 2, procs=workers)
        victim_pid = _starts(log)[-1][0]  # it has just started a 1.5 s training
        by_pid[victim_pid].send_signal(signal.SIGKILL)
        results = {w.pid: w.communicate(timeout=180) for w in workers}
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    for w in workers:
        if w.pid == victim_pid:
            assert w.returncode == -signal.SIGKILL
        else:
            assert w.returncode == 0, results[w.pid][1]
    loaded, _ = load_existing_study(study, storage=storage[1] if storage else None, runs_dir=runs)
    trials_all = loaded.get_trials()
    assert TrialState.RUNNING not in _states(loaded)
    assert sum(t.state in DONE for t in trials_all) >= trials  # complete, with no manual rerun
    dead = [t for t in trials_all if t.state == TrialState.FAIL]
    assert len(dead) == 1 and dead[0].user_attrs["worker"].endswith(f":{victim_pid}")
    if dead[0].params:
        retry = [t for t in trials_all if t.user_attrs.get("retry_of") == dead[0].number]
        assert len(retry) == 1 and retry[0].state in DONE and retry[0].params == dead[0].params
    return loaded


def test_dead_worker_on_the_journal_is_requeued_by_the_survivors(runs):
    loaded = _kill_one_worker_mid_trial(runs, "dead", ())
    dead = next(t for t in loaded.get_trials() if t.state == TrialState.FAIL)
    assert dead.user_attrs["status"] == "interrupted" and "no heartbeat" in dead.user_attrs["reason"]


# -- PostgreSQL: fresh databases, dead workers ------------------------------------------------------


def _pg_admin():
    try:
        import psycopg2
    except ImportError:
        pytest.skip("psycopg2 is not installed (pip install psycopg2-binary)")
    try:
        conn = psycopg2.connect(PG, connect_timeout=3)
    except Exception as err:
        pytest.skip(f"PostgreSQL at {PG} is unreachable: {str(err).strip().splitlines()[0]}")
    conn.autocommit = True
    return conn


@pytest.fixture
def fresh_database():
    """A function that creates a new, empty database and returns its URL; all are dropped afterwards."""
    admin = _pg_admin()
    made: list[str] = []
    base = PG.rsplit("/", 1)[0]

    def make() -> str:
        name = f"structsearch_fault_{uuid.uuid4().hex[:12]}"
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"{base}/{name}"

    yield make
    with admin.cursor() as cur:
        for name in made:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.mark.postgres
def test_workers_started_together_on_a_fresh_database_all_succeed(fresh_database, runs):
    rounds = int(os.environ.get("STRUCTSEARCH_FAULT_ROUNDS", "5"))
    for r in range(rounds):
        url = fresh_database()
        command = _search(runs, 2, f"fresh{r}", "--storage", url, "--json", "--no-steer", "--sampler", "random")
        command[command.index("tests.test_faults:slow_evaluate")] = "toy"  # the race is in creating the schema
        barrier = threading.Barrier(3)

        def start(command=command, barrier=barrier):
            barrier.wait()
            return _popen(command, _env())

        workers: list[subprocess.Popen] = []
        threads = [threading.Thread(target=lambda w=workers, s=start: w.append(s())) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for w in workers:
            out, err = w.communicate(timeout=120)
            assert w.returncode == 0, f"round {r}: {err}"
            assert err == ""


@pytest.mark.postgres
def test_dead_worker_on_postgres_is_requeued_by_the_survivors(fresh_database, runs):
    _kill_one_worker_mid_trial(runs, "pgdead", ("--storage", fresh_database()))


# -- a silent endpoint: accepts, never answers --------------------------------------------------------


@pytest.fixture
def silent_endpoint():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # and never reply
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_silent_endpoint_is_one_line_and_exit_2_within_10_s(silent_endpoint, runs):
    url = f"postgresql://postgres@127.0.0.1:{silent_endpoint}/test"
    commands = {
        "search": _search(runs, 2, "silent", "--storage", url),
        "report": [sys.executable, "-m", "structsearch", "report", "silent", "--storage", url],
        "export": [sys.executable, "-m", "structsearch", "export", "silent", "--storage", url],
    }
    for name, command in commands.items():  # one at a time: start-up alone takes seconds on a busy machine
        started = time.monotonic()
        proc = _popen(command, _env())
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - started
        lines = err.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"structsearch {name}: error: storage postgresql://") and "timeout" in lines[0]
        assert elapsed < 20, f"{name} took {elapsed:.1f} s"  # 3 s connect timeout + start-up (the hang was > 75 s)


# -- files that are not studies stay byte-identical ------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_files_that_are_not_journals_stay_byte_identical(runs, capsys):
    text = runs / "notes.txt"
    text.write_bytes(b"keep\nlost")
    data = runs / "data.json"
    data.write_text('{"alpha": 1, "note": "not a journal"}\n')
    db = runs / "study.db"
    made = subprocess.run(
        [*_search(runs, 2, "s", "--storage", f"sqlite:///{db}")], env=_env(), cwd=REPO, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    files = {text: "a text file", data: "a JSON file", db: f"an SQLite database: use sqlite:///{db}"}
    before = {path: _digest(path) for path in files}
    # the real command once; then every command on every file through the same entry point, in-process
    real = subprocess.run(
        [sys.executable, "-m", "structsearch", "report", "s", "--storage", str(text)],
        env=_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert real.returncode == 2 and real.stderr.count("\n") == 1 and "this is a text file" in real.stderr
    from structsearch.cli import main

    search_args = _search(runs, 2, "s")[3:]
    for path, kind in files.items():
        for argv in (
            [*search_args, "--storage", str(path)],
            ["report", "s", "--storage", str(path)],
            ["export", "s", "--storage", str(path), "-o", str(runs / "o.json")],
        ):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"this is {kind}" in err, err
            assert _digest(path) == before[path], f"{argv[0]} changed {path.name}"
    assert sorted(p.name for p in runs.iterdir()) == ["data.json", "notes.txt", "study.db"]  # no lock, no journal
    # report and export of the real database (with sqlite:///) read it without changing a byte
    for command in ("report", "export"):
        assert main([command, "s", "--storage", f"sqlite:///{db}", "--runs-dir", str(runs), "--json"]) == 0
    assert _digest(db) == before[db]


def test_report_and_export_in_a_read_only_folder(runs, capsys):
    from structsearch.cli import main
    from structsearch.engine import search

    search("btt", task="toy", width=64, trials=3, study="ro", evaluate_fn="toy", progress=False, runs_dir=runs)
    journal = runs / "ro" / "journal.log"
    with open(journal, "ab") as f:
        f.write(b'{"op_code":5,"worker_id":"torn')  # a worker killed mid-append
    before = _digest(journal)
    listing = sorted(p.name for p in (runs / "ro").iterdir())
    (runs / "ro").chmod(0o555)
    try:
        assert main(["report", "ro", "--runs-dir", str(runs), "--json"]) == 0
        report = capsys.readouterr()
        assert main(["export", "ro", "--runs-dir", str(runs), "-o", str(runs / "b.json")]) == 0
        export = capsys.readouterr()
    finally:
        (runs / "ro").chmod(0o755)
    assert export.err == "" and report.err == "", (export.err, report.err)
    if os.geteuid() != 0:  # root writes anywhere: the plots then simply get written
        assert '"plots_error"' in report.out and "cannot write the plots" in report.out
    assert _digest(journal) == before
    assert sorted(p.name for p in (runs / "ro").iterdir() if p.suffix != ".png") == listing  # no lock file


def _study_with_two_trained_candidates() -> optuna.Study:
    study = optuna.create_study()
    for number, (paper, loss) in enumerate([("(1/2|0|1/2|0|1/2|1/2|0)", 0.2), ("(1|0|0|1|0|0|0)", 0.3)]):
        attrs = {"status": "evaluated", "loss": loss, "paper": paper, "sizes": str(number)}
        study.add_trial(optuna.trial.create_trial(value=loss, user_attrs=attrs))
    return study


def test_an_interrupted_or_killed_confirmation_is_finished_by_the_next_run(monkeypatch):
    import structsearch.confirmation as confirmation
    from structsearch.engine._confirm import claim_held, confirm_study

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    study = _study_with_two_trained_candidates()
    monkeypatch.setattr(confirmation, "confirm", interrupted)
    with pytest.raises(KeyboardInterrupt):
        confirm_study(study, task="mlp-regression", compute=1e9, seeds=[0, 1, 2], top=2)
    assert study.user_attrs["confirmation_claim"] is None  # released: the next run may take it

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a worker on this machine that was killed holding the claim
    study.set_user_attr("confirmation_claim", {"worker": f"{socket.gethostname()}:{dead.pid}", "time": time.time()})
    assert not claim_held(study.user_attrs["confirmation_claim"])
    alive = {"worker": f"{socket.gethostname()}:{os.getppid()}", "time": time.time()}
    assert claim_held(alive) and not claim_held({**alive, "time": time.time() - 7 * 3600})
    assert claim_held({"worker": "another-machine:1", "time": time.time()})

    monkeypatch.setattr(confirmation, "confirm", lambda structures, *args, **kwargs: _Done(structures))
    done = confirm_study(study, task="mlp-regression", compute=1e9, seeds=[0, 1, 2], top=2)
    assert done == {"best": "(1/2|0|1/2|0|1/2|1/2|0)", "top 2": "(1|0|0|1|0|0|0)"}
    assert study.user_attrs["confirmation"] == done


class _Done:
    def __init__(self, structures: dict) -> None:
        self.structures = structures

    def to_dict(self) -> dict:
        return dict(self.structures)


def crashed_evaluate(spec, **kw):
    """slow_evaluate in this process; a segmentation fault (SIGSEGV) in every worker it started."""
    if os.environ.get("STRUCTSEARCH_WORKER_OF"):
        os.kill(os.getpid(), signal.SIGSEGV)
    return slow_evaluate(spec, **kw)


def test_a_worker_that_crashes_ends_the_session_naming_the_signal(runs, monkeypatch):
    """A crash is not a kill from outside: its trial would crash the others too, so the session stops and says so."""
    from structsearch.errors import StudyError

    for key, value in _env(STRUCTSEARCH_TEST_SLEEP="0.3").items():
        monkeypatch.setenv(key, value)
    with pytest.raises(StudyError, match=r"worker 2 \(pid \d+\) was stopped by SIGSEGV"):
        _search_in_process(runs, 60, "segv", "crashed_evaluate", workers=2)
