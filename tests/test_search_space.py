"""Search spaces: shipped files, validation errors naming the field, the Optuna parameterisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from structsearch.engine import Space, available_spaces, candidate_pool, load_space
from structsearch.errors import SpaceError
from structsearch.spec import Spec


def test_shipped_spaces_load():
    names = available_spaces()
    for required in ("full", "btt", "kronecker", "low-rank", "steered-default"):
        assert required in names
    for name in names:
        space = load_space(name)
        assert space.name == name
        assert len(space.lattice(12)) > 0


def test_families_pin_the_right_classes():
    assert load_space("btt").zero == ("beta", "delta")
    assert load_space("kronecker").zero == ("gamma", "phi")
    lr = load_space("low-rank")
    assert lr.free_inputs == ("alpha",) and lr.free_outputs == ("epsilon",)
    assert all(Spec.from_theta(t).name.startswith("low-rank") for t in lr.lattice())
    assert load_space("full-continuous").step is None


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("name: x\nstep: 0.3\n", "step"),
        ("name: x\nzero: [alpha, beta, gamma]\n", "zero"),
        ("name: x\nzero: [kappa]\n", "zero"),
        ("name: x\nrho: [0.5, 0.25]\n", "rho"),
        ("name: x\nconstraints: {omega_max: lots}\n", "constraints.omega_max"),
        ("name: x\nconstraints: {omega_mx: 0.5}\n", "constraints.omega_mx"),
        ("name: x\nconstraints: {nu_min: 0.9, nu_max: 0.5}\n", "constraints"),
        ("name: x\nsteering: {n_startup: -1}\n", "steering.n_startup"),
        ("zero: []\n", "name"),
        ("name: x\nstep: 1/4\nrho: [0, 0.3]\n", "rho"),
        ("name: x\ncolour: red\n", "colour"),
    ],
)
def test_invalid_file_names_the_field(tmp_path, text, field):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as err:
        load_space(str(path))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {field}")


def test_bad_yaml_and_unknown_name(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpaceError, match="invalid YAML"):
        load_space(str(path))
    with pytest.raises(SpaceError, match=r"unknown search space 'nope'; expected one of .*btt"):
        load_space("nope")
    with pytest.raises(SpaceError, match="no such space file"):
        load_space(str(tmp_path / "missing.yaml"))
    path.write_text("- a\n- b\n")
    with pytest.raises(SpaceError, match="expected a mapping"):
        load_space(str(path))


def test_fractions_accepted():
    space = Space(name="s", step="1/12", rho=["0", "1/2"], constraints={"omega_max": "1/4"})
    assert space.n_steps == 12 and space.rho == (0.0, 0.5) and space.constraints.omega_max == 0.25


@given(
    st.lists(st.floats(0, 1), min_size=5, max_size=5), st.sampled_from(["full", "btt", "kronecker", "full-continuous"])
)
def test_params_map_to_valid_theta_in_space(us, name):
    space = load_space(name)
    params = dict(zip(space.param_names, us, strict=False))
    theta = space.theta_from_params(params)
    spec = Spec.from_theta(theta)  # valid: both sides sum to 1
    assert space.contains(spec.theta)


@pytest.mark.parametrize("name", ["full", "btt", "kronecker", "low-rank"])
def test_params_theta_round_trip_on_lattice(name):
    space = load_space(name)
    lattice = space.lattice()
    rng = np.random.default_rng(0)
    for theta in lattice[rng.choice(len(lattice), size=min(200, len(lattice)), replace=False)]:
        back = space.theta_from_params(space.params_from_theta(theta))
        assert np.allclose(back, theta), (theta, back)


def test_uniform_shares_are_uniform_on_the_simplex():
    space = load_space("full-continuous")
    thetas = space.sample(np.random.default_rng(0), 4000)
    # Dirichlet(1,1,1): each coordinate has mean 1/3
    assert np.allclose(thetas[:, :3].mean(0), 1 / 3, atol=0.02)
    assert np.allclose(thetas[:, 3:6].mean(0), 1 / 3, atol=0.02)


def test_candidate_pool_is_canonical_and_deduplicated():
    pool = candidate_pool(load_space("full"), 64)
    assert len(pool) > 1000
    assert len(set(pool.keys)) == len(pool)
    assert (pool.nu <= 1 + 1e-9).all()
    thetas = pool.thetas
    assert (np.minimum(thetas[:, 0], thetas[:, 4]) >= np.minimum(thetas[:, 1], thetas[:, 3]) - 1e-9).all()
    constrained = candidate_pool(load_space("steered-default"), 64)
    assert (constrained.omega <= 0.25 + 1e-9).all() and (constrained.psi >= 0.5 - 1e-9).all()
