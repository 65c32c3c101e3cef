import json

import pytest
from hypothesis import given

from structsearch import Spec, SpecError, parse_spec
from structsearch.spec import named_structures

from .helpers import any_thetas


def test_paper_notation_with_fractions_and_decimals():
    assert parse_spec("(1/2|0|1/2|0|1/2|1/2|0)") == parse_spec("(0.5|0|0.5|0|0.5|0.5|0)")
    assert parse_spec("(1/3|0|2/3|0|2/3|1/3|0)").theta[0] == pytest.approx(1 / 3)


def test_json_object_and_mapping():
    text = '{"alpha": 1, "beta": 0, "gamma": 0, "delta": 0, "epsilon": 1, "phi": 0, "rho": 0.5}'
    assert parse_spec(text) == parse_spec(json.loads(text)) == parse_spec("low-rank:0.5")


@pytest.mark.parametrize(
    ("name", "theta"),
    [
        ("dense", (1, 0, 0, 1, 0, 0, 0)),
        ("low-rank:0.25", (1, 0, 0, 0, 1, 0, 0.25)),
        ("kronecker", (0.5, 0.5, 0, 0.5, 0.5, 0, 0)),
        ("sum-kronecker:1/4", (0.5, 0.5, 0, 0.5, 0.5, 0, 0.25)),
        ("btt", (0.5, 0, 0.5, 0, 0.5, 0.5, 0)),
        ("monarch", (0.5, 0, 0.5, 0, 0.5, 0.5, 0)),
        ("btt:0.25", (0.5, 0, 0.5, 0, 0.5, 0.5, 0.25)),
        ("tt:0.25", (0.5, 0.25, 0.25, 0.25, 0.5, 0.25, 0.25)),
    ],
)
def test_named_structures(name, theta):
    assert parse_spec(name).theta == pytest.approx(theta)


def test_known_names_print_back():
    assert parse_spec("(1/2|0|1/2|0|1/2|1/2|0)").name == "btt"
    assert parse_spec("(1|0|0|0|1|0|0.75)").name == "low-rank:3/4"
    assert parse_spec("(0.4|0.3|0.3|0.3|0.3|0.4|0)").name is None


@given(any_thetas())
def test_json_round_trip(spec):
    assert Spec.model_validate_json(spec.model_dump_json()) == spec
    assert parse_spec(spec.paper).theta == pytest.approx(spec.theta, abs=1e-12)


def test_json_schema_names_every_class():
    schema = Spec.model_json_schema()
    assert set(schema["properties"]) == {"alpha", "beta", "gamma", "delta", "epsilon", "phi", "rho", "moe"}
    assert schema["properties"]["alpha"]["minimum"] == 0


def test_spec_is_immutable():
    spec = parse_spec("btt")
    with pytest.raises(Exception, match="frozen"):
        spec.alpha = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("(1|0|0|1|0|0)", "expected 7"),
        ("(-0.1|0.6|0.5|1|0|0|0)", r"theta\.alpha: must be >= 0"),
        ("(0.5|0|0.4|0|0.5|0.5|0)", "input exponents alpha\\+beta\\+gamma must sum to 1"),
        ("(1|0|0|0.5|0|0|0)", "output exponents delta\\+epsilon\\+phi must sum to 1"),
        ("(x|0|0|1|0|0|0)", r"theta\.alpha: expected a number"),
        ("(1/0|0|0|1|0|0|0)", "division by zero"),
        ("(1.5|0|0|1|0|0|0)", r"theta\.alpha: .*less than or equal to 1"),
        ("nonsense", "unknown structure 'nonsense'; expected one of dense"),
        ("dense:0.5", "takes no exponent"),
        ("btt:abc", "btt exponent"),
        ('{"alpha": 1}', "missing key"),
        ('{"alpha": 1, "beta": 0, "gamma": 0, "delta": 1, "epsilon": 0, "phi": 0, "rho": 0, "x": 1}', "unknown key"),
        ('{"alpha": true, "beta": 0, "gamma": 0, "delta": 1, "epsilon": 0, "phi": 0, "rho": 0}', "expected a number"),
        ("{not json", "invalid JSON"),
        ("[1, 2]", "unknown structure"),
        ("", "empty"),
    ],
)
def test_bad_input_names_the_problem(text, message):
    with pytest.raises(SpecError, match=message) as info:
        parse_spec(text)
    assert "\n" not in str(info.value)


def test_sum_tolerance_is_one_in_a_million():
    parse_spec("(0.5000005|0|0.5|0|0.5|0.5|0)")
    with pytest.raises(SpecError, match="sum to 1"):
        parse_spec("(0.500002|0|0.5|0|0.5|0.5|0)")


def test_registry_lists_names():
    assert {"dense", "low-rank", "kronecker", "btt", "monarch", "tt", "sum-kronecker"} <= set(named_structures())


def test_committed_json_schema_is_current():
    from pathlib import Path

    committed = json.loads((Path(__file__).parents[1] / "docs" / "spec.schema.json").read_text())
    assert committed == Spec.model_json_schema()
