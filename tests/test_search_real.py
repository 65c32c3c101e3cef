"""One real (tiny) search: mlp-regression trained by structsearch.evaluation, then report and export."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import optuna
import pytest

pytest.importorskip("torch")

from structsearch.engine import search
from structsearch.exporting import export
from structsearch.reporting import report

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_tiny_real_search_end_to_end():
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    runs = Path(tempfile.mkdtemp(prefix="structsearch-real-", dir=base))
    try:
        result = search(
            "btt", task="mlp-regression", budget=1e8, trials=2, study="real", width=64, runs_dir=runs, progress=False
        )
        assert result.trials == 2 and result.evaluated == 2
        assert result.best is not None and result.best["loss"] > 0
        rep = report("real", runs_dir=runs, plots=False)
        assert rep.n_trained == 2 and rep.best[0]["train_flops"] <= 1e8
        doc = export("real", top=1, runs_dir=runs)
        assert doc["specs"][0]["provenance"]["task"] == "mlp-regression"
        assert doc["specs"][0]["provenance"]["versions"]["torch"]
    finally:
        shutil.rmtree(runs, ignore_errors=True)
