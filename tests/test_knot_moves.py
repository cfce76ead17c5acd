"""Tests for the knot-moving stage: `knots.equidistribute`, `knots.moved_knots`, the
stage inside `train` (schedules `newton-knots` and `newton-cascade` in 1D) and the edge
guard of the all-parameter steps.

The training tests share a few shapes (one compiled program each): mostly 400 or 12
training points and padded width 32 or 8.  conftest enables float64.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import glu_scaling as gs
from glu_scaling import architectures, inits, knots, models, schedules, train
from glu_scaling.errors import UsageError

_train_one = jax.jit(train.train_one, static_argnames=("config",))


def _data(f, n, lo=-1.0, hi=1.0):
    x = jnp.linspace(lo, hi, n)[:, None]
    y = f(x)
    data, chunk = train.prepare_data(x, y, x, y, n)
    return data, chunk


def _batch(arch, widths, width, seeds=None):
    seeds = seeds or [0] * len(widths)
    models_ = [inits.init(jax.random.PRNGKey(s), arch, 1, n, 1, width=width) for n, s in zip(widths, seeds)]
    return jax.tree.map(lambda *a: jnp.stack(a), *models_)


def _sorted_knots(params, n):
    return np.sort(np.asarray(-params.g / params.G[:, 0])[:n])


def _train(params, data, chunk, optimizer, **options):
    config = schedules.TrainConfig(optimizer, chunk=chunk, **options)
    out, info = train.train_batch(params, data, config)
    return out, jax.tree.map(np.asarray, info)


# ---------------------------------------------------------------- equidistribution


def test_equidistribute_is_exact_for_a_piecewise_constant_density():
    # cells [0, .5], [.5, 2], [2, 3] of densities 4, 1, 2: masses 2, 1.5, 2 (cumulative 0, 2,
    # 3.5, 5.5), then padding edges; the points sit at mass levels total * j / (count - 1)
    edges = jnp.array([0.0, 0.5, 2.0, 3.0, 7.0, 9.0])
    density = jnp.array([4.0, 1.0, 2.0, 5.0, 5.0])
    cum = np.array([0.0, 2.0, 3.5, 5.5])

    def inverse(level):  # the mass is linear on each cell
        c = min(int(np.searchsorted(cum, level, side="right")) - 1, 2)
        return float(edges[c]) + (level - cum[c]) / float(density[c])

    for count in (2, 3, 4):  # edges in use: 1, 2 or 3 cells
        total = cum[count - 1]
        got = np.asarray(knots.equidistribute(edges, density, count))
        expected = [inverse(total * j / (count - 1)) for j in range(count)]
        np.testing.assert_allclose(got[:count], expected, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(got[count:], float(edges[count - 1]))  # the rest repeat the last edge
    # by hand, count 4: levels 0, 11/6, 11/3, 11/2 fall at 0, 11/24, 2 + 1/12 and 3
    np.testing.assert_allclose(knots.equidistribute(edges, density, 4)[:4], [0.0, 11 / 24, 25 / 12, 3.0],
                               rtol=0, atol=1e-12)


def test_a_fit_with_a_constant_top_derivative_jump_gets_evenly_spaced_knots():
    # a p-th derivative linear in x (f^(p+1) constant) has the same jump per unit length at
    # every knot: from any start the knots become evenly spaced between the outer two
    rng = np.random.default_rng(0)
    for degree in (1, 2, 3):
        t = jnp.asarray(np.concatenate([[-1.0], np.sort(rng.uniform(-1, 1, 10)), [1.0], [0.3, 0.3]]))
        active = jnp.arange(14) < 12
        x = jnp.linspace(-1, 1, 500)
        new, outcome = knots.moved_knots(t, active, lambda m: 5.0 * m[:, None] - 1.0, x, jnp.ones(500),
                                         degree, 1.0)
        assert int(outcome) == knots.MOVED
        np.testing.assert_allclose(np.sort(np.asarray(new[:12])), np.linspace(-1, 1, 12), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(new[12:], t[12:])  # inactive knots stay


def test_a_fit_too_flat_too_sparse_or_too_narrow_keeps_its_knots():
    t = jnp.linspace(-1.0, 1.0, 8)
    x = jnp.linspace(-1, 1, 400)
    ones = jnp.ones(400)
    # a p-th derivative constant up to rounding: a polynomial fit of degree <= p
    flat, outcome = knots.moved_knots(t, jnp.ones(8, bool), lambda m: 2.0 + 1e-14 * m[:, None], x, ones, 2, 1.0)
    assert int(outcome) == knots.FLAT
    np.testing.assert_array_equal(flat, t)
    # 4 training points: 7 cells cannot each hold p + 1 = 3
    few_x = jnp.array([-0.9, -0.2, 0.1, 0.8])
    same, outcome = knots.moved_knots(t, jnp.ones(8, bool), lambda m: m[:, None] ** 3, few_x, jnp.ones(4), 2, 1.0)
    assert int(outcome) == knots.SPARSE
    np.testing.assert_array_equal(same, t)
    # two active knots: nothing between them to move
    same, outcome = knots.moved_knots(t, jnp.arange(8) < 2, lambda m: m[:, None] ** 3, x, ones, 2, 1.0)
    assert int(outcome) == knots.FEW
    np.testing.assert_array_equal(same, t)


# ---------------------------------------------------------------- the stage in training

LAMBDA = 3.0


def _exp_knots(a, b, n, degree):
    """The knots equidistributing |f^(p+1)|^(2/(2p+3)) for f = exp(LAMBDA x) on [a, b]."""
    s = 2.0 / (2 * degree + 3) * LAMBDA
    j = np.arange(n) / (n - 1)
    return np.log(np.exp(s * a) + j * (np.exp(s * b) - np.exp(s * a))) / s


@pytest.fixture(scope="module")
def exp_data():
    return _data(lambda x: jnp.exp(LAMBDA * x), 400)


def test_knot_moves_approach_the_closed_form_knots_of_an_exponential(exp_data):
    # f = exp(3x): its best knots for a degree-p spline are known in closed form; from
    # evenly spaced knots the stage gets within a fraction of a cell of them, closer at
    # 32 units than at 16 (the fit's estimate of f^(p+1) sharpens with the cells)
    data, chunk = exp_data
    params = _batch("glu", (16, 32), 32)
    out, info = _train(params, data, chunk, "newton-knots")
    _, splines = _train(params, data, chunk, "newton-splines")
    assert list(info["knots"]) == [knots.MOVED] * 2 and (info["knot_moves"] >= 1).all()
    errors = []
    for b, n in enumerate((16, 32)):
        t = _sorted_knots(jax.tree.map(lambda a: a[b], out), n)
        best = _exp_knots(t[0], t[-1], n, 2)
        errors.append(np.max(np.abs(t - best)) / np.min(np.diff(best)))
    assert errors[0] < 0.35 and errors[1] < 0.25 and errors[1] < errors[0], errors
    # the moved knots fit better than the evenly spaced ones (by about the placement gain)
    assert (info["loss"] < 0.7 * splines["loss"]).all(), (info["loss"], splines["loss"])


def test_a_batch_trains_each_model_as_alone(exp_data):
    data, chunk = exp_data
    widths, seeds = (9, 20, 32), (0, 1, 2)
    params = _batch("gqu", widths, 32, seeds)
    config = schedules.TrainConfig("newton-knots", chunk=chunk)
    out, info = train.train_batch(params, data, config)
    for b in range(3):
        solo, solo_info = _train_one(jax.tree.map(lambda a: a[b], params), data, config)
        # what the data identify, to 1e-9 of its scale: the knots and the fitted function (a
        # GQU's two factors may trade a constant between them, which rounding moves)
        one = jax.tree.map(lambda a: a[b], out)
        n = widths[b]
        for got, want in ((-one.g[:n] / one.G[:n, 0], -solo.g[:n] / solo.G[:n, 0]),
                          (one.output(data.x_test), solo.output(data.x_test))):
            assert np.max(np.abs(got - want)) <= 1e-9 * np.max(np.abs(want))
        assert int(info["knot_moves"][b]) == int(solo_info["knot_moves"])
        assert int(info["knots"][b]) == int(solo_info["knots"])


def test_the_stage_never_raises_the_training_loss(exp_data):
    # a round is kept only when the loss falls: the loss after the stage is at most the
    # spline stages' loss, for every architecture and start (here on the paper's target)
    data, _ = exp_data
    x = data.x
    paper = train.TrainData(x, 1.0 / (1.0 + jnp.cos(jnp.pi * x) ** 2), data.weight, data.x_test, data.t_test)
    for arch in ("mlp", "glu"):
        params = _batch(arch, (5, 12, 32), 32, (3, 4, 5))
        _, moved = _train(params, paper, 400, "newton-knots")
        _, splines = _train(params, paper, 400, "newton-splines")
        assert (moved["loss"] <= splines["loss"]).all()
        assert ((moved["knots"] == knots.MOVED) == (moved["loss"] < splines["loss"])).all()


@pytest.fixture(scope="module")
def tiny():
    return _data(lambda x: 2.0 * x + 1.0, 12), _data(lambda x: jnp.sin(4 * x), 12)


def test_degenerate_fits_keep_their_knots_and_loss_and_say_why(tiny):
    (linear, chunk), (wavy, _) = tiny
    params = _batch("glu", (2, 8, 8), 8)
    splines, s_info = _train(params, linear, chunk, "newton-splines")
    out, info = _train(params, linear, chunk, "newton-knots")
    # 2 units: fewer than 3 knots; a line: the GLU's quadratic pieces fit it exactly (flat)
    assert [knots.KNOT_OUTCOMES[i] for i in info["knots"][:2]] == ["fewer than 3 knots", "flat fit"]
    _, w_info = _train(params, wavy, chunk, "newton-knots")
    assert knots.KNOT_OUTCOMES[w_info["knots"][2]] == "too few points per cell"  # 12 points, 7 cells
    assert (info["knot_moves"][:2] == 0).all() and w_info["knot_moves"][2] == 0
    for name in ("G", "g"):  # untouched knots, the loss of the spline stages to the bit
        np.testing.assert_array_equal(getattr(out, name)[:2], getattr(splines, name)[:2])
    np.testing.assert_array_equal(info["loss"][:2], s_info["loss"][:2])


def test_a_user_unit_with_a_knot_and_a_degree_gets_its_knots_moved(exp_data):
    data, chunk = exp_data
    unit = architectures.RELU2
    params = unit.init_batch(jnp.asarray([0, 1], jnp.uint32), jnp.asarray([16, 12]), width=16, n_in=1, n_out=1,
                             spline_init=True, dtype=jnp.float64)
    config = schedules.TrainConfig("newton-knots", chunk=chunk)
    _, info = train.train_batch(params, data, config)
    _, splines = train.train_batch(params, data, schedules.TrainConfig("newton-splines", chunk=chunk))
    assert (np.asarray(info["knots"]) == knots.MOVED).all()
    assert (np.asarray(info["loss"]) < np.asarray(splines["loss"])).all()


# ---------------------------------------------------------------- the all-parameter steps' edge guard


def test_all_parameter_steps_never_put_a_knot_between_the_outer_knot_and_the_data():
    # training points on [-0.97, 0.97], outer knots at -1.001 and 1.001: no step may move a
    # knot into (-1.001, -0.97) or (0.97, 1.001), where the model would be a piece no point
    # constrains (a knot that starts there may stay)
    data, chunk = _data(lambda x: jnp.exp(LAMBDA * x), 400, -0.97, 0.97)
    widths = (9, 20, 32)
    params = _batch("glu", widths, 32, (0, 1, 2))
    out, _ = _train(params, data, chunk, "newton", steps=30)

    def in_gap(p):
        t = np.asarray(-p.g / p.G[..., 0])
        return ((t > -1.001 + 1e-9) & (t < -0.97)) | ((t > 0.97) & (t < 1.001 - 1e-9))

    for b, n in enumerate(widths):
        start, end = (in_gap(jax.tree.map(lambda a: a[b], p))[:n] for p in (params, out))
        assert not np.any(end & ~start), (b, np.asarray(-out.g[b] / out.G[b, :, 0])[:n])


# ---------------------------------------------------------------- schedules and settings


def test_the_knot_stage_is_in_the_1d_cascade_only_for_spline_models():
    config = schedules.TrainConfig("newton-cascade")
    kinds = [s.kind for s in config.stages(models.gated_layout(1, 1, 1))]
    assert kinds == ["newton", "newton", "knots", "newton", "newton"]
    assert config.stages(models.gated_layout(1, 1, 1))[2].steps == schedules.DEFAULT_KNOT_MOVES
    for layout in (models.gated_layout(1, 2, 1), models.gated_layout(1, 1, 1, "gelu"),
                   architectures.SWIGLU.layout(1, 1)):
        assert "knots" not in [s.kind for s in config.stages(layout)]
    assert [s.kind for s in schedules.TrainConfig("newton-knots").stages(2)] == ["newton"] * 3 + ["knots"]
    assert [s.kind for s in schedules.TrainConfig("newton-cascade", knot_moves=0).stages(1)] == ["newton"] * 4


@pytest.mark.parametrize("options, message", [
    (dict(optimizer="newton-splines", knot_moves=2), "optimizer 'newton-splines' has none"),
    (dict(optimizer="newton-cascade", knot_moves=-1), "knot_moves (--knot-moves) must be an integer"),
    (dict(optimizer="newton-knots", knot_moves=1.5), "got 1.5"),
])
def test_knot_moves_are_checked_where_they_enter(options, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        schedules.TrainConfig(**options)


def test_a_sweeps_records_say_what_the_knot_stage_did(tmp_path):
    recs = gs.sweep("glu", "2,6", "0", problem="paper_1d", optimizer="newton-knots", n_data=64, n_test=64,
                    out=tmp_path)
    by_width = {r["n_hidden"]: r for r in recs}
    assert by_width[2]["knot_outcome"] == "fewer than 3 knots" and by_width[2]["knot_moves"] == 0
    assert by_width[6]["knot_outcome"] in knots.KNOT_OUTCOMES
    assert (by_width[6]["knot_moves"] >= 1) == (by_width[6]["knot_outcome"] == "moved")
    assert json.loads((tmp_path / "config.json").read_text())["knot_moves"] == schedules.DEFAULT_KNOT_MOVES
    frozen = gs.sweep("glu", "2", "0", problem="paper_1d", optimizer="newton-splines", n_data=64, n_test=64)
    assert "knot_outcome" not in frozen[0] and "knot_moves" not in frozen[0]
