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
    """glu2 in a sweep: every width is its own bucket (no padding), the parameter counts are
    the layers' (glu2: 2 n (n_in + 1) + 2 n (n + 1) + n n_out + n_out; mlp2 half the hidden
    layers), and newton-splines' least-squares stages (D, then U2) lower the error below the
    start."""
    recs = gs.sweep(["glu2"], "2,3", seeds=[0, 1], problem="paper_1d", optimizer="newton-splines",
                    n_data=48, n_test=48)
    assert [r["bucket_width"] for r in recs] == [r["n_hidden"] for r in recs] == [2, 2, 3, 3]
    assert [r["n_params"] for r in recs] == [4 * n + 2 * n * (n + 1) + n + 1 for n in (2, 2, 3, 3)]
    assert [gs.param_count("mlp2", 2, n, 3) for n in (1, 5)] == [n * 3 + n * (n + 1) + 3 * n + 3 for n in (1, 5)]
    assert all(r["status"] == "ok" and r["steps"] == 2 for r in recs)
    ds = problems.make_dataset("paper_1d", n_train=48, n_test=48, seed=0, dtype="float64")
    start = float(train.rmse(dense.init(jax.random.PRNGKey(0), dense.GLU2, 1, 3, 1), ds.x_test, ds.y_test))
    assert recs[2]["test_rmse"] < start


def test_a_dense_model_is_refused_where_it_cannot_go():
    with pytest.raises(UsageError, match="knots 'placed' works for gated spline degrees"):
        gs.sweep(["mlp2"], "2", problem="paper_1d", knots="placed", n_data=20, n_test=20)
    with pytest.raises(UsageError, match="linear names \\['V'\\]"):
        gs.Dense("bad_dense", lambda k, a, n, b: {"W": jnp.zeros((n, a))}, lambda p, x: p["W"] @ x,
                 linear=("V",)).unit_at(1, 2, 1)


def test_an_nnx_module_sweeps_through_the_adapter():
    """A Flax NNX model whose width is a constructor argument (`nnx.dense_from_module`):
    its parameters are its nnx.Params (n (n_in + 1) + n_out (n + 1), plus the engine's d),
    records name it, and the least-squares stage on its last layer (the only linear
    parameters) brings it to that layer's least-squares fit, which no other weights of the
    last layer fit better: the training RMSE equals numpy's lstsq on its hidden features."""
    from flax import nnx

    from glu_scaling.nnx import dense_from_module

    class TwoLayer(nnx.Module):
        def __init__(self, n_in, n, n_out, rngs):
            self.l1 = nnx.Linear(n_in, n, rngs=rngs, param_dtype=jnp.float64)
            self.l2 = nnx.Linear(n, n_out, rngs=rngs, param_dtype=jnp.float64)

        def __call__(self, x):
            return self.l2(jax.nn.relu(self.l1(x)))

    arch = dense_from_module("two_layer_test", TwoLayer, linear=("l2.kernel",))
    recs = gs.sweep([arch], "3", seeds=[4], problem="paper_1d", optimizer="newton-splines", n_data=40, n_test=40)
    assert [(r["arch"], r["n_params"]) for r in recs] == [("two_layer_test", 3 * 2 + 1 * 4 + 1)]
    model = dense.init(jax.random.PRNGKey(4), arch, 1, 3, 1)
    parts = arch.unit_at(1, 3, 1).split(model.rows()[0], 1, 1)
    ds = problems.make_dataset("paper_1d", n_train=40, n_test=40, seed=0, dtype="float64")
    x = np.asarray(ds.x_train)
    h = np.maximum(x @ np.asarray(parts["l1.kernel"]).reshape(1, 3) + np.asarray(parts["l1.bias"]), 0)
    features = np.concatenate([h, np.ones((40, 1))], axis=1)  # the kernel and the engine's d (with l2.bias)
    y = np.asarray(ds.y_train)
    best = np.sqrt(np.mean((features @ np.linalg.lstsq(features, y, rcond=None)[0] - y) ** 2))
    assert abs(recs[0]["train_rmse"] - best) < 1e-10 * best
