"""Bad input of any shape is a StructSearchError in the API, and one line with exit 2 on the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structsearch.errors import StructSearchError
from structsearch.layers import EinsumLinear
from structsearch.spec import CLASSES, Spec, parse_spec
from structsearch.taxonomy import analyze

REPO = Path(__file__).resolve().parents[1]

# JSON-like values and then some: huge integers, non-finite floats, bytes, non-string keys, deep nesting
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**4000)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.sampled_from(["btt", "low-rank:0.5", "(1/2|0|1/2|0|1/2|1/2|0)", "{", "1/0", "tt:9" * 3, "x.json"])
)
_keys = st.sampled_from([*CLASSES, "theta", "specs", "moe"]) | st.text(max_size=8) | st.integers() | st.none()
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(_keys, inner, max_size=8),
    max_leaves=30,
)


@st.composite
def spec_inputs(draw: st.DrawFn) -> object:
    """Arbitrary values, near-miss theta mappings, JSON strings of both, and deeply nested ones."""
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(_values)
    if kind == 1:  # a theta mapping with one odd value
        theta = {c: 0.0 for c in CLASSES}
        theta[draw(st.sampled_from(CLASSES))] = draw(_values)
        return theta
    if kind == 2:  # as a JSON string (bytes and non-string keys do not survive json.dumps: repr instead)
        return _dumps(draw(_values))
    if kind == 3:
        depth = draw(st.integers(100, 5000))
        return "{" + '"alpha": [' * depth + "1" + "]" * depth + "}"
    return [draw(_values) for _ in range(7)]


def _dumps(value: object) -> str:
    try:
        return json.dumps(value, default=repr)
    except (TypeError, ValueError):  # non-string keys mixed with others, integers past repr's limit
        return "{}"


def _only_our_errors(fn, value) -> None:
    try:
        fn(value)
    except StructSearchError as err:
        assert "\n" not in str(err)


_settings = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@_settings
@given(spec_inputs())
def test_parse_spec_raises_only_structsearch_errors(value):
    _only_our_errors(parse_spec, value)


@_settings
@given(spec_inputs())
def test_analyze_raises_only_structsearch_errors(value):
    _only_our_errors(lambda v: analyze(v, 64, 64), value)


@_settings
@given(spec_inputs())
def test_from_spec_raises_only_structsearch_errors(value):
    _only_our_errors(lambda v: EinsumLinear.from_spec(v, 16, 16), value)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200) | spec_inputs().map(lambda v: _dumps(v).encode()))
def test_spec_files_of_any_bytes_raise_only_structsearch_errors(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("specs") / "spec.json"
    path.write_bytes(data)
    _only_our_errors(lambda p: EinsumLinear.from_spec(p, 16, 16), str(path))
    _only_our_errors(lambda p: EinsumLinear.from_spec(p, 16, 16), path)


def test_examples_from_the_issue():
    huge = "9" * 5000
    for text in (f'{{"alpha": {huge}}}', '{"alpha": 1e999999}', "[" * 100000, "{" + '"a":[' * 100000):
        with pytest.raises(StructSearchError):
            parse_spec(text)
    with pytest.raises(StructSearchError, match="keys must be the strings"):
        parse_spec({1: 0.5})
    with pytest.raises(StructSearchError, match="decode it"):
        parse_spec(b"btt")
    assert parse_spec("btt") == Spec.parse("btt")


# -- the command line: one line on stderr, exit 2 ------------------------------------------------


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "structsearch", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_cli_theta_with_huge_integer_or_deep_nesting():
    _one_line(_cli("taxonomy", '{"alpha": ' + "9" * 5000 + "}"), "theta")
    _one_line(_cli("taxonomy", "{" + '"a":[' * 10000 + "]" * 10000 + "}"), "theta")


def test_cli_seeds_outside_uint32_are_refused():
    for seed in ("-1", str(2**32)):
        _one_line(_cli("search", "--space", "btt", "--task", "toy", "--evaluator", "toy", "--seed", seed), "seed")
        _one_line(_cli("evaluate", "btt", "--seed", seed), "seed")
        _one_line(_cli("evaluate", "btt", "--seeds", "0", seed), "seed")


def test_api_seed_lists_outside_uint32_are_refused():
    from structsearch import evaluate, search
    from structsearch.errors import StudyError, TaskError

    for seeds in ([-1, 2], [0, 2**32]):
        with pytest.raises(TaskError, match=r"seeds: .*\[0, 2\^32\)"):
            evaluate("btt", seeds=seeds, steps=1, width=16)
        with pytest.raises(StudyError, match=r"confirm_seeds: .*\[0, 2\^32\)"):
            search("btt", confirm_seeds=seeds, trials=1, progress=False)


def test_cli_evaluator_that_cannot_score(tmp_path):
    line = _one_line(
        _cli("search", "--space", "btt", "--task", "toy", "--evaluator", "os:getcwd", "--runs-dir", str(tmp_path)),
        "os:getcwd",
    )
    assert "cannot be called" in line
    assert not (tmp_path / "btt-toy-loss").exists()  # refused before the study was created


def test_cli_space_file_not_utf8_and_too_fine(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: x\nstep: 0.1\xff\xfe\n")
    _one_line(_cli("search", "--space", str(bad), "--task", "toy", "--evaluator", "toy"), "UTF-8")
    fine = tmp_path / "fine.yaml"
    fine.write_text("name: fine\nstep: 1e-9\n")
    _one_line(_cli("search", "--space", str(fine), "--task", "toy", "--evaluator", "toy"), "lattice", "cap")


def make_bad_task(**options):
    """A plugin task whose build_model raises (for the search below)."""
    from structsearch.tasks.example_plugin import LinearMapTask

    class BadTask(LinearMapTask):
        name = "bad"

        def build_model(self, linear, width):
            raise ValueError("this plugin cannot build a model at this width")

    return BadTask(**options)


def test_cli_plugin_failing_in_build_model_fails_the_trial_and_the_search_goes_on(tmp_path):
    res = _cli(
        "search",
        "--space",
        "btt",
        "--task",
        "tests.test_one_line_errors:make_bad_task",
        "--evaluator",
        "final",
        "--trials",
        "2",
        "--width",
        "16",
        "--no-steer",
        "--sampler",
        "random",
        "--runs-dir",
        str(tmp_path),
        "--json",
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["trials"] == 2 and out["statuses"].get("failed", 0) >= 1
    from structsearch.engine import load_existing_study

    study, _ = load_existing_study(out["study"], runs_dir=tmp_path)
    reasons = {t.user_attrs.get("reason") for t in study.get_trials() if t.user_attrs.get("status") == "failed"}
    assert reasons == {"ValueError: this plugin cannot build a model at this width"}
    report = json.loads(_cli("report", out["study"], "--runs-dir", str(tmp_path), "--json", "--no-plots").stdout)
    assert {f["reason"] for f in report["failures"]} == reasons  # the report says why, not only the journal


def test_cli_outputs_checked_before_training_budget_below_one_step_and_spec_files(tmp_path):
    # scale --plot into a missing folder: refused at once, before any training
    _one_line(
        _cli("scale", "btt", "--widths", "16", "--budgets", "1e6", "--plot", "/no/such/dir/f.png"), "does not exist"
    )
    _one_line(_cli("evaluate", "btt", "--budget", "1", "--width", "16"), "buys no training step")
    _one_line(_cli("evaluate", "btt", "--steps", "5", "--budget", "1e8"), "--steps and --budget")
    # a search whose budget buys dense no step at its largest rung: refused before a study is made
    search = ("search", "--space", "btt", "--budget", "1e3", "--trials", "1", "--runs-dir", str(tmp_path / "runs"))
    _one_line(_cli(*search), "largest rung", "buys no training step")
    assert not (tmp_path / "runs").exists()
    # scale checks its arguments before its progress display starts: the refusal is the only line
    _one_line(_cli("scale", "btt", "--widths", "0"), "widths")
    spec = tmp_path / "best.json"
    spec.write_text(json.dumps({"specs": [{"theta": Spec.parse("btt").as_dict()}]}))
    res = _cli("evaluate", str(spec), "--steps", "2", "--width", "16", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["spec"] == Spec.parse("btt").paper
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{")
    _one_line(_cli("evaluate", str(bad)), "not UTF-8")


def test_scale_keeps_its_results_when_the_plot_cannot_be_written(tmp_path, monkeypatch):
    from structsearch import scaling

    def fail(result, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(scaling, "plot_frontiers", fail)
    result = scaling.scale(
        "btt", task="mlp-regression", widths=[16], budgets=[2e6], baseline=None, plot=str(tmp_path / "f.png")
    )
    assert result.plot is None and "No space left on device" in result.plot_error
    assert result.structures[0].points[0].status == "ok"


def test_spec_documents_of_another_format_or_a_later_version_are_refused(tmp_path):
    good = {"format": "structsearch.specs", "version": 1, "specs": [{"theta": Spec.parse("btt").as_dict()}]}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(good))
    assert EinsumLinear.from_spec(path, 16, 16).params == 128
    for change, needle in (({"version": 2}, "version 2"), ({"format": "other"}, "format 'other'")):
        path.write_text(json.dumps({**good, **change}))
        with pytest.raises(StructSearchError, match=needle):
            EinsumLinear.from_spec(path, 16, 16)


def test_a_full_disk_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    """An OSError of the machine (disk full, read-only) mid-command: one line, exit 1; other OSErrors propagate."""
    import errno

    from structsearch import exporting
    from structsearch.cli import main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "journal.log"))

    monkeypatch.setattr(exporting, "export", full)
    assert main(["export", "any", "--runs-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("structsearch export: error: No space left on device (") and len(err.splitlines()) == 1

    def bug(*args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, "a path the code got wrong")

    monkeypatch.setattr(exporting, "export", bug)
    with pytest.raises(FileNotFoundError):
        main(["export", "any", "--runs-dir", str(tmp_path)])


def nan_evaluate(spec, **kwargs):
    """A plug-in scorer whose score is NaN (its reason for being: the --json test below)."""
    from types import SimpleNamespace

    return SimpleNamespace(status="ok", score=float("nan"), final_loss=float("inf"))


def test_json_output_is_strict_json_even_with_nan_scores(tmp_path, capsys):
    from structsearch.cli import main

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    args = ["search", "--space", "btt", "--task", "toy", "--trials", "2", "--no-progress", "--runs-dir", str(tmp_path)]
    assert main([*args, "--evaluator", "tests.test_one_line_errors:nan_evaluate", "--study", "nan", "--json"]) == 0
    json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert main(["report", "nan", "--runs-dir", str(tmp_path), "--json", "--no-plots"]) == 0
    json.loads(capsys.readouterr().out, parse_constant=refuse)


@pytest.mark.parametrize("command", [["evaluate", "btt", "--steps", "2"], ["search", "--space", "btt"]])
def test_absurd_thread_counts_are_refused_before_anything_starts(command, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "structsearch",
            *command,
            "--threads",
            "100000",
            *(["--runs-dir", str(tmp_path)] if command[0] == "search" else []),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stderr.strip().endswith(
        "threads: expected an integer from 1 to 1024, got 100000"
    )
    assert not list(tmp_path.iterdir())  # no study left behind


@pytest.mark.parametrize(
    "damaged",
    [
        "{}",
        "[]",
        "3",
        '{"op_code": 5}',
        '{"op_code": 6, "worker_id": "w", "trial_id": 0, "state": 99, "values": null}',
        '{"op_code": 99, "worker_id": "w"}',
    ],
)
def test_a_damaged_journal_line_is_one_line_for_report_export_and_search(damaged, tmp_path, capsys):
    """Valid JSON that is not a record, or a record Optuna cannot replay: exit 2 and one line, file untouched."""
    from structsearch.cli import main

    args = ["--space", "btt", "--evaluator", "toy", "--task", "toy", "--trials", "3", "--no-progress"]
    assert main(["search", *args, "--runs-dir", str(tmp_path), "--study", "j"]) == 0
    journal = tmp_path / "j" / "journal.log"
    lines = journal.read_text().splitlines(keepends=True)
    lines[5] = damaged + "\n"
    journal.write_text("".join(lines))
    before = journal.read_bytes()
    capsys.readouterr()
    for command in (["report", "j", "--no-plots"], ["export", "j"], ["search", *args, "--study", "j", "--trials", "4"]):
        assert main([*command, "--runs-dir", str(tmp_path)]) == 2, command
        err = capsys.readouterr().err
        assert "the journal is damaged" in err and len(err.strip().splitlines()) == 1, err
    assert journal.read_bytes() == before


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite://", "sqlite:///:memory:"])
def test_an_sqlite_url_without_a_file_is_refused_in_one_line(url, capsys):
    from structsearch.cli import main

    assert (
        main(["search", "--space", "btt", "--evaluator", "toy", "--storage", url, "--trials", "1", "--no-progress"])
        == 2
    )
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("name an SQLite file (sqlite:///path/to/study.db); an in-memory one keeps nothing")
    )


def test_a_confirmation_compute_that_buys_no_step_is_refused_before_any_training(tmp_path, capsys):
    from structsearch.cli import main

    args = ["search", "--space", "btt", "--evaluator", "final", "--budget", "3e8", "--width", "16", "--trials", "3"]
    assert main([*args, "--confirm-flops", "1e3", "--runs-dir", str(tmp_path), "--no-progress"]) == 2
    assert "confirm_flops 1e+03: dense at width" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_python_api_arguments_of_the_wrong_type_raise_structsearch_errors(tmp_path):
    import structsearch

    calls = {
        "storage": lambda: structsearch.search("btt", evaluate_fn="toy", trials=1, storage=5, runs_dir=tmp_path),
        "runs_dir": lambda: structsearch.search("btt", evaluate_fn="toy", trials=1, runs_dir=5),
        "path": lambda: structsearch.export("any", path=5, runs_dir=tmp_path),
        "model": lambda: structsearch.structurize(5, "btt"),
        "structures": lambda: structsearch.confirm(["btt"], compute=1e8),
    }
    for name, call in calls.items():
        with pytest.raises(StructSearchError, match=f"^{name}: expected"):
            call()
    assert not list(tmp_path.iterdir())


def test_an_sqlite_database_of_something_else_is_left_untouched(tmp_path, capsys):
    import sqlite3

    from structsearch.cli import main

    path = tmp_path / "notes.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text)")
    before = path.read_bytes()
    args = ["search", "--space", "btt", "--evaluator", "toy", "--trials", "1", "--no-progress"]
    assert main([*args, "--storage", f"sqlite:///{path}"]) == 2
    assert "is an SQLite database of something else (tables notes)" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_evaluate_refuses_seed_together_with_seeds(capsys):
    from structsearch.cli import main

    assert main(["evaluate", "btt", "--seed", "1", "--seeds", "2", "3", "--steps", "2"]) == 2
    assert "--seed and --seeds: give one" in capsys.readouterr().err


def test_folders_where_files_belong_are_named_as_such(tmp_path, capsys):
    from structsearch.cli import main

    (tmp_path / "specs").mkdir()
    assert main(["evaluate", str(tmp_path / "specs"), "--steps", "1"]) == 2
    assert "is a folder; expected a spec file" in capsys.readouterr().err
    (tmp_path / "st" / "journal.log").mkdir(parents=True)
    args = ["search", "--space", "btt", "--evaluator", "toy", "--trials", "1", "--no-progress"]
    assert main([*args, "--runs-dir", str(tmp_path), "--study", "st"]) == 2
    assert "a directory stands where the journal file should be" in capsys.readouterr().err
