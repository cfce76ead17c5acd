"""The dense path (`glu_scaling.dense`): models that are not a sum of units."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import glu_scaling as gs
from glu_scaling import dense, newton, problems, train
from glu_scaling.errors import UsageError

jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize("arch", [dense.MLP2, dense.GLU2])
def test_the_dense_hessian_is_the_hessian_of_the_loss(arch):
    """The engine's Hessian and gradient of a dense model (one row of every parameter, its
    per-unit block the whole second-order term), built over 2 chunks of data, equal
    jax.hessian and jax.grad of the loss in the flat parameters and d to 1e-10 relative."""
    ds = problems.make_dataset("paper_1d", n_train=64, n_test=8, seed=2, dtype="float64")
    x, t, w = ds.x_train, ds.y_train, jnp.ones(64)
    model = dense.init(jax.random.PRNGKey(1), arch, 1, 4, 1)
    layout = model.layout
    H, g = jax.jit(newton.hessian_and_gradient, static_argnames=("sel", "chunk"))(
        model, x, t, w, train.selection(layout.groups, layout), 32)

    def loss(theta):
        return newton.loss_fn(model.with_rows(theta[:-1][None], theta[-1:]), x, t, w)

    theta = jnp.concatenate([model.rows()[0], model.d])
    want_H, want_g = jax.jit(jax.hessian(loss))(theta), jax.jit(jax.grad(loss))(theta)
    assert H.shape == (arch.param_count(1, 4, 1),) * 2
    assert float(jnp.max(jnp.abs(H - want_H)) / jnp.max(jnp.abs(want_H))) < 1e-10
    assert float(jnp.max(jnp.abs(g - want_g)) / jnp.max(jnp.abs(want_g))) < 1e-10


def test_a_dense_sweep_trains_each_width_on_its_own():
    """mlp2 and glu2 in a sweep: every width is its own bucket (no padding), the parameter
    counts are the layers' (mlp2: n (n_in + 1) + n (n + 1) + n n_out + n_out), and
    newton-splines' least-squares stages (D; glu2: D, then U2) lower the error below the start."""
    recs = gs.sweep(["mlp2", "glu2"], "2,3", seeds=[0, 1], problem="paper_1d", optimizer="newton-splines",
                    n_data=48, n_test=48)
    assert [r["bucket_width"] for r in recs] == [r["n_hidden"] for r in recs]
    n = np.asarray([r["n_hidden"] for r in recs])
    mlp2 = n * 2 + n * (n + 1) + n + 1
    glu2 = 2 * n * 2 + 2 * n * (n + 1) + n + 1
    assert [r["n_params"] for r in recs] == [int(v) for v in np.where([r["arch"] == "mlp2" for r in recs],
                                                                       mlp2, glu2)]
    assert all(r["status"] == "ok" for r in recs)
    assert [r["steps"] for r in recs] == [1] * 4 + [2] * 4
    ds = problems.make_dataset("paper_1d", n_train=48, n_test=48, seed=0, dtype="float64")
    start = float(train.rmse(dense.init(jax.random.PRNGKey(0), dense.MLP2, 1, 3, 1), ds.x_test, ds.y_test))
    assert [r for r in recs if r["arch"] == "mlp2" and r["n_hidden"] == 3][0]["test_rmse"] < start


def test_a_dense_model_is_refused_where_it_cannot_go():
    with pytest.raises(UsageError, match="knots 'placed' works for gated spline degrees"):
        gs.sweep(["mlp2"], "2", problem="paper_1d", knots="placed", n_data=20, n_test=20)
    with pytest.raises(UsageError, match="linear names \\['V'\\]"):
        gs.Dense("bad_dense", lambda k, a, n, b: {"W": jnp.zeros((n, a))}, lambda p, x: p["W"] @ x,
                 linear=("V",)).unit_at(1, 2, 1)
