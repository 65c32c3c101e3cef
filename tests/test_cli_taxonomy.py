"""`structsearch taxonomy` run as a real subprocess."""

import json
import subprocess
import sys

import pytest

JSON_KEYS = {"theta", "dims", "params", "macs", "flops", "omega", "psi", "nu", "canonical", "warnings", "einsum"}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "structsearch", *args], capture_output=True, text=True, timeout=60)


def test_json_has_exactly_the_documented_keys():
    out = run("taxonomy", "btt", "--d-in", "1024", "--d-out", "1024", "--json")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert set(payload) == JSON_KEYS
    assert payload["theta"] == {"alpha": 0.5, "beta": 0, "gamma": 0.5, "delta": 0, "epsilon": 0.5, "phi": 0.5, "rho": 0}
    assert payload["dims"] == {"alpha": 32, "beta": 1, "gamma": 32, "delta": 1, "epsilon": 32, "phi": 32, "rho": 1}
    assert (payload["params"], payload["macs"], payload["flops"]) == (65536, 65536, 131072)
    assert (payload["omega"], payload["psi"], payload["nu"], payload["canonical"]) == (0, 1, 0.5, True)
    assert payload["einsum"] == ["ga,fga->fg", "fg,feg->fe"]


def test_table_output_and_symbolic():
    out = run("taxonomy", "(1/2|1/4|1/4|1/4|1/2|1/4|0)", "--symbolic")
    assert out.returncode == 0, out.stderr
    for word in ("class sizes", "einsum", "params", "MACs", "FLOPs", "omega", "psi", "nu", "canonical"):
        assert word in out.stdout
    assert "params_square_leading" in out.stdout
    assert "zero-padded" in out.stdout  # the warning is shown


def test_taxonomy_does_not_import_torch():
    code = (
        "import sys; from structsearch.cli import main; main(['taxonomy', 'btt', '--json']); "
        "assert 'torch' not in sys.modules and 'optuna' not in sys.modules, 'heavy import'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["(1|0|0|1|0)"], "expected 7"),
        (["(1|0|0|1|0|0|x)"], "theta.rho: expected a number"),
        (["(-1|1|1|1|0|0|0)"], "theta.alpha: must be >= 0"),
        (["(0.3|0.3|0.3|1|0|0|0)"], "must sum to 1"),
        (["kroneker"], "unknown structure 'kroneker'"),
        (["btt", "--d-in", "0"], "d_in: must be > 0"),
        (["btt", "--d-out", "-4"], "d_out: must be > 0"),
        (["btt", "--d-in", "abc"], "invalid int value"),
        (["kronecker", "--d-in", "7"], "padding"),
        (['{"alpha": 1'], "invalid JSON"),
        (["no/such/best.json"], "cannot read spec file"),
        (["(1/2,0,1/2,0,1/2,1/2)"], "expected 7"),
        ([], "the following arguments are required"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message):
    out = run("taxonomy", *args)
    assert out.returncode == 2
    assert out.stdout == ""
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_help_everywhere():
    for args in (["--help"], ["taxonomy", "--help"]):
        out = run(*args)
        assert out.returncode == 0 and "usage" in out.stdout


def test_commas_and_exported_spec_files_read_as_the_same_structure(tmp_path):
    """taxonomy.md's tables write theta with commas; `structsearch export` writes files: both are the paper's theta."""
    exported = tmp_path / "best.json"
    theta = {"alpha": 0.5, "beta": 0, "gamma": 0.5, "delta": 0, "epsilon": 0.5, "phi": 0.5, "rho": 0}
    exported.write_text(json.dumps({"format": "structsearch.specs", "version": 1, "specs": [{"theta": theta}]}))
    outputs = [
        run("taxonomy", form, "--d-in", "256", "--json") for form in ("btt", "(1/2,0,1/2,0,1/2,1/2,0)", str(exported))
    ]
    assert all(out.returncode == 0 for out in outputs), [out.stderr for out in outputs]
    assert len({out.stdout for out in outputs}) == 1
