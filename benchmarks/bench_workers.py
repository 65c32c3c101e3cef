"""Load figures: trials per hour with 1, 2 and 4 local workers (``search --workers N``), journal and PostgreSQL.

    python benchmarks/bench_workers.py [--trials 24] [--work 0.5] [--modes cpu sleep] [--postgres URL] [--out FILE]

The task is cheap: the analytic ``toy`` scorer after ``--work`` seconds of either pure-Python
arithmetic (``cpu``, calibrated once on this machine: throughput grows with workers until the
cores run out) or sleep (``sleep``: no CPU, so what limits throughput is the workers' own
bookkeeping and the storage). Each configuration is a fresh study (the PostgreSQL ones a fresh database, dropped
after); searches run unsteered with the random sampler so that the sampler costs next to nothing.

Per configuration: trained trials per hour over the span from the first trial's start to the last
one's end (trials settled analytically, e.g. duplicates, cost no work and are not counted), and
the share of each trained trial's wall time spent outside the scorer (storage reads and writes,
heartbeats, the sampler and the analytic settlement: everything but the work itself).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_PG = "postgresql://postgres@127.0.0.1:5432/test"


def _spin(iterations: int) -> None:
    x = 0
    for i in range(iterations):
        x = (x + i * i) % 1_000_003


def _iterations_per_second() -> float:
    start = time.perf_counter()
    _spin(2_000_000)
    return 2_000_000 / (time.perf_counter() - start)


def timed_evaluate(spec: Any, **kw: Any) -> Any:
    """The toy scorer after a fixed amount of CPU work; ``wall_seconds`` is the time the work took."""
    from structsearch.engine import toy_evaluate

    start = time.perf_counter()
    if os.environ.get("STRUCTSEARCH_BENCH_SLEEP"):
        time.sleep(float(os.environ["STRUCTSEARCH_BENCH_SLEEP"]))
    else:
        _spin(int(os.environ["STRUCTSEARCH_BENCH_ITERATIONS"]))
    result = toy_evaluate(spec, **kw)
    result.wall_seconds = time.perf_counter() - start
    return result


def _machine() -> str:
    model = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", model).strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    python = platform.python_version()
    return f"{model}, {os.cpu_count()} cores, {platform.machine()}, Python {python}; load average before: {load}"


def _run(storage: str | None, workers: int, trials: int, runs: Path, work: dict[str, str]) -> dict[str, Any]:
    import optuna

    from structsearch.engine import load_existing_study

    study = f"bench-{workers}-{uuid.uuid4().hex[:6]}"
    command = [sys.executable, "-m", "structsearch", "search", "--space", "full", "--task", "toy", "--width", "64"]
    command += ["--no-steer", "--sampler", "random", "--trials", str(trials), "--study", study, "--runs-dir", str(runs)]
    command += ["--evaluator", "benchmarks.bench_workers:timed_evaluate", "--workers", str(workers), "--no-progress"]
    command += ["--no-references"]  # every piece of work measured is a trial's
    command += ["--json"] + (["--storage", storage] if storage else [])
    env = {**os.environ, "PYTHONPATH": str(REPO), **work}
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)}: {done.stderr.strip()}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded, _ = load_existing_study(study, storage, runs)
    finished = [t for t in loaded.get_trials() if t.state.is_finished() and t.datetime_complete]
    trained = [t for t in finished if t.user_attrs.get("status") == "evaluated"]
    span = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds()
    trial_s = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trained)
    work_s = sum(float(t.user_attrs.get("wall_seconds", 0.0)) for t in trained)
    return {
        "workers": workers,
        "trials": len(finished),
        "trained": len(trained),
        "per_hour": 3600 * len(trained) / span,
        "trial_s": trial_s / max(1, len(trained)),
        "storage_share": 1 - work_s / trial_s if trial_s else float("nan"),
    }


def _fresh_database(admin_url: str) -> tuple[str, Any]:
    import psycopg2

    conn = psycopg2.connect(admin_url, connect_timeout=3)
    conn.autocommit = True
    name = f"structsearch_bench_{uuid.uuid4().hex[:10]}"
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()

    return admin_url.rsplit("/", 1)[0] + "/" + name, drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24, help="trials per configuration (default 24)")
    parser.add_argument("--work", type=float, default=0.5, help="seconds of work per trial (default 0.5)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--modes", nargs="+", choices=("cpu", "sleep"), default=["cpu", "sleep"])
    parser.add_argument("--postgres", default=os.environ.get("STRUCTSEARCH_TEST_POSTGRES", _PG))
    parser.add_argument("--out", default=None, help="also write the tables as markdown here")
    args = parser.parse_args()

    import tempfile

    machine = _machine()
    iterations = int(args.work * _iterations_per_second())
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    lines = [
        "# Load figures: trials per hour with 1, 2 and 4 workers",
        "",
        f"Machine: {machine}.",
        f"Command: `python benchmarks/bench_workers.py --trials {args.trials} --work {args.work}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). Task: the `toy` scorer after {args.work} s of "
        "work per trial; unsteered random sampler; a fresh study (PostgreSQL: a fresh database) per row; "
        "`search --workers N`. Trials settled analytically (duplicates) cost no work and are not counted.",
    ]
    for mode in args.modes:
        work = {"STRUCTSEARCH_BENCH_ITERATIONS": str(iterations)}
        if mode == "sleep":
            work = {"STRUCTSEARCH_BENCH_SLEEP": str(args.work)}
        what = "pure-Python CPU work" if mode == "cpu" else "sleep (no CPU)"
        lines += [
            "",
            f"**{mode}**: {args.work} s of {what} per trial.",
            "",
            "| storage | workers | trials (trained) | trained / hour | wall s / trained trial | outside the scorer |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        with tempfile.TemporaryDirectory(prefix="bench-workers-", dir=base) as tmp:
            for kind in ("journal", "postgresql"):
                for n in args.workers:
                    storage, drop = None, None
                    if kind == "postgresql":
                        try:
                            storage, drop = _fresh_database(args.postgres)
                        except Exception as err:  # no server: the journal rows stand alone
                            print(f"postgresql skipped: {str(err).strip().splitlines()[0]}", file=sys.stderr)
                            break
                    try:
                        r = {"storage": kind, **_run(storage, n, args.trials, Path(tmp), work)}
                    finally:
                        if drop:
                            drop()
                    print(
                        f"{mode:5} {kind:10} {n} workers: {r['per_hour']:8.0f} trained/h, "
                        f"{r['trial_s']:.2f} s/trial, outside the scorer {r['storage_share']:.1%}",
                        flush=True,
                    )
                    lines.append(
                        f"| {r['storage']} | {r['workers']} | {r['trials']} ({r['trained']}) | {r['per_hour']:,.0f} "
                        f"| {r['trial_s']:.2f} | {r['storage_share']:.1%} |"
                    )
    lines += ["", f"Load average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
