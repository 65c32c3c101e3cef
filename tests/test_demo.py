"""The README's main job, on the analytic stand-in scorer (the real one runs in `./dev.sh demo`)."""

import json

from structsearch.demo import main, run_demo
from structsearch.layers import EinsumLinear


def test_demo_searches_reports_exports_and_resumes(tmp_path):
    out = run_demo(str(tmp_path), trials=4, evaluate_fn="toy", progress=False)
    assert out["search"].trials == 4
    doc = json.loads((tmp_path / "demo" / "best.json").read_text())
    assert doc["specs"] and doc["specs"][0]["provenance"]["study"] == "demo"
    layer = EinsumLinear.from_spec(tmp_path / "demo" / "best.json", 64, 64)
    assert layer.params > 0
    assert list(out["search"].references) == ["dense", "btt"]  # scored the same way as the candidates
    again = run_demo(str(tmp_path), trials=4, evaluate_fn="toy", progress=False)
    assert again["search"].new_trials == 0  # resumed a finished study: nothing redone


def test_demo_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "demo").write_text("not a directory")
    code = main(["--runs-dir", str(tmp_path), "--trials", "2"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("structsearch demo: error:")
