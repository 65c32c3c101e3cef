"""report reads what the study stored; export writes specs that layers load (round trip)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import optuna
import pytest

from structsearch.engine import load_existing_study, search
from structsearch.errors import StudyError
from structsearch.exporting import export
from structsearch.reporting import pareto_front, report

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def runs():
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="structsearch-report-", dir=base))
    search(
        "full",
        task="toy",
        evaluate_fn="toy",
        width=64,
        trials=14,
        study="r",
        steer=False,
        runs_dir=path,
        progress=False,
        budget=1e9,
    )
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_report_table_correlations_and_plots(runs):
    rep = report("r", runs_dir=runs, top=5)
    d = rep.to_dict()
    assert d["task"] == "toy" and d["n_trials"] == 14 and len(d["best"]) <= 5
    losses = [r["loss"] for r in d["best"]]
    assert losses == sorted(losses)
    for row in d["best"]:
        assert {"theta", "name", "omega", "psi", "nu", "params", "macs", "loss", "status"} <= set(row)
    assert set(d["spearman"]) == {"omega", "psi", "nu"}
    assert d["spearman"]["psi"]["rho"] is None or d["spearman"]["psi"]["rho"] < 0  # toy loss falls with psi
    for name in ("loss_vs_flops", "omega_psi"):
        path = Path(d["plots"][name])
        assert path.parent == runs / "r" and path.read_bytes()[:4] == b"\x89PNG"
    json.dumps(d)  # --json is plain JSON


def test_report_reads_the_record_not_recomputing(runs, monkeypatch):
    import structsearch.taxonomy as taxonomy

    def forbidden(*args, **kwargs):
        raise AssertionError("report must read the study, not recompute the taxonomy")

    for name in ("analyze", "batch_taxonomy", "exponents"):
        monkeypatch.setattr(taxonomy, name, forbidden)
    loaded, _ = load_existing_study("r", runs_dir=runs)
    stored = {t.number: t.user_attrs for t in loaded.get_trials()}
    rep = report("r", runs_dir=runs, plots=False)
    for row in rep.best:
        for key in ("omega", "psi", "nu", "params", "macs", "loss", "paper"):
            assert row[key] == stored[row["number"]][key]


def test_missing_study_is_a_one_line_error(runs):
    with pytest.raises(StudyError, match=r"no study 'nope' in .*; studies there: r"):
        report("nope", runs_dir=runs)
    with pytest.raises(StudyError, match="no study"):
        export("nope", runs_dir=runs)
    with pytest.raises(StudyError, match="top: expected a positive integer"):
        export("r", top=0, runs_dir=runs)


def test_export_round_trip_into_layers(runs, tmp_path):
    torch = pytest.importorskip("torch")
    from structsearch.layers import EinsumLinear, linear_factory, structurize

    doc = export("r", top=3, path=tmp_path / "best.json", runs_dir=runs)
    on_disk = json.loads((tmp_path / "best.json").read_text())
    assert on_disk["specs"] == doc["specs"] and len(doc["specs"]) == 3
    first = doc["specs"][0]
    prov = first["provenance"]
    assert {"study", "trial", "task", "budget", "seed", "score", "versions"} <= set(prov)
    assert prov["study"] == "r" and prov["task"] == "toy" and prov["budget"] == 1e9 and "optuna" in prov["versions"]
    assert first["score"]["loss"] == report("r", runs_dir=runs, plots=False).best[0]["loss"]
    for k, spec in enumerate(doc["specs"]):
        layer = EinsumLinear.from_spec(str(tmp_path / "best.json"), 64, 64, index=k)
        assert layer.spec.theta == tuple(spec["theta"].values())
        assert layer.params == spec["params"]
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64))
    summary = structurize(model, str(tmp_path / "best.json"))
    assert len(summary.layers) == 2
    assert model(torch.zeros(2, 64)).shape == (2, 64)
    for k, spec in enumerate(doc["specs"]):  # any ranked spec of the file, as EinsumLinear.from_spec takes it
        model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64))
        structurize(model, tmp_path / "best.json", index=k)
        assert model[0].spec.theta == tuple(spec["theta"].values())
        assert linear_factory(tmp_path / "best.json", index=k)(64, 64).params == spec["params"]


def test_exported_file_runs_through_the_python_api_as_through_the_cli(runs, tmp_path):
    """`structsearch evaluate best.json` and `structsearch scale best.json` take an export; so do their functions."""
    pytest.importorskip("torch")
    from structsearch import evaluate, proxy, scale

    path = tmp_path / "best.json"
    export("r", top=1, path=path, runs_dir=runs)
    paper = json.loads(path.read_text())["specs"][0]["paper"]
    options = {"teacher_width": 32, "teacher_depth": 2, "batch_size": 32, "val_size": 64}
    for spec in (str(path), path):
        result = evaluate(spec, width=64, steps=2, task_options=options, device="cpu", threads=1)
        assert result.spec == paper and result.status == "ok"
    assert proxy(path, budget=4e7, width=64, task_options=options, device="cpu", threads=1).spec == paper
    scaled = scale(path, widths=(64,), budgets=(1e7,), baseline=None, task_options=options, threads=1)
    assert [row.spec for row in scaled.structures] == [paper]


def test_default_export_path_and_pareto_helper(runs):
    doc = export("r", runs_dir=runs)
    assert Path(doc["path"]) == runs / "r" / "best.json" and len(doc["specs"]) == 1
    assert pareto_front([(1, 1), (1, 2), (0.5, 3)]) == [2, 0]


def test_export_into_a_missing_folder_is_refused_and_builds_nothing(runs, tmp_path):
    with pytest.raises(StudyError, match="does not exist"):
        export("r", path=tmp_path / "typo" / "deeper" / "best.json", runs_dir=runs)
    assert not (tmp_path / "typo").exists()


def test_export_says_when_a_reference_scored_better_than_the_best(tmp_path):
    """A scorer under which dense beats every searched structure: the export names it, the table says it."""
    from types import SimpleNamespace

    from rich.console import Console

    def dense_wins(spec, task, budget, seed, width):
        return SimpleNamespace(status="ok", score=0.5 if spec.name == "dense" else 1.0 + sum(spec.theta[:2]) / 10)

    result = search("btt", task="toy", evaluate_fn=dense_wins, trials=3, study="d", runs_dir=tmp_path, progress=False)
    doc = export("d", runs_dir=tmp_path)
    assert doc["references"]["dense"]["loss"] == 0.5 and doc["specs"][0]["score"]["loss"] >= 1.0
    assert doc["references_scoring_better"] == ["dense"]
    console = Console(width=200, record=True)
    console.print(result)
    assert "dense 0.5 (the reference scores better)" in console.export_text()


def test_export_of_a_study_whose_every_training_diverged_says_so(tmp_path):
    from types import SimpleNamespace

    def diverges(spec, task, budget, seed, width):
        return SimpleNamespace(status="diverged", score=None, final_loss=None, reason="non-finite training loss")

    search("btt", task="toy", evaluate_fn=diverges, trials=2, study="nan", runs_dir=tmp_path, progress=False)
    with pytest.raises(StudyError, match=r"every trained trial lost its score \(2 diverged\)"):
        export("nan", runs_dir=tmp_path)


def test_export_never_overwrites_what_is_not_an_export_and_a_failed_write_keeps_the_old_file(runs, monkeypatch):
    import os

    journal = runs / "r" / "journal.log"
    before = journal.read_bytes()
    with pytest.raises(StudyError, match="exists and is not a structsearch export"):
        export("r", path=journal, runs_dir=runs)  # the study's own storage
    assert journal.read_bytes() == before
    good = export("r", top=2, path=runs / "good.json", runs_dir=runs)
    kept = (runs / "good.json").read_bytes()
    assert json.loads(kept)["specs"] == json.loads(json.dumps(good["specs"]))
    assert oct((runs / "good.json").stat().st_mode & 0o777) != "0o600"  # not mkstemp's private mode

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(StudyError, match="cannot write"):
        export("r", top=5, path=runs / "good.json", runs_dir=runs)
    assert (runs / "good.json").read_bytes() == kept  # the earlier export, whole
    assert not [p for p in runs.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind


def test_export_through_a_symlink_replaces_the_file_it_points_to(runs, tmp_path):
    real = tmp_path / "exports" / "best.json"
    real.parent.mkdir()
    export("r", path=real, runs_dir=runs)
    link = tmp_path / "latest.json"
    link.symlink_to(real)
    export("r", top=2, path=link, runs_dir=runs)
    assert link.is_symlink() and len(json.loads(real.read_text())["specs"]) == 2


def test_export_to_dev_stdout_writes_the_document_there(runs):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "structsearch", "export", "r", "--runs-dir", str(runs), "-o", "/dev/stdout"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    document = out.stdout[: out.stdout.index("\n}\n") + 2]  # the JSON, then the table export prints
    assert json.loads(document)["format"] == "structsearch.specs"


def test_the_result_table_handles_zero_scores_and_names_where_the_study_is(tmp_path):
    from types import SimpleNamespace

    from rich.console import Console

    def zero(spec, task, budget, seed, width):
        return SimpleNamespace(status="ok", score=0.0)

    result = search("btt", task="toy", evaluate_fn=zero, trials=2, study="z", runs_dir=tmp_path, progress=False)
    console = Console(width=300, record=True)
    console.print(result)
    text = console.export_text()
    assert "dense 0 (best +0)" in text  # no relative difference to a zero score
    assert f"structsearch report z --runs-dir {tmp_path}" in text
