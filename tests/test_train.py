"""Tests for glu_scaling.train: masked units, batch independence, monotone Newton
schedules, divergence handling, and the spline schedule as an exact least-squares fit.

XLA compiles `train_batch` once per (config, shapes), which costs seconds on a small
CPU, so every test reuses a few shapes: 64 training points, padded width 8, batches
of 3 models (widths 3, 5, 8), and module-scoped fixtures.  conftest enables float64.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glu_scaling import inits, linsolve, models, newton, problems, schedules, train
from glu_scaling.errors import UsageError

ARCH = "glu"
WIDTHS = (3, 5, 8)
SEEDS = (0, 1, 2)
W = 8


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _stack(params_list):
    return jax.tree.map(lambda *a: jnp.stack(a), *params_list)


def _index(params, b):
    return jax.tree.map(lambda a: a[b], params)


def _leaves(p):
    return {name: np.asarray(getattr(p, name)) for name in ("G", "g", "U", "u", "D", "d")}


@pytest.fixture(scope="module")
def data():
    ds = problems.make_dataset("one_over_1_p_9x2", n_train=64, n_test=64)
    d, chunk = train.prepare_data(ds.x_train, ds.y_train, ds.x_test, ds.y_test, 64)
    assert chunk == 64 and float(jnp.sum(d.weight)) == 64
    return d


def _batch(arch=ARCH, widths=WIDTHS, seeds=SEEDS, width=W):
    return _stack([inits.init(jax.random.PRNGKey(s), arch, 1, n, 1, width=width) for n, s in zip(widths, seeds)])


def _train(params, data, optimizer, steps=3, lr=None):
    out, info = train.train_batch(params, data, schedules.TrainConfig(optimizer, steps=steps, learning_rate=lr,
                                                                  chunk=64))
    return out, jax.tree.map(np.asarray, info)


# one compiled program per (config, shapes) instead of train_one's eager op-by-op dispatch
# (two configs that train alike compile to the same program: the session's persistent
# cache in conftest.py then serves the second)
_train_one = jax.jit(train.train_one, static_argnames=("config",))


def _init_loss(params, data):
    return np.asarray(jax.vmap(lambda p: newton.loss_fn(p, data.x, data.t, data.weight))(params))


@pytest.fixture(scope="module")
def cascade(data):
    """glu widths 3, 5, 8 padded to 8, newton-cascade with 3 all-parameter steps."""
    params = _batch()
    out, info = _train(params, data, "newton-cascade")
    return params, out, info


# ---------------------------------------------------------------- masked units


def _with_garbage(params, seed=7):
    """Same models, with random non-zero values in every masked position."""
    rng = np.random.default_rng(seed)
    m = np.asarray(params.mask) > 0  # (B, W)

    def fill(a, mask):
        a = np.asarray(a)
        return jnp.asarray(np.where(mask, a, rng.normal(size=a.shape)))

    return params.replace(G=fill(params.G, m[..., None]), g=fill(params.g, m),
                          U=fill(params.U, m[:, None, :, None]), u=fill(params.u, m[:, None, :]),
                          D=fill(params.D, m[..., None]))


def _masked_view(p):
    m = np.asarray(p.mask) > 0
    return {"G": np.asarray(p.G)[~m], "g": np.asarray(p.g)[~m], "D": np.asarray(p.D)[~m],
            "U": np.moveaxis(np.asarray(p.U), 1, 2)[~m], "u": np.moveaxis(np.asarray(p.u), 1, 2)[~m]}


@pytest.mark.parametrize("optimizer", ["newton-splines", "newton-cascade", "newton", "adam", "lbfgs"])
def test_masked_units_never_change(data, cascade, optimizer):
    params = cascade[0] if optimizer == "newton-cascade" else _batch()
    out, info = cascade[1:] if optimizer == "newton-cascade" else _train(params, data, optimizer)
    masked = _masked_view(out)
    assert masked["G"].shape[0] == (W - 3) + (W - 5)
    for name, v in masked.items():
        assert np.all(v == 0.0), name
    # the real units did move (so the check above is not vacuous)
    assert np.max(np.abs(np.asarray(out.D) - np.asarray(params.D))) > 1e-6
    np.testing.assert_array_equal(out.mask, params.mask)
    # garbage in masked units is neither moved nor felt by the real units
    garbage = _with_garbage(params)
    out_g, info_g = _train(garbage, data, optimizer)
    for name, v in _masked_view(out_g).items():
        np.testing.assert_array_equal(v, _masked_view(garbage)[name], err_msg=name)
    m = np.asarray(params.mask) > 0
    np.testing.assert_allclose(np.asarray(out_g.D)[m], np.asarray(out.D)[m], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(info_g["test_rmse"], info["test_rmse"], rtol=1e-12)
    np.testing.assert_array_equal(info_g["status"], info["status"])


def test_spline_schedule_freezes_the_gates(data):
    params = _batch()
    out, info = _train(params, data, "newton-splines")
    np.testing.assert_array_equal(out.G, params.G)
    np.testing.assert_array_equal(out.g, params.g)
    # one step on {D, d}, one on {U, u}: both accepted
    np.testing.assert_array_equal(info["steps"], [2, 2, 2])
    assert np.all(info["loss"] <= _init_loss(params, data))


def _count_primitives(jaxpr, name: str) -> int:
    from jax.extend.core import jaxprs_in_params

    return sum((eqn.primitive.name == name) + sum(_count_primitives(sub, name) for sub in jaxprs_in_params(eqn.params))
               for eqn in jaxpr.eqns)


def test_factor_runs_are_consecutive_single_steps_on_factor_groups():
    Stage, f = schedules.Stage, models.factor
    assert train._factor_run([Stage((f(2),), 1), Stage((f(3),), 1), Stage((f(5),), 1)]) == (2, 2)
    assert train._factor_run([Stage((f(1),), 1), Stage((models.GATE,), 1)]) == (1, 1)
    assert train._factor_run([Stage((models.OUT,), 1), Stage((f(1),), 1)]) == (0, 0)
    assert train._factor_run([Stage((f(1),), 2), Stage((f(2),), 1)]) == (0, 0)
    assert train._factor_run([Stage((f(1), f(2)), 1)]) == (0, 0)
    assert train._factor_run([Stage((models.GATE,), 1)]) == (0, 0)


@pytest.mark.parametrize("n_in", [1, 3])
def test_padded_factors_train_as_the_models_own_program(n_in):
    """mlp, glu and gqu models padded to a gated-3 model's factors with constant ones
    (`models.with_constant_factors`) and trained in one batch with `factors=` their own
    counts (0, 1, 2, 3) give the parameters and info of their own unpadded programs: the
    padding multiplies by exactly 1.0 and its stages are skipped.  Bit for bit in 1D;
    with 3 inputs XLA may fuse the bigger program's multiply-adds differently, so there
    to rounding (1e-13 relative; the batching contract is 1e-9).  Other schedules refuse."""
    ds = problems.make_dataset("friedman1" if n_in > 1 else "one_over_1_p_9x2", n_train=64, n_test=64)
    x = ds.x_train[:, :n_in]
    data, _ = train.prepare_data(x, ds.y_train, ds.x_test[:, :n_in], ds.y_test, 64)
    # the models and config of `_train(_batch(arch), data, "newton-splines")`: in 1D each
    # arch's own program is the one the other tests here (and test_compilation.py) compile
    config = schedules.TrainConfig("newton-splines", steps=3, chunk=64)
    archs = ("mlp", "glu", "gqu", "gated3")
    nb = len(WIDTHS)
    own = {}
    for arch in archs:
        params = _stack([inits.init(jax.random.PRNGKey(s), arch, n_in, n, 1, width=W) for n, s in zip(WIDTHS, SEEDS)])
        own[arch] = (params, *train.train_batch(params, data, config))
    padded = _stack([models.with_constant_factors(_index(own[arch][0], b), 3) for arch in archs for b in range(nb)])
    trained, info = train.train_batch(padded, data, config, factors=jnp.repeat(jnp.arange(4), nb))
    for i, arch in enumerate(archs):
        k = models.n_factors(arch)
        _, want_params, want_info = own[arch]
        rows = slice(nb * i, nb * (i + 1))
        got = models.without_constant_factors(jax.tree.map(lambda a: a[rows], trained), k)
        def same(u, v, what):  # bit for bit in 1D, else to 1e-13 relative
            u, v = np.asarray(u), np.asarray(v)
            assert u.shape == v.shape, what
            if n_in == 1:
                np.testing.assert_array_equal(u, v, err_msg=what)
            elif u.size:  # an mlp's U and u are empty
                assert _rel(u, v) < 1e-13, (what, _rel(u, v))

        for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(want_params)):
            same(u, v, arch)
        for key in ("status", "steps"):
            np.testing.assert_array_equal(np.asarray(info[key][rows]), np.asarray(want_info[key]))
        for key in ("loss", "train_rmse", "test_rmse"):
            same(info[key][rows], want_info[key], (arch, key))
        assert list(np.asarray(info["steps"][rows])) == [k + 1] * nb
        # the padding factors were not trained
        np.testing.assert_array_equal(np.asarray(trained.U[rows, k:]), 0.0)
        np.testing.assert_array_equal(np.asarray(trained.u[rows, k:]), 1.0)
    with pytest.raises(ValueError, match="newton-splines"):
        train.train_batch(padded, data, schedules.TrainConfig("newton-cascade", steps=1, chunk=64),
                          factors=jnp.zeros(len(archs) * nb, int))


def test_factor_stages_run_as_one_loop_with_the_numbers_of_one_stage_after_another(data):
    """newton-splines on a 3-factor model: {D, d}, then {U_1, u_1}, {U_2, u_2}, {U_3, u_3} in
    one loop around one compiled least-squares step (`train._factor_stages`) gives the
    parameters, loss and step count of the four stages traced one by one, bit for bit; and
    the program holds as many QR factorisations for 3 factors as for 2 (the loop's
    body once), where one stage after another would hold 2 (k + 1) of them."""
    params = _batch("gated3")
    config = schedules.TrainConfig("newton-splines", chunk=64)

    def one_by_one(p):
        carry = train._initial_carry(p, data)
        for stage in schedules.TrainConfig("newton-splines").stages(3):
            carry = train._newton_stage(carry, data, train.selection(stage.groups, 3, 1, 1), 1, 64)
        return carry.params, carry.loss, carry.accepted

    looped, info = train.train_batch(params, data, config)  # (compiled once with test_padded_factors_...)
    want, loss, accepted = jax.jit(jax.vmap(one_by_one))(params)
    for u, v in zip(jax.tree.leaves(looped), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    np.testing.assert_array_equal(info["loss"], loss)
    np.testing.assert_array_equal(info["steps"], accepted)
    np.testing.assert_array_equal(info["steps"], [4, 4, 4])
    for k_moved in range(3):  # every factor group moved
        assert np.any(np.asarray(looped.U[:, k_moved]) != np.asarray(params.U[:, k_moved]))

    def qr_count(arch, fun):
        p = inits.init(jax.random.PRNGKey(0), arch, 1, 5, 1, width=W)
        return _count_primitives(jax.make_jaxpr(fun)(p).jaxpr, "qr")

    looped_qr = {arch: qr_count(arch, lambda p: train.train_newton(p, data, config)) for arch in ("gqu", "gated3")}
    assert looped_qr["gqu"] == looped_qr["gated3"]
    assert qr_count("gated3", lambda p: one_by_one(p)[0]) == 2 * (3 + 1) > looped_qr["gated3"]


# ---------------------------------------------------------------- batch independence


def test_model_in_mixed_batch_equals_solo_run(data, cascade):
    """Width 3 trained padded to 8 beside widths 5 and 8 == trained alone at width 3.
    (init(key, ..., width=W) == pad(init(key, ...), W) is tested in test_models.)"""
    _, out, info = cascade
    i = 0
    n, s = WIDTHS[i], SEEDS[i]
    solo0 = inits.init(jax.random.PRNGKey(s), ARCH, 1, n, 1)
    solo, solo_info = _train(_stack([solo0]), data, "newton-cascade")
    for key in ("train_rmse", "test_rmse", "loss"):
        assert _rel(info[key][i], solo_info[key][0]) < 1e-9, key
    assert info["status"][i] == solo_info["status"][0] and info["steps"][i] == solo_info["steps"][0]
    assert info["steps"][i] >= 4  # the cascade's stages really ran
    real = models.unpad(_index(out, i))
    alone = _index(solo, 0)
    for name, v in _leaves(real).items():
        assert v.shape == _leaves(alone)[name].shape
        assert _rel(v, _leaves(alone)[name]) < 1e-9, name


def test_info_is_consistent_with_the_returned_params(data, cascade):
    params, out, info = cascade
    loss = _init_loss(out, data)  # loss_fn of the trained params
    np.testing.assert_allclose(info["loss"], loss, rtol=1e-12)
    # n_out = 1: L = rmse^2 / 2 on the training points
    np.testing.assert_allclose(info["loss"], 0.5 * info["train_rmse"] ** 2, rtol=1e-12)
    y = jax.vmap(lambda p: newton.apply_params(p, data.x_test))(out)
    np.testing.assert_allclose(info["test_rmse"], np.sqrt(np.mean((np.asarray(y) - np.asarray(data.t_test)) ** 2,
                                                                  axis=(1, 2))), rtol=1e-12)
    assert [train.STATUSES[int(c)] for c in info["status"]] == ["ok"] * 3


# ---------------------------------------------------------------- monotone Newton


def test_newton_never_increases_the_loss(data, cascade):
    params, _, info = cascade
    loss0 = _init_loss(params, data)
    assert np.all(info["loss"] <= loss0) and np.all(info["loss"] < 0.5 * loss0)
    out2, info2 = _train(params, data, "newton", steps=2)
    out3, info3 = _train(params, data, "newton", steps=3)
    assert np.all(info2["loss"] <= loss0)
    assert np.all(info3["loss"] <= info2["loss"]), (info2["loss"], info3["loss"])
    # step 3 starts where step 2 ended: where step 3 was rejected nothing moved
    rejected = info3["steps"] == info2["steps"]
    for b in np.flatnonzero(rejected):
        np.testing.assert_array_equal(np.asarray(out3.D)[b], np.asarray(out2.D)[b])


# ---------------------------------------------------------------- divergence


@pytest.mark.parametrize("optimizer,bad", [("newton-cascade", np.inf), ("newton-cascade", np.nan),
                                           ("adam", np.inf)])
def test_diverged_model_does_not_poison_its_batch(data, cascade, optimizer, bad):
    params = cascade[0]
    if optimizer == "newton-cascade":
        ref_out, ref_info = cascade[1:]
    else:
        ref_out, ref_info = _train(params, data, optimizer)
    D = np.asarray(params.D).copy()
    D[1, 0, 0] = bad
    poisoned = params.replace(D=jnp.asarray(D))
    out, info = _train(poisoned, data, optimizer)
    assert [train.STATUSES[int(c)] for c in info["status"]] == ["ok", "diverged", "ok"]
    assert train.STATUSES[int(info["status"][1])] == "diverged"
    for b in (0, 2):
        for key in ("train_rmse", "test_rmse", "loss", "status", "steps"):
            np.testing.assert_array_equal(info[key][b], ref_info[key][b], err_msg=key)
        for name, v in _leaves(_index(out, b)).items():
            np.testing.assert_array_equal(v, _leaves(_index(ref_out, b))[name], err_msg=name)


# ---------------------------------------------------------------- first order


def test_adamw_decreases_the_loss(data):
    params = _batch()
    out, info = _train(params, data, "adamw", steps=5, lr=1e-4)
    loss0 = _init_loss(params, data)
    assert np.all(info["loss"] < loss0)
    assert [train.STATUSES[int(c)] for c in info["status"]] == ["ok"] * 3
    # 5 steps of adam: each moves a parameter by at most lr (1 - b1) / sqrt(1 - b2)
    moved = np.max(np.abs(np.asarray(out.D) - np.asarray(params.D)))
    assert 0 < moved <= 5 * 1e-4 * 0.1 / np.sqrt(1 - 0.999) * 1.01


# ---------------------------------------------------------------- newton-splines = least squares


def test_spline_schedule_on_mlp_is_the_least_squares_spline(data):
    """MLP + newton-splines: one Newton step on {D, d} with ReLU gates frozen at the
    knots linspace(-1.001, 1.001, n), alternating facing: the least-squares linear
    spline (numpy lstsq on the ReLU features).

    For odd n the last unit (facing right at 1.001) is dead on [-1, 1] and the rest are
    independent; for even n the first and last units are both linear on [-1, 1], so the
    design is rank-deficient by one (the Newton solve then needs the damping ladder):
    the fitted values are still the unique least-squares ones, to a looser tolerance."""
    widths = (3, 4, 7)
    params = _batch("mlp", widths)
    out, info = _train(params, data, "newton-splines", steps=None)
    x, t = np.asarray(data.x), np.asarray(data.t)
    xt, tt = np.asarray(data.x_test), np.asarray(data.t_test)
    for b, n in enumerate(widths):
        i = np.arange(n)
        knots = -1.001 + i * 2.002 / (n - 1)
        sign = np.where(i % 2 == 0, 1.0, -1.0)
        np.testing.assert_allclose(np.asarray(out.G)[b, :n, 0], sign, rtol=0, atol=1e-15)
        np.testing.assert_allclose(np.asarray(out.g)[b, :n], -sign * knots, rtol=0, atol=1e-14)

        def feats(z):
            return np.concatenate([np.maximum(sign * (z - knots), 0.0), np.ones((z.shape[0], 1))], axis=1)

        live = np.any(feats(x)[:, :n] != 0, axis=0)
        rank = np.linalg.matrix_rank(feats(x))
        assert rank == (live.sum() + 1 if n % 2 else n)  # even n: one collinearity
        tol = 1e-10 if n % 2 else 1e-8
        coef, *_ = np.linalg.lstsq(feats(x), t, rcond=None)
        fit = feats(x) @ coef
        y = np.asarray(newton.apply_params(_index(out, b), data.x))
        assert _rel(y, fit) < tol, (n, _rel(y, fit))
        assert _rel(info["train_rmse"][b], np.sqrt(np.mean((fit - t) ** 2))) < 1e-12
        assert _rel(info["test_rmse"][b], np.sqrt(np.mean((feats(xt) @ coef - tt) ** 2))) < tol
        if n % 2:  # full rank on the live units: the coefficients themselves are unique
            np.testing.assert_allclose(np.asarray(out.D)[b, :n][live], coef[:n][live], rtol=1e-9, atol=1e-10)
            np.testing.assert_allclose(np.asarray(out.d)[b], coef[n], rtol=1e-9, atol=1e-10)
    assert [train.STATUSES[int(c)] for c in info["status"]] == ["ok"] * 3


def test_stage_masks_pick_each_groups_columns_of_every_unit_and_d():
    """k = 1, one input, one output: a packed unit row is [G, g, U, u, D], then d."""
    stages = schedules.TrainConfig("newton-cascade", 5, knot_moves=0).stages(1)
    masks = train.stage_masks(stages, 1, 1, 1, width=2)
    unit = {(models.OUT,): [0, 0, 0, 0, 1], (models.factor(1),): [0, 0, 1, 1, 0], (models.GATE,): [1, 1, 0, 0, 0],
            (models.GATE, models.factor(1), models.OUT): [1, 1, 1, 1, 1]}
    assert [s.groups for s in stages] == list(unit)
    for stage, mask in zip(stages, masks):
        with_d = models.OUT in stage.groups
        np.testing.assert_array_equal(mask, np.array(unit[stage.groups] * 2 + [with_d], bool))


@pytest.mark.parametrize("arch", ["glu", "gqu"])
def test_cascade_in_one_masked_loop_equals_stage_by_stage(data, arch):
    """newton-cascade runs its gate and all-parameter stages in one loop with run-time
    masks (`_newton_schedule`, after the spline stages on their own); every stage on its
    own, each compiled on its own smaller Hessian (`_newton_stage`), is the same method:
    equal to rounding after 3 full steps.
    Odd widths: with the spline init an even width makes the {D, d} least-squares
    problem rank-deficient, and rounding then picks different (equally good) minimisers."""
    params = _batch(arch, (3, 5, 7))
    config = schedules.TrainConfig("newton-cascade", steps=3, chunk=64, knot_moves=0)
    got, got_info = train.train_batch(params, data, config)

    def by_stage(p):  # each second-order stage with the 1D edge guard and outer gates held, as train's
        k = p.n_factors
        carry = train._initial_carry(p, data)
        for stage in config.stages(k):
            sel = train.selection(stage.groups, k, 1, 1)
            carry = train._newton_stage(carry, data, sel, stage.steps, 64, **train._edge_hold(carry.params, data, sel))
        return carry

    want = jax.jit(jax.vmap(by_stage))(params)
    n_single = len(config.stages(params.n_factors)) - 1  # spline and gate steps
    np.testing.assert_array_equal(np.asarray(got_info["steps"]), n_single + 3)
    np.testing.assert_array_equal(np.asarray(want.accepted), n_single + 3)
    for name, leaf in _leaves(got).items():
        if leaf.size:
            assert _rel(leaf, getattr(want.params, name)) < 1e-8, (name, _rel(leaf, getattr(want.params, name)))
    predict = jax.vmap(lambda p: newton.apply_params(p, data.x_test))
    assert _rel(predict(got), predict(want.params)) < 1e-10
    assert _rel(got_info["loss"], want.loss) < 1e-10


def test_gate_steps_take_that_many_steps_on_the_gates_alone(data):
    """gate_steps=N: N Newton steps on {G, g} between the spline stages and the all-parameter
    ones (the reference's code takes 3).  With 0 all-parameter steps they move the gates
    only: every other parameter is newton-splines' to the bit, and each accepted step lowers
    the loss, so 3 gate steps end at or below 1; gate_steps=0 is newton-splines exactly.
    (Three gate steps run in the masked loop are not compared with three stage-by-stage ones:
    on an indefinite gate Hessian rounding can pick another damping rung, another path.)"""
    assert schedules.TrainConfig("newton-cascade", 2, gate_steps=3).stages(1)[-2:] == [
        schedules.Stage((models.GATE,), 3), schedules.Stage(models.all_groups(1), 2)]
    with pytest.raises(UsageError, match="optimizer 'newton' has no gate stage"):
        schedules.TrainConfig("newton", gate_steps=3)
    params = _batch("glu", (3, 5, 7))
    splines, _ = _train(params, data, "newton-splines")

    def gates_only(gate_steps):  # (gate_steps=0 compiles the very program of newton-splines above)
        config = schedules.TrainConfig("newton-cascade", steps=0, chunk=64, gate_steps=gate_steps, knot_moves=0)
        out, info = train.train_batch(params, data, config)
        return out, jax.tree.map(np.asarray, info)

    loss = {}
    for gate_steps in (0, 1, 3):
        out, info = gates_only(gate_steps)
        loss[gate_steps] = info["loss"]
        assert np.all((info["steps"] >= 2) & (info["steps"] <= 2 + gate_steps)), info["steps"]  # {D, d}, {U, u}
        for name, leaf in _leaves(out).items():
            if name in ("U", "u", "D", "d") or gate_steps == 0:
                np.testing.assert_array_equal(leaf, getattr(splines, name), err_msg=(gate_steps, name))
    assert info["steps"].max() == 2 + 3  # all three gate steps taken (by widths 3 and 7; width 5's second fails)
    assert np.all(loss[3] <= loss[1] * (1 + 1e-9)) and np.all(loss[1] < loss[0])  # 1e-9: the first gate step's
    # rounding differs between the masked loop (3 steps) and a stage of its own (1 step)


def test_cascade_starts_from_the_spline_stages_solved_on_j():
    """newton-cascade begins with newton-splines' stages and then only accepts steps that
    lower the loss, so it ends at or below newton-splines' training RMSE.  A GQU of width
    100 on 1000 points of the paper's target has cond(J) = 3e11 (1e10 with unit columns) in
    its {U2, u2} stage:
    solved by QR of J (as newton-splines does) the cascade ends at 2.6e-7 against 3.1e-7;
    through J^T J, as its masked all-parameter loop once did, the stage lost half the
    digits and the cascade ended 3x above newton-splines (9.3e-7)."""
    dataset = problems.make_dataset("paper_1d", n_train=1000, n_test=1000, seed=0, dtype="float64")
    data, chunk = train.prepare_data(dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test, 1000)
    # (the init compiled as one program: op by op it dispatches hundreds of small ones)
    params = jax.jit(lambda key: inits.init(key, "gqu", 1, 100, 1, x_data=dataset.x_train))(jax.random.PRNGKey(0))
    rmse = {}
    for optimizer in ("newton-splines", "newton-cascade"):
        config = schedules.TrainConfig(optimizer, steps=2, chunk=chunk)
        rmse[optimizer] = float(_train_one(params, data, config)[1]["train_rmse"])
    assert rmse["newton-cascade"] <= rmse["newton-splines"]
    # the regime claimed: after the {D, d} and {U1, u1} stages, the {U2, u2} stage's J (columns
    # scaled to unit norm, as the solver does) has cond > 1e9, so cond(J^T J) > 1e18 > 1/eps
    J = np.asarray(_factor2_jacobian_after_the_first_stages(params, data, chunk)).T
    assert np.linalg.cond(J / np.linalg.norm(J, axis=0)) > 1e9


@functools.partial(jax.jit, static_argnames=("chunk",))
def _factor2_jacobian_after_the_first_stages(params, data, chunk):
    """A GQU's weighted Jacobian on its {U2, u2} columns after one {D, d} and one {U1, u1}
    stage (one compiled program, not the stages' eager dispatch)."""
    carry = train._initial_carry(params, data)
    for groups in ((models.OUT,), (models.factor(1),)):
        carry = train._newton_stage(carry, data, train.selection(groups, 2, 1, 1), 1, chunk)
    return newton._weighted_jacobian(carry.params, data.x, data.t, data.weight,
                                     train.selection((models.factor(2),), 2, 1, 1))[0]


def test_default_config_trains_data_of_any_size():
    """prepare_data pads to a multiple of the chunk it returns (here all 300 rows); a TrainConfig
    with the default chunk (2048) trains those data as one with chunk=300 does, bit for bit,
    and a chunk that does not divide the rows is refused in one line."""
    x = jnp.linspace(-1.0, 1.0, 300)[:, None]
    t = jnp.sin(3 * x)
    data, chunk = train.prepare_data(x, t, x, t, 2048)
    assert chunk == 300 and data.x.shape == (300, 1)
    params = inits.init(jax.random.PRNGKey(0), "glu", 1, 6, 1)
    _, default = _train_one(params, data, schedules.TrainConfig("newton-splines"))
    _, explicit = _train_one(params, data, schedules.TrainConfig("newton-splines", chunk=chunk))
    assert float(default["train_rmse"]) == float(explicit["train_rmse"]) < 0.05
    padded, chunk = train.prepare_data(x, t, x, t, 128)  # 384 rows
    with pytest.raises(UsageError, match=r"384 rows, not a multiple of TrainConfig.chunk=100"):
        train.train_one(params, padded, schedules.TrainConfig("newton-splines", chunk=100))


@pytest.mark.parametrize("optimizer,steps", [("newton-cascade", 6), ("newton", 6), ("newton-cascade", 1)])
def test_rungs_per_round_train_the_same_models_bit_for_bit(data, optimizer, steps):
    """Damping rungs factored 3 at a time pick the rungs of one at a time
    (`linsolve.damped_cholesky_solve`): a vmapped batch of GQUs of several widths trains
    to the same bits, in the one-loop schedule and in the stage-by-stage one (steps=1).
    (The knot moves take no damped step: left out, a smaller program.)"""
    params = _batch("gqu")
    config = schedules.TrainConfig(optimizer, steps, chunk=64, **({"knot_moves": 0} if optimizer == "newton-cascade"
                                                                  else {}))
    one, info_one = train.train_batch(params, data, config)
    three, info_three = train.train_batch(params, data, config, ladder=linsolve.Ladder(rungs_per_round=3))
    for u, v in zip(jax.tree.leaves((one, info_one)), jax.tree.leaves((three, info_three))):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    with pytest.raises(UsageError, match="rungs_per_round must be a positive integer, got 0"):
        linsolve.Ladder(rungs_per_round=0)


def test_a_blocked_cholesky_trains_the_same_models_to_rounding(data):
    """The damping ladder factored by blocks of 4 columns (`linsolve.blocked_cholesky`,
    `linsolve.Ladder.cholesky_block`) takes the same rungs as the unblocked one on a vmapped
    batch of GQUs (P up to 57) and ends at the same parameters to rounding after the
    cascade's stages and 4 all-parameter steps (no knot moves: they take no damped step)."""
    params = _batch("gqu")
    config = schedules.TrainConfig("newton-cascade", 4, chunk=64, knot_moves=0)
    one, info_one = train.train_batch(params, data, config)
    blocked, info_b = train.train_batch(params, data, config, ladder=linsolve.Ladder(cholesky_block=4))
    np.testing.assert_array_equal(np.asarray(info_b["steps"]), np.asarray(info_one["steps"]))
    np.testing.assert_allclose(np.asarray(info_b["loss"]), np.asarray(info_one["loss"]), rtol=1e-9)
    for u, v in zip(jax.tree.leaves(blocked), jax.tree.leaves(one)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-7, atol=1e-9)
    for bad in (-1, 2.0, True):
        with pytest.raises(UsageError, match=f"cholesky_block must be a non-negative integer .*got {bad!r}"):
            linsolve.Ladder(cholesky_block=bad)
