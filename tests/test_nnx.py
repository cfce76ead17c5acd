"""Tests for glu_scaling.nnx: Flax NNX modules that wrap the pure functions in models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import glu_scaling
from glu_scaling import inits, models
from glu_scaling.nnx import GLU, GQU, MLP, GatedUnits, Mask, arch_name

ARCHS = ("mlp", "glu", "gqu")
ALIASES = {"mlp": MLP, "glu": GLU, "gqu": GQU}
K = {"mlp": 0, "glu": 1, "gqu": 2}
N_IN, N, N_OUT, W = 1, 5, 1, 9  # the shape the models tests use too (cached compiles)
FIELDS = ("G", "g", "U", "u", "D", "d")


def np_params(seed, k, n_in, n, n_out, width=None, activation="relu"):
    """Params from numpy: N(0, 1) real units, zero masked padding."""
    rng = np.random.default_rng(seed)
    width = n if width is None else width
    G = np.zeros((width, n_in)); G[:n] = rng.normal(size=(n, n_in))
    g = np.zeros(width); g[:n] = rng.normal(size=n)
    U = np.zeros((k, width, n_in)); U[:, :n] = rng.normal(size=(k, n, n_in))
    u = np.zeros((k, width)); u[:, :n] = rng.normal(size=(k, n))
    D = np.zeros((width, n_out)); D[:n] = rng.normal(size=(n, n_out))
    d = rng.normal(size=n_out)
    mask = np.zeros(width); mask[:n] = 1
    return models.Params(*(jnp.asarray(a) for a in (G, g, U, u, D, d, mask)), activation=activation)


def _assert_params_equal(a: models.Params, b: models.Params):
    for name in (*FIELDS, "mask"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert getattr(a, name).dtype == getattr(b, name).dtype
    assert a.activation == b.activation


# ---------------------------------------------------------------- structure


@pytest.mark.parametrize("arch", ARCHS)
def test_module_is_models_init_with_param_and_mask_variables(arch):
    m = GatedUnits(N_IN, N, N_OUT, arch=arch, width=W, rngs=nnx.Rngs(0))
    # the same arrays inits.init makes from the same key
    _assert_params_equal(m.to_params(), inits.init(nnx.Rngs(0).params(), arch, N_IN, N, N_OUT, width=W))
    params = nnx.state(m, nnx.Param)
    masks = nnx.state(m, Mask)
    assert set(params.keys()) == set(FIELDS)
    assert set(masks.keys()) == {"mask"}
    assert not issubclass(Mask, nnx.Param) and issubclass(Mask, nnx.Variable)
    assert isinstance(m.mask, Mask) and all(isinstance(getattr(m, f), nnx.Param) for f in FIELDS)
    assert (m.n_in, m.n_out, m.width, m.n_factors) == (N_IN, N_OUT, W, K[arch])
    assert m.U[...].shape == (K[arch], W, N_IN)
    assert m.count_trainable() == models.param_count(arch, N_IN, N, N_OUT)


@pytest.mark.parametrize("arch", ARCHS)
def test_aliases_fix_the_architecture(arch):
    cls = ALIASES[arch]
    m = cls(N_IN, N, N_OUT, width=W, rngs=nnx.Rngs(0))
    assert isinstance(m, GatedUnits) and m.arch == arch == cls.ARCH
    ref = GatedUnits(N_IN, N, N_OUT, arch=arch, width=W, rngs=nnx.Rngs(0))
    _assert_params_equal(m.to_params(), ref.to_params())
    x = jnp.linspace(-1, 1, 17)[:, None]
    np.testing.assert_array_equal(m(x), ref(x))


# ---------------------------------------------------------------- calling


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "sigmoid"])
def test_call_is_models_apply(arch, activation):
    p = np_params(K[arch], K[arch], 2, 4, 3, 7, activation)
    m = GatedUnits.from_params(p)
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (12, 2)))
    y = m(x)
    np.testing.assert_array_equal(y, models.apply(arch, p, x))
    assert y.shape == (12, 3)
    # leading batch axes are flattened and restored; a single point maps to (n_out,)
    np.testing.assert_allclose(m(x.reshape(3, 4, 2)), y.reshape(3, 4, 3), rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(m(x[0]), y[0], rtol=1e-15, atol=1e-15)
    np.testing.assert_array_equal(m.hidden(x), models.hidden(p, x))


def test_padded_units_have_no_effect_in_the_module():
    m = GLU(N_IN, N, N_OUT, width=W, rngs=nnx.Rngs(1))
    x = jnp.linspace(-1, 1, 31)[:, None]
    y = m(x)
    dirty = m.to_params()
    junk = jnp.arange(1.0, W - N + 1) * 1e3
    m.load_params(dirty.replace(G=dirty.G.at[N:, 0].set(junk), g=dirty.g.at[N:].set(-junk),
                                u=dirty.u.at[:, N:].set(junk), D=dirty.D.at[N:, 0].set(junk)))
    assert np.all(np.asarray(m.D[...])[N:] != 0)
    np.testing.assert_allclose(m(x), y, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- conversion


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_to_params_from_params_round_trip(k):
    p = np_params(10 + k, k, 3, 4, 2, 6, "silu")
    m = GatedUnits.from_params(p)
    assert m.arch == arch_name(k) == ("mlp", "glu", "gqu", "gated3")[k]
    assert m.activation == "silu"
    _assert_params_equal(m.to_params(), p)
    # and back through a fresh module of the same class
    _assert_params_equal(type(m).from_params(m.to_params()).to_params(), p)
    # a module's params are a plain pytree models.apply accepts under jit
    x = jnp.ones((5, 3))
    np.testing.assert_allclose(jax.jit(models.apply, static_argnums=0)(m.arch, m.to_params(), x), m(x),
                               rtol=1e-14)


def test_from_params_on_aliases_checks_the_architecture():
    glu_p = np_params(0, 1, 1, 3, 1)
    gqu_p = np_params(0, 2, 1, 3, 1)
    assert GLU.from_params(glu_p).arch == "glu"
    assert GatedUnits.from_params(glu_p, arch="gated1").arch == "gated1"
    with pytest.raises(glu_scaling.UsageError, match="gqu"):
        GLU.from_params(gqu_p, arch="gqu")
    with pytest.raises(glu_scaling.UsageError, match="factors"):
        GLU.from_params(gqu_p)
    with pytest.raises(glu_scaling.UsageError, match="factors"):
        GatedUnits.from_params(glu_p, arch="mlp")


def test_load_params_checks_shapes():
    m = GatedUnits.from_params(np_params(0, 1, 2, 3, 1, 4))
    with pytest.raises(glu_scaling.UsageError, match="width"):
        m.load_params(np_params(0, 1, 2, 3, 1, 5))
    with pytest.raises(glu_scaling.UsageError, match="n_in"):
        m.load_params(np_params(0, 1, 1, 3, 1, 4))
    new = np_params(1, 1, 2, 2, 1, 4, "gelu")
    m.load_params(new)
    _assert_params_equal(m.to_params(), new)  # activation included
    x = jnp.ones((3, 2))
    np.testing.assert_array_equal(m(x), models.apply("glu", new, x))


# ---------------------------------------------------------------- errors and dtypes


def test_usage_errors():
    rngs = nnx.Rngs(0)
    with pytest.raises(glu_scaling.UsageError, match="'transformer'.*mlp, glu, gqu"):
        GatedUnits(1, 3, 1, arch="transformer", rngs=rngs)
    with pytest.raises(glu_scaling.UsageError, match="'swish'.*relu, gelu, silu, sigmoid"):
        GLU(1, 3, 1, activation="swish", rngs=rngs)
    with pytest.raises(glu_scaling.UsageError, match="n_hidden.*0"):
        GLU(1, 0, 1, rngs=rngs)
    with pytest.raises(glu_scaling.UsageError, match="width"):
        GLU(1, 5, 1, width=4, rngs=rngs)
    with pytest.raises(glu_scaling.UsageError, match="rngs"):
        GLU(1, 5, 1)
    m = GatedUnits.from_params(np_params(0, 1, 2, 3, 1))
    for shape in ((4, 3), (4, 1), (2, 4, 1), (3,), ()):
        with pytest.raises(glu_scaling.UsageError, match=r"\(\.\.\., 2\)") as info:
            m(jnp.zeros(shape))
        assert str(tuple(shape)) in str(info.value)
    with pytest.raises(glu_scaling.UsageError, match="'swish'"):
        GatedUnits.from_params(np_params(0, 1, 2, 3, 1, activation="swish"))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dtype_preserved(dtype):
    m = GLU(N_IN, N, N_OUT, width=W, dtype=dtype, rngs=nnx.Rngs(0))
    for leaf in jax.tree.leaves(nnx.state(m)):
        assert leaf.dtype == dtype
    y = m(jnp.linspace(-1, 1, 7, dtype=dtype)[:, None])
    assert y.dtype == dtype


# ---------------------------------------------------------------- inside a bigger model, trained


class _Net(nnx.Module):
    """A Linear projection to 1D, then a padded GLU block: GLU(tanh(Linear(x)))."""

    def __init__(self, rngs: nnx.Rngs):
        self.proj = nnx.Linear(3, 1, dtype=jnp.float64, param_dtype=jnp.float64, rngs=rngs)
        self.glu = GLU(1, N, N_OUT, width=W, rngs=rngs)

    def __call__(self, x):
        return self.glu(jnp.tanh(self.proj(x)))


def _loss(net, x, y):
    return jnp.mean((net(x) - y) ** 2)


def test_glu_block_in_a_bigger_model_trains_one_optax_step():
    net = _Net(nnx.Rngs(0))
    # put nonzero junk into the padded units: it must neither matter nor move
    p = net.glu.to_params()
    junk = jnp.linspace(2.0, 5.0, W - N)
    net.glu.load_params(p.replace(G=p.G.at[N:, 0].set(junk), g=p.g.at[N:].set(junk),
                                  U=p.U.at[:, N:, 0].set(junk), u=p.u.at[:, N:].set(junk),
                                  D=p.D.at[N:, 0].set(junk)))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (64, 3)))
    y = jnp.sin(2 * x.sum(axis=1, keepdims=True))

    lr = 1e-3
    optimizer = nnx.Optimizer(net, optax.sgd(lr), wrt=nnx.Param)

    @nnx.jit
    def train_step(net, optimizer, x, y):
        loss, grads = nnx.value_and_grad(_loss)(net, x, y)
        optimizer.update(net, grads)
        return loss, grads

    before = jax.tree.map(np.asarray, nnx.state(net))
    loss0, grads = train_step(net, optimizer, x, y)
    after = jax.tree.map(np.asarray, nnx.state(net))

    # the mask is not a Param: no gradient, no update
    assert "mask" not in grads["glu"]
    np.testing.assert_array_equal(after["glu"]["mask"], before["glu"]["mask"])
    np.testing.assert_array_equal(after["glu"]["mask"], [1.0] * N + [0.0] * (W - N))
    # SGD: every Param moved by exactly -lr * grad, in the Linear and in the GLU
    for path in (("proj", "kernel"), ("proj", "bias"), *[("glu", f) for f in FIELDS]):
        b, a, gr = before, after, grads
        for key in path:
            b, a, gr = b[key], a[key], gr[key]
        np.testing.assert_allclose(a, b - lr * np.asarray(gr), rtol=1e-14, atol=1e-16)
    # padded units got zero gradient, so they did not move
    for name, axis in (("G", 0), ("g", 0), ("U", 1), ("u", 1), ("D", 0)):
        gr = np.take(np.asarray(grads["glu"][name]), np.arange(N, W), axis=axis)
        assert np.all(gr == 0), name
        np.testing.assert_array_equal(np.take(after["glu"][name], np.arange(N, W), axis=axis),
                                      np.take(before["glu"][name], np.arange(N, W), axis=axis))
    # the real GLU units did learn something, and the step decreased the loss
    assert np.any(np.asarray(grads["glu"]["D"])[:N] != 0)
    assert float(_loss(net, x, y)) < float(loss0)
    # the GLU gradient is the gradient of the pure function models.apply
    z = jnp.tanh(x @ before["proj"]["kernel"] + before["proj"]["bias"])
    pure = jax.grad(lambda q: jnp.mean((models.apply("glu", q, z) - y) ** 2))(
        models.Params(**{f: jnp.asarray(before["glu"][f]) for f in FIELDS},
                      mask=jnp.asarray(before["glu"]["mask"]), activation="relu"))
    for f in FIELDS:
        np.testing.assert_allclose(grads["glu"][f], getattr(pure, f), rtol=1e-10, atol=1e-14)


def test_split_merge_keeps_the_mask_apart():
    m = GLU(N_IN, N, N_OUT, width=W, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    assert set(params.keys()) == set(FIELDS) and set(rest.keys()) == {"mask"}
    m2 = nnx.merge(graphdef, params, rest)
    x = jnp.linspace(-1, 1, 9)[:, None]
    np.testing.assert_array_equal(m2(x), m(x))

    @jax.jit
    def pure_call(params, rest, x):
        return nnx.merge(graphdef, params, rest)(x)

    np.testing.assert_allclose(pure_call(params, rest, x), m(x), rtol=1e-14)
