"""The real ``structsearch search / report / export`` commands in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "structsearch", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def work():
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="structsearch-cli-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_search_report_export_json(work):
    res = cli(
        "search",
        "--space",
        "kronecker",
        "--task",
        "toy",
        "--evaluator",
        "toy",
        "--trials",
        "6",
        "--width",
        "64",
        "--study",
        "c",
        "--json",
        "--no-progress",
        cwd=work,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["trials"] == 6 and out["study"] == "c" and out["storage"] == str(Path("runs/c/journal.log"))
    assert (work / "runs" / "c" / "journal.log").exists()
    assert res.stderr == ""  # no warnings, no log noise

    rep = cli("report", "c", "--json", cwd=work)
    assert rep.returncode == 0, rep.stderr
    d = json.loads(rep.stdout)
    assert d["n_trials"] == 6 and set(d["spearman"]) == {"omega", "psi", "nu"}
    assert Path(work / d["plots"]["omega_psi"]).exists()

    exp = cli("export", "c", "--top", "2", "-o", "best.json", cwd=work)
    assert exp.returncode == 0, exp.stderr
    doc = json.loads((work / "best.json").read_text())
    assert len(doc["specs"]) == 2 and doc["specs"][0]["provenance"]["study"] == "c"
    assert "exported 2 spec(s)" in exp.stdout
    many = cli("export", "c", "--top", "100", "-o", "all.json", cwd=work)
    trained = len(json.loads((work / "all.json").read_text())["specs"])
    assert trained < 100 and f"(asked for 100: the study has {trained} trained)" in " ".join(many.stdout.split())


def test_search_table_and_resume(work):
    args = (
        "search",
        "--space",
        "btt",
        "--task",
        "toy",
        "--evaluator",
        "toy",
        "--trials",
        "3",
        "--width",
        "64",
        "--study",
        "t",
    )
    first = cli(*args, cwd=work)
    assert first.returncode == 0, first.stderr
    assert "3 / 3 done (3 this session)" in first.stdout and "best" in first.stdout
    assert "trials" in first.stderr  # the progress display
    more = cli(
        "search",
        "--space",
        "btt",
        "--task",
        "toy",
        "--evaluator",
        "toy",
        "--trials",
        "5",
        "--width",
        "64",
        "--study",
        "t",
        "--no-progress",
        cwd=work,
    )
    assert more.returncode == 0 and "5 / 5 done (2 this session)" in more.stdout
    rep = cli("report", "t", cwd=work)
    assert rep.returncode == 0 and "best trials" in rep.stdout and "Spearman" in rep.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("search", "--space", "nope"), "structsearch search: error: unknown search space 'nope'; expected one of"),
        (("search", "--trials", "0"), "argument --trials: expected a positive integer, got '0'"),
        (("search", "--budget", "lots"), "argument --budget: expected a number of FLOPs like 1e9, got 'lots'"),
        (("search", "--sampler", "cma"), "argument --sampler: invalid choice: 'cma'"),
        (("search", "--task", "no-such-task", "--trials", "1"), "structsearch search: error:"),
        (("search", "--space", "btt", "--study", "../x"), "structsearch search: error: study: expected a name"),
        (("report", "missing"), "structsearch report: error: no study 'missing'"),
        (("export", "missing", "--top", "1"), "structsearch export: error: no study 'missing'"),
        (("export", "missing", "--top", "-1"), "argument --top: expected a positive integer, got '-1'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(work, args, message):
    res = cli(*args, cwd=work)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_bad_space_file_names_the_field(work):
    (work / "bad.yaml").write_text("name: bad\nconstraints:\n  psi_min: high\n")
    res = cli("search", "--space", "bad.yaml", "--task", "toy", "--evaluator", "toy", cwd=work)
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "structsearch search: error: bad.yaml: constraints.psi_min: Input should be a "
        "valid number, unable to parse string as a number, got 'high'"
    )


def test_mismatched_resume_keeps_the_study(work):
    base = (
        "search",
        "--space",
        "btt",
        "--task",
        "toy",
        "--evaluator",
        "toy",
        "--width",
        "64",
        "--study",
        "mm",
        "--no-progress",
        "--trials",
    )
    assert cli(*base, "2", cwd=work).returncode == 0
    res = cli(*base, "4", "--budget", "5e9", cwd=work)
    assert res.returncode == 2 and "was created with budget=None, got 5000000000.0" in res.stderr
    assert json.loads(cli("report", "mm", "--json", "--no-plots", cwd=work).stdout)["n_trials"] == 2
