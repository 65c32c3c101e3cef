"""Load figures: trials per hour with 1, 2 and 4 local workers (``search --workers N``), journal and PostgreSQL.

    python benchmarks/bench_workers.py [--trials 24] [--work 0.5] [--postgres URL] [--out benchmarks/results/workers.md]

The task is cheap and CPU-bound: the analytic ``toy`` scorer after ``--work`` seconds of pure-Python
arithmetic (calibrated once on this machine), so throughput should grow with workers until the
cores run out. Each configuration is a fresh study (the PostgreSQL ones a fresh database, dropped
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


def _run(storage: str | None, workers: int, trials: int, runs: Path, iterations: int) -> dict[str, Any]:
    import optuna

    from structsearch.engine import load_existing_study

    study = f"bench-{workers}-{uuid.uuid4().hex[:6]}"
    command = [sys.executable, "-m", "structsearch", "search", "--space", "full", "--task", "toy", "--width", "64"]
    command += ["--no-steer", "--sampler", "random", "--trials", str(trials), "--study", study, "--runs-dir", str(runs)]
    command += ["--evaluator", "benchmarks.bench_workers:timed_evaluate", "--workers", str(workers), "--no-progress"]
    command += ["--json"] + (["--storage", storage] if storage else [])
    env = {**os.environ, "PYTHONPATH": str(REPO), "STRUCTSEARCH_BENCH_ITERATIONS": str(iterations)}
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
    parser.add_argument("--work", type=float, default=0.5, help="CPU seconds of work per trial (default 0.5)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--postgres", default=os.environ.get("STRUCTSEARCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--out", default=None, help="also write the table as markdown here")
    args = parser.parse_args()

    import tempfile

    machine = _machine()
    iterations = int(args.work * _iterations_per_second())
    rows = []
    with tempfile.TemporaryDirectory(
        prefix="bench-workers-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None
    ) as tmp:
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
                    row = {"storage": kind, **_run(storage, n, args.trials, Path(tmp), iterations)}
                finally:
                    if drop:
                        drop()
                rows.append(row)
                print(
                    f"{kind:10} {n} workers: {row['per_hour']:8.0f} trials/h, {row['trial_s']:.2f} s/trial, "
                    f"storage+bookkeeping {row['storage_share']:.1%}",
                    flush=True,
                )
    lines = [
        "# Load figures: trials per hour with 1, 2 and 4 workers",
        "",
        f"Machine: {machine}.",
        f"Command: `python benchmarks/bench_workers.py --trials {args.trials} --work {args.work}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). Task: the `toy` scorer after {args.work} s of "
        "pure-Python CPU work per trial (calibrated on an idle moment of this machine); unsteered random sampler; "
        "a fresh study (PostgreSQL: a fresh database) per row; `search --workers N`.",
        "",
        "| storage | workers | trials (trained) | trained / hour | wall s / trained trial | outside the scorer |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['storage']} | {r['workers']} | {r['trials']} ({r['trained']}) | {r['per_hour']:,.0f} "
            f"| {r['trial_s']:.2f} | {r['storage_share']:.1%} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
