"""Bring-your-own units (`glu_scaling.units`): the autodiff path against the gated family's
closed form, padding and batching invariances, loading by module:NAME, and one-line errors."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import glu_scaling as gs
from glu_scaling import architectures, inits, models, newton, problems, schedules, train, units
from glu_scaling.errors import UsageError

jax.config.update("jax_enable_x64", True)

EPS = float(jnp.finfo(jnp.float64).eps)


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture(scope="module")
def data():
    ds = problems.make_dataset("paper_1d", n_train=96, n_test=64, seed=0, dtype="float64")
    prepared, _ = train.prepare_data(ds.x_train, ds.y_train, ds.x_test, ds.y_test, 96)
    return prepared


_hessian = jax.jit(newton.hessian_and_gradient, static_argnames=("sel", "chunk"))


@pytest.mark.parametrize("arch,activation,n_in", [("mlp", "relu", 1), ("glu", "gelu", 2), ("gqu", "relu", 1)])
def test_autodiff_hessian_and_gradient_equal_the_closed_form(arch, activation, n_in):
    """The same model (padded: 5 real units of 7) on the autodiff path (`architectures.from_params`)
    and the closed-form fast path: the exact all-parameter Hessian and gradient (every
    stage's are blocks of them) agree to 1e-10 relative (both exact, apart by rounding)."""
    ds = problems.make_dataset("friedman1" if n_in > 1 else "paper_1d", n_train=50, n_test=10, seed=1,
                               dtype="float64")
    x, t = ds.x_train[:, :n_in], ds.y_train
    w = jnp.ones(x.shape[0])
    params = inits.init(jax.random.PRNGKey(3), arch, n_in, 5, 1, width=7, activation=activation, dtype="float64",
                        factor_init="random")
    params = params.replace(D=params.D * 0.3, d=params.d + 0.1)  # residuals of both signs, S != 0
    auto = architectures.from_params(params)
    assert _rel(auto.output(x), params.output(x)) < 1e2 * EPS
    assert auto.layout == params.layout
    sel = train.selection(params.layout.groups, params.layout)
    H_fast, g_fast = _hessian(params, x, t, w, sel, 50)
    H_auto, g_auto = _hessian(auto, x, t, w, sel, 50)
    assert _rel(H_auto, H_fast) < 1e-10, _rel(H_auto, H_fast)
    assert _rel(g_auto, g_fast) < 1e-10, _rel(g_auto, g_fast)
    assert np.max(np.abs(np.asarray(H_fast)[:7 * 2, :7 * 2])) > 0  # not a vacuous comparison


@pytest.mark.parametrize("arch", ["mlp", "glu", "gqu"])
def test_a_20_step_cascade_on_the_autodiff_path_equals_the_fast_path(data, arch):
    """newton-cascade with 20 all-parameter steps on a batch of two widths (padded to the wider):
    the autodiff path ends where the closed form does, to 1e-8 relative in the trained
    function, its errors and the parameters, with the same statuses.

    Odd widths: with an even width the evenly spaced knots make the first unit (open to the
    right from -1.001) and the last (open to the left from 1.001) both linear on the data, a
    rank-deficient pair along which the two paths' rounding sends Newton apart (measured: 2e-2
    after 20 steps of a GLU of width 6, 3e-16 after the spline stages).  The ReLU MLP's
    parameters are not identifiable: (G_i, g_i, D_i) -> (c G_i, c g_i, D_i / c) keeps its
    function, and so does trading D between units that are linear on all the data, so for it
    the trained function and errors are compared, not the parameters or the count of accepted
    steps (its last steps are tiny ones along those directions, which rounding decides; the
    parameters end 2e-4 apart at width 6); its width 5 loses even the function (measured: 1e-5
    apart), so it runs widths 3 and 6.  A GQU's factors may trade a constant, (U_1, u_1) c
    and (U_2, u_2) / c, which rounding reaches (1.2e-8 apart): its parameters are not
    compared either.  The GLU's runs take the knot moves too (the autodiff path's p-th
    derivative in x); the others leave them out (a smaller program)."""
    widths = (3, 6) if arch == "mlp" else (3, 5)
    params = jax.tree.map(lambda *a: jnp.stack(a), *[inits.init(jax.random.PRNGKey(s), arch, 1, n, 1, width=widths[1],
                                                                dtype="float64") for s, n in enumerate(widths)])
    config = schedules.TrainConfig("newton-cascade", steps=20, chunk=96, knot_moves=4 if arch == "glu" else 0)
    fast, info_fast = train.train_batch(params, data, config)
    auto, info_auto = train.train_batch(architectures.from_params(params), data, config)
    predict = jax.vmap(lambda p: p.output(data.x_test))
    assert _rel(predict(auto), predict(fast)) < 1e-8
    if arch == "glu":
        assert _rel(auto.rows(), jax.vmap(models.Params.rows)(fast)) < 1e-8
    for key in ("train_rmse", "test_rmse", "loss"):
        assert _rel(info_auto[key], info_fast[key]) < 1e-8, key
    np.testing.assert_array_equal(info_auto["status"], info_fast["status"])
    if arch != "mlp":
        np.testing.assert_array_equal(info_auto["steps"], info_fast["steps"])


def test_a_registered_unit_declares_its_layout_and_stages():
    """relu2's row is [gate (n_in + 1), out (n_out)]; its cascade is spline stage on out, the
    gate stage, then all parameters; d moves with out.  bilinear has no gate: no gate stage."""
    layout = architectures.RELU2.layout(2, 3)
    assert layout.size == 6 and layout.columns(models.OUT) == [3, 4, 5] and layout.gate == models.GATE
    stages = schedules.TrainConfig("newton-cascade", steps=7, gate_steps=2).stages(layout)
    assert stages == [schedules.Stage((models.OUT,), 1), schedules.Stage((models.GATE,), 2),
                      schedules.Stage(layout.groups, 7)]
    assert train.selection((models.OUT,), layout) == newton.Selection((3, 4, 5), with_d=True, second_order=False)
    bilinear = architectures.BILINEAR.layout(1, 1)
    groups = [str(g) for stage in schedules.TrainConfig("newton-cascade").stages(bilinear) for g in stage.groups]
    assert groups == ["out", "right", "left", "left", "right", "out"]
    assert gs.param_count("relu2", 1, 10, 1) == 3 * 10 + 1 == architectures.RELU2.param_count(1, 10, 1)
    assert gs.param_count("swiglu", 2, 4, 1) == (3 + 3 + 1) * 4 + 1


def test_a_units_padded_units_are_zero_and_contribute_nothing():
    """A relu2 of 3 units padded to 8 holds the unpadded model's rows, zero rows after them,
    and whatever masked rows hold, the output does not change (training keeps them zero:
    `test_a_unit_loaded_by_module_name_trains_in_a_mixed_batch_as_alone`)."""
    key = jax.random.PRNGKey(5)
    padded = units.init(key, architectures.RELU2, 1, 3, 1, width=8, dtype="float64")
    exact = units.init(key, architectures.RELU2, 1, 3, 1, dtype="float64")
    np.testing.assert_array_equal(padded.rows()[:3], exact.rows())
    np.testing.assert_array_equal(padded.rows()[3:], 0.0)
    x = jnp.linspace(-1.0, 1.0, 33)[:, None]
    garbage = padded.with_rows(padded.rows().at[3:].set(7.0))
    np.testing.assert_array_equal(garbage.output(x), padded.output(x))
    np.testing.assert_allclose(padded.output(x), exact.output(x), rtol=1e2 * EPS)
    Ju, S = jax.jit(units.UnitParams.derivatives)(garbage, x, jnp.ones((33, 1)))
    np.testing.assert_array_equal(Ju[:, 3:], 0.0)
    np.testing.assert_array_equal(S[3:], 0.0)


USER_MODULE = '''
import jax
from glu_scaling.units import Unit, affine

def _cube(parts, x):
    return jax.nn.relu(affine(parts["gate"], x)) ** 3 * parts["out"]

relu3 = Unit("relu3_test", _cube, (("gate", "affine"), ("out", "out")), linear=("out",), gate="gate", degree=3)
not_a_unit = _cube
wrong_shape = Unit("wrong_shape", lambda p, x: jax.numpy.ones(3) * p["out"][0],
                   (("gate", "affine"), ("out", "out")), linear=("out",))
nan_unit = Unit("nan_unit", lambda p, x: jax.numpy.log(affine(p["gate"], x) - 1e3) * p["out"],
                (("gate", "affine"), ("out", "out")), linear=("out",))
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_units_mod.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_unit_loaded_by_module_name_trains_in_a_mixed_batch_as_alone(user_module, data):
    """module:NAME loads a user's Unit; widths 2 and 5 trained in one batch padded to 5: the
    narrow model equals itself trained alone at its own width (1e-9 relative), its padded
    units stay zero, and both models train."""
    unit = architectures.resolve("module:user_units_mod:relu3")
    assert unit.name == "relu3_test" and architectures.resolve("module:user_units_mod.relu3") is unit
    config = schedules.TrainConfig("newton-cascade", steps=5, chunk=96)
    kw = dict(unit=unit, n_in=1, n_out=1, width=5, spline_init=True, dtype=jnp.float64)
    batch = units.init_batch(jnp.asarray([0, 1], jnp.uint32), jnp.asarray([2, 5]), None, **kw)
    trained, info = train.train_batch(batch, data, config)
    np.testing.assert_array_equal(trained.rows_[0, 2:], 0.0)  # padded units never change
    before = jax.vmap(lambda p: train.rmse(p, data.x_test, data.t_test))(batch)
    assert np.all(np.asarray(info["test_rmse"]) < 0.5 * np.asarray(before))  # and it trains
    alone = units.init(jax.random.PRNGKey(0), unit, 1, 2, 1, dtype="float64")
    np.testing.assert_array_equal(batch.rows_[0, :2], alone.rows())
    want, want_info = train.train_batch(jax.tree.map(lambda a: a[None], alone), data, config)
    assert _rel(trained.rows_[0, :2], want.rows_[0]) < 1e-9
    for key in ("train_rmse", "test_rmse"):
        assert _rel(info[key][0], want_info[key][0]) < 1e-9


def test_a_sweep_accepts_units_by_object_name_and_module_and_resumes(user_module, tmp_path):
    """gs.sweep takes a Unit object, a registered name and module:NAME;
    records carry each unit's parameter count (p n + n_out) and a rerun trains nothing."""
    mine = gs.Unit("my_swiglu", lambda p, x: jax.nn.silu(gs.affine(p["g"], x)) * gs.affine(p["u"], x) * p["o"],
                   (("g", "affine"), ("u", "affine"), ("o", "out")), linear=("o", "u"), gate="g")
    archs = [mine, "relu2", "module:user_units_mod:relu3"]
    kw = dict(problem="paper_1d", optimizer="newton-splines", n_data=40, n_test=40)
    recs = gs.sweep(archs, "2,3", out=tmp_path / "run", **kw)
    assert [r["arch"] for r in recs[::2]] == ["my_swiglu", "relu2", "module:user_units_mod:relu3"]
    assert [r["n_params"] for r in recs] == [11, 16, 7, 10, 7, 10]  # (2 + 2 + 1) n + 1, 3 n + 1, 3 n + 1
    assert all(r["status"] == "ok" for r in recs)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["archs"][0] == "my_swiglu"
    again = gs.sweep(archs, "2,3", out=tmp_path / "run", **kw)
    assert again == recs  # found done, nothing retrained


@pytest.mark.parametrize("arch,message", [
    ("module:no_such_mod_xyz:u", "cannot import module 'no_such_mod_xyz'"),
    ("module:user_units_mod:missing", "module 'user_units_mod' has no attribute 'missing'"),
    ("module:user_units_mod:not_a_unit", "is a function, not a glu_scaling.units.Unit"),
    ("module:user_units_mod:wrong_shape", r"must return 1 outputs \(shape \(1,\)\), got \(3,\)"),
    ("module:user_units_mod:nan_unit", "non-finite outputs"),
    ("relu3", "unknown architecture 'relu3' \\(did you mean 'relu2'\\?\\)"),
])
def test_a_bad_architecture_is_one_line_before_anything_is_written(user_module, tmp_path, arch, message):
    with pytest.raises(UsageError, match=message):
        gs.sweep([arch], "2", problem="paper_1d", steps=1, n_data=20, n_test=20, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_cli_loads_a_unit_by_module_name_and_refuses_a_bad_one_with_status_2(user_module, tmp_path):
    env = dict(os.environ, GLU_SCALING_CACHE="off", PYTHONPATH=str(user_module))
    base = [sys.executable, "-m", "glu_scaling.cli", "sweep", "--widths", "2", "--steps", "1", "--n-data", "20",
            "--n-test", "20", "--problem", "paper_1d", "--quiet"]
    bad = subprocess.run([*base, "--arch", "module:user_units_mod:wrong_shape", "--out", str(tmp_path / "b")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "wrong_shape" in bad.stderr and not (tmp_path / "b").exists()


@pytest.mark.parametrize("kwargs,message", [
    (dict(groups=(("w", "affine"),), linear=("v",)), "linear names group 'v'"),
    (dict(groups=(("w", "affine"), ("w", "out"))), "distinct"),
    (dict(groups=(("w", "wide"),)), "size 'wide'; accepted: affine, out, in or a positive int"),
    (dict(groups=(("w", "affine"),), gate="w", linear=("w",)), "cannot also be linear"),
])
def test_a_malformed_unit_is_refused_where_it_is_made(kwargs, message):
    with pytest.raises(UsageError, match=message):
        units.Unit("x1", lambda p, x: p["w"][:1], **kwargs)
    with pytest.raises(UsageError, match="not used by the gated family"):
        units.Unit("glu", lambda p, x: p["w"][:1], (("w", "affine"),))


def test_the_docs_worked_example_runs():
    """docs/architectures.md's example, as a reader would paste it (a short sweep, the spline
    stages only)."""
    text = (Path(__file__).parents[1] / "docs" / "architectures.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    small = {'"1:41:3"': '"2,4"', "n_data=2000": "n_data=60", "n_test=2000": "n_test=60",
             "steps=100": 'optimizer="newton-splines"',
             '"n_hidden"] >= 10': '"n_hidden"] >= 2'}
    for big, little in small.items():
        assert big in code, big
        code = code.replace(big, little)
    scope = {}
    exec(textwrap.dedent(code), scope)
    assert {r["arch"] for r in scope["records"]} == {"cubic_relu", "glu"}


def test_init_and_apply_take_any_architecture():
    """gs.init and gs.apply dispatch on the name: the gated family's Params, a unit's
    UnitParams (the same model as units.init), a dense model's; a mismatch is one line."""
    key, x = jax.random.PRNGKey(2), jnp.linspace(-1.0, 1.0, 9)[:, None]
    relu2 = gs.init(key, "relu2", 1, 4, 1, width=6)
    np.testing.assert_array_equal(relu2.rows(), units.init(key, architectures.RELU2, 1, 4, 1, width=6).rows())
    np.testing.assert_array_equal(gs.apply("relu2", relu2, x), relu2.output(x))
    assert isinstance(gs.init(key, "glu", 1, 4, 1), models.Params)
    mlp2 = gs.init(key, "mlp2", 1, 4, 1)
    assert mlp2.rows().shape == (1, gs.param_count("mlp2", 1, 4, 1) - 1)
    with pytest.raises(UsageError, match="params are not a 'relu2' model \\(got mlp2\\)"):
        gs.apply("relu2", mlp2, x)
    with pytest.raises(UsageError, match="init of 'relu2': .*activation"):
        gs.init(key, "relu2", 1, 4, 1, activation="gelu")


def test_a_users_name_can_be_defined_again_but_not_a_built_in_one():
    """Running a notebook cell again registers the new definition under the same name; a
    built-in name is refused in one line."""
    def make():
        return gs.Unit("cell_unit", lambda p, x: p["o"] * affine_sum(p, x), (("w", "affine"), ("o", "out")),
                       linear=("o",))

    def affine_sum(p, x):
        return gs.affine(p["w"], x)

    first, second = gs.register(make()), gs.register(make())
    assert architectures.resolve("cell_unit") is second is not first
    with pytest.raises(UsageError, match="'relu2' is a built-in architecture"):
        gs.register(gs.Unit("relu2", lambda p, x: p["o"], (("o", "out"),)))
