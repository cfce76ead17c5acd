"""Tests for glu_scaling.models: every expected value is derived here, not copied from the code.

conftest.py enables float64.
"""

from __future__ import annotations

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import glu_scaling
from glu_scaling import inits, models
from glu_scaling.errors import UsageError
from glu_scaling.models import Params

ARCHS = ("mlp", "glu", "gqu")
ACTS = ("relu", "gelu", "silu", "sigmoid")
K = {"mlp": 0, "glu": 1, "gqu": 2}


def _rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(b)))


# Shapes passed to inits.init are kept to a few (S1, S2): on CPU every new shape costs
# eager compiles, and params built with numpy cover the many-shape sweeps instead.
S1 = (1, 5, 1, 9)  # n_in, n_hidden, n_out, width
S2 = (3, 6, 2, 10)


def _key(i: int = 0):
    # typed keys, like nnx.Rngs hands out, so the nnx tests reuse these compiles
    return jax.random.key(i)


def np_params(seed, k, n_in, n, n_out, width=None, activation="relu", dtype=np.float64, scale=1.0):
    """Params in the documented layout from numpy: N(0, scale^2) real units, zero masked padding."""
    rng = np.random.default_rng(seed)
    width = n if width is None else width

    G = np.zeros((width, n_in), dtype); G[:n] = scale * rng.normal(size=(n, n_in))
    g = np.zeros((width,), dtype); g[:n] = scale * rng.normal(size=n)
    U = np.zeros((k, width, n_in), dtype); U[:, :n] = scale * rng.normal(size=(k, n, n_in))
    u = np.zeros((k, width), dtype); u[:, :n] = scale * rng.normal(size=(k, n))
    D = np.zeros((width, n_out), dtype); D[:n] = scale * rng.normal(size=(n, n_out))
    d = rng.normal(size=n_out).astype(dtype)
    mask = np.zeros((width,), dtype); mask[:n] = 1
    return Params(*(jnp.asarray(a) for a in (G, g, U, u, D, d, mask)), activation=activation)


def exact_part(p: Params, n: int) -> Params:
    """The first n units of p, as an unpadded model (numpy slicing, no models.unpad)."""
    return p.replace(G=p.G[:n], g=p.g[:n], U=p.U[:, :n], u=p.u[:, :n], D=p.D[:n], mask=p.mask[:n])


_apply = jax.jit(models.apply, static_argnums=0)


def _garbage_in_padding(params: Params, seed: int) -> Params:
    """Overwrite every padded unit's G, g, U, u, D with large, finite, nonzero values."""
    rng = np.random.default_rng(seed)
    pad = np.asarray(params.mask) == 0

    def fill(a, axis):
        a = np.array(a)
        junk = rng.choice([-1.0, 1.0], a.shape) * 10.0 ** rng.uniform(0, 6, a.shape)
        sel = [slice(None)] * a.ndim
        sel[axis] = pad
        a[tuple(sel)] = junk[tuple(sel)]
        return jnp.asarray(a)

    return params.replace(
        G=fill(params.G, 0), g=fill(params.g, 0), U=fill(params.U, 1), u=fill(params.u, 1),
        D=fill(params.D, 0),
    )


# ---------------------------------------------------------------- padding

# One (n_in, n_hidden, width, n_out) case per (arch, activation): sampled from n_in 1..8,
# n_hidden <= width in 1..128, n_out 1..3, with the edges (1 unit, 128 units, no padding) included.
_EDGES = [(1, 1, 128, 1), (8, 128, 128, 3), (2, 1, 1, 1), (8, 127, 128, 3)]


def _padding_case(arch, activation):
    i = ARCHS.index(arch) * len(ACTS) + ACTS.index(activation)
    if i < len(_EDGES):
        return _EDGES[i]
    rng = np.random.default_rng(i)
    n = int(rng.integers(1, 129))
    return int(rng.integers(1, 9)), n, int(rng.integers(n, 129)), int(rng.integers(1, 4))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("activation", ACTS)
def test_padded_apply_equals_exact_width(arch, activation):
    n_in, n, width, n_out = _padding_case(arch, activation)
    seed = 1000 * ARCHS.index(arch) + ACTS.index(activation)
    padded = np_params(seed, K[arch], n_in, n, n_out, width, activation)
    exact = exact_part(padded, n)
    x = jnp.asarray(np.random.default_rng(seed).uniform(-1.5, 1.5, (33, n_in)))
    y = _apply(arch, exact, x)
    assert y.shape == (33, n_out)
    assert _rel_err(_apply(arch, padded, x), y) <= 1e-12
    # Padding is inert whatever the padded units hold.
    dirty = _garbage_in_padding(padded, seed)
    if width > n:
        assert np.all(np.asarray(dirty.G)[n:] != 0) and np.all(np.asarray(dirty.D)[n:] != 0)
    y_dirty = _apply(arch, dirty, x)
    assert np.all(np.isfinite(np.asarray(y_dirty)))
    assert _rel_err(y_dirty, y) <= 1e-12


@pytest.mark.parametrize("arch", ARCHS)
def test_init_padding_equals_exact_width(arch):
    # inits.init(width=W) vs inits.init(width=n) with the same key: same real units, zero masked rest.
    n_in, n, n_out, width = S1
    exact = inits.init(_key(1), arch, n_in, n, n_out)
    padded = inits.init(_key(1), arch, n_in, n, n_out, width=width)
    np.testing.assert_array_equal(padded.mask, [1.0] * n + [0.0] * (width - n))
    np.testing.assert_array_equal(padded.d, exact.d)
    for name in ("G", "g", "U", "u", "D"):
        a, b = np.asarray(getattr(padded, name)), np.asarray(getattr(exact, name))
        axis = 1 if name in ("U", "u") else 0
        np.testing.assert_array_equal(np.take(a, np.arange(n), axis=axis), b)
        assert np.all(np.take(a, np.arange(n, width), axis=axis) == 0)
    x = jnp.linspace(-1.2, 1.2, 41)[:, None]
    y = _apply(arch, exact, x)
    assert _rel_err(_apply(arch, padded, x), y) <= 1e-12
    dirty = _garbage_in_padding(padded, 5)
    assert _rel_err(_apply(arch, dirty, x), y) <= 1e-12
    h = np.asarray(jax.jit(models.hidden)(dirty, x))
    assert h.shape == (41, width) and np.all(h[:, n:] == 0)


def test_pad_then_unpad_round_trip():
    p = np_params(1, 2, 3, 5, 2)
    padded = models.pad(p, 17)
    # the documented layout: real units first, zero masked units after
    expected = np_params(1, 2, 3, 5, 2, 17)
    back = models.unpad(padded)
    for name in ("G", "g", "U", "u", "D", "d", "mask"):
        np.testing.assert_array_equal(getattr(padded, name), getattr(expected, name))
        np.testing.assert_array_equal(getattr(back, name), getattr(p, name))


# ---------------------------------------------------------------- parameter counts


def _paper_count(arch, dx, dy, n):
    # paper.md §2
    return {
        "mlp": (dx + dy + 1) * n + dy,
        "glu": (2 * dx + dy + 2) * n + dy,
        "gqu": (3 * dx + dy + 3) * n + dy,
    }[arch]


def _unmasked_scalars(p: Params) -> int:
    real = np.asarray(p.mask) > 0
    return int(
        np.asarray(p.G)[real].size + np.asarray(p.g)[real].size + np.asarray(p.U)[:, real].size
        + np.asarray(p.u)[:, real].size + np.asarray(p.D)[real].size + np.asarray(p.d).size
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_param_count_matches_paper_formula(arch):
    rng = np.random.default_rng(K[arch])
    cases = [(1, 1, 1), (1, 1, 50), (8, 3, 128)] + [
        (int(rng.integers(1, 9)), int(rng.integers(1, 4)), int(rng.integers(1, 129))) for _ in range(50)
    ]
    for dx, dy, n in cases:
        expected = _paper_count(arch, dx, dy, n)
        assert models.param_count(arch, dx, n, dy) == expected
        assert glu_scaling.param_count(arch, dx, n, dy) == expected
    # padding never counts: the same count from any padded layout (all padded to 128 here)
    for dx, dy, n in cases[:8]:
        p = np_params(dx + n, K[arch], dx, n, dy, 128)
        assert models.count_trainable(p) == _unmasked_scalars(p) == _paper_count(arch, dx, dy, n)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("spline_init", [True, False])
def test_param_count_equals_trainable_of_init(arch, spline_init):
    n_in, n, n_out, width = S1
    expected = _paper_count(arch, n_in, n_out, n)
    for w in (None, width):
        p = inits.init(_key(2), arch, n_in, n, n_out, width=w, spline_init=spline_init)
        assert p.width == (n if w is None else w)
        assert models.count_trainable(p) == _unmasked_scalars(p) == expected
        # the total number of scalars exceeds it by exactly the padded units
        total = sum(np.asarray(a).size for a in (p.G, p.g, p.U, p.u, p.D, p.d))
        assert total - expected == (p.width - n) * models.unit_size(K[arch], n_in, n_out)


def test_param_count_general_family():
    # "one gate times k linear factors": the gate and each factor carry (dx + 1) n, D carries dy n.
    for k, dx, dy, n in itertools.product((0, 1, 2, 3, 5), (1, 4), (1, 3), (1, 7)):
        expected = ((k + 1) * (dx + 1) + dy) * n + dy
        assert models.param_count(f"gated{k}", dx, n, dy) == expected
        p = np_params(k, k, dx, n, dy, n + 2)
        assert models.count_trainable(p) == _unmasked_scalars(p) == expected
    for name, k in K.items():
        assert models.param_count(name, 3, 5, 2) == models.param_count(f"gated{k}", 3, 5, 2)


# ---------------------------------------------------------------- one open unit is a polynomial


def _one_unit(k, seed):
    p = np_params(seed, k, 1, 1, 1)
    c = {name: float(np.asarray(getattr(p, name)).ravel()[0]) for name in ("G", "g", "D", "d")}
    c["U"] = [float(v) for v in np.asarray(p.U).ravel()]
    c["u"] = [float(v) for v in np.asarray(p.u).ravel()]
    knot = -c["g"] / c["G"]
    x = knot + np.linspace(-2, 2, 401)  # both sides of the knot
    return p, c, x


def test_open_glu_unit_is_the_paper_quadratic():
    for seed in range(5):
        p, c, x = _one_unit(1, seed)
        G, g, D, d, (U,), (u,) = c["G"], c["g"], c["D"], c["d"], c["U"], c["u"]
        y = np.asarray(_apply("glu", p, jnp.asarray(x[:, None])))[:, 0]
        z = G * x + g
        open_, closed = z > 1e-9, z < -1e-9
        assert open_.sum() > 100 and closed.sum() > 100
        # paper.md §2: D_i (G_i U_i x^2 + (g_i U_i + G_i u_i) x + g_i u_i)
        quad = D * (G * U * x**2 + (g * U + G * u) * x + g * u)
        np.testing.assert_allclose(y[open_] - d, quad[open_], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(y[closed], d)


def test_open_gqu_unit_is_the_expanded_cubic():
    for seed in range(5):
        p, c, x = _one_unit(2, seed)
        G, g, D, d, (U, Q), (u, q) = c["G"], c["g"], c["D"], c["d"], c["U"], c["u"]
        y = np.asarray(_apply("gqu", p, jnp.asarray(x[:, None])))[:, 0]
        z = G * x + g
        open_, closed = z > 1e-9, z < -1e-9
        assert open_.sum() > 100 and closed.sum() > 100
        # D (Gx+g)(Ux+u)(Qx+q), expanded by hand
        c3 = G * U * Q
        c2 = G * U * q + G * u * Q + g * U * Q
        c1 = G * u * q + g * U * q + g * u * Q
        c0 = g * u * q
        cubic = D * (c3 * x**3 + c2 * x**2 + c1 * x + c0)
        np.testing.assert_allclose(y[open_] - d, cubic[open_], rtol=1e-11, atol=1e-11)
        np.testing.assert_array_equal(y[closed], d)
        # a least-squares quartic through the open side has no x^4 term
        coef = np.polyfit(x[open_], y[open_], 4)
        assert abs(coef[0]) < 1e-8 * max(1.0, np.max(np.abs(coef)))
        np.testing.assert_allclose(coef[1:], [D * c3, D * c2, D * c1, D * c0 + d], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("arch", ARCHS)
def test_relu_model_is_piecewise_polynomial_of_degree_k_plus_1(arch):
    # Between consecutive knots of the spline init the model is one polynomial of degree k + 1:
    # a degree k + 2 least-squares fit on each cell has a vanishing top coefficient.
    k = K[arch]
    n_in, n, n_out, width = S1
    p = inits.init(_key(4), arch, n_in, n, n_out, width=width)
    real = np.asarray(p.mask) > 0
    knots = np.sort(-np.asarray(p.g)[real] / np.asarray(p.G)[real, 0])
    for lo, hi in zip(knots[:-1], knots[1:]):
        t = np.linspace(lo, hi, 40)[1:-1]
        y = np.asarray(_apply(arch, p, jnp.asarray(t[:, None])))[:, 0]
        coef = np.polyfit(t - (lo + hi) / 2, y, k + 2)
        assert abs(coef[0]) < 1e-7 * max(1.0, np.max(np.abs(coef)))


# ---------------------------------------------------------------- dtypes


@pytest.mark.parametrize("arch", ARCHS)
def test_dtype_preserved_in_apply(arch):
    p64 = np_params(6, K[arch], 2, 7, 2, 9, "gelu")
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), p64)
    x64 = jnp.asarray(np.random.default_rng(6).uniform(-1, 1, (20, 2)))
    y64 = _apply(arch, p64, x64)
    y32 = _apply(arch, p32, x64.astype(jnp.float32))
    assert y64.dtype == jnp.float64 and y32.dtype == jnp.float32
    assert _rel_err(y32, y64) < 1e-5  # float32 agrees to float32 precision


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dtype_preserved_in_init(dtype):
    n_in, n, n_out, width = S1
    for spline in (True, False):
        p = inits.init(_key(7), "glu", n_in, n, n_out, width=width, dtype=dtype, spline_init=spline)
        for leaf in jax.tree.leaves(p):
            assert leaf.dtype == dtype
        y = models.apply("glu", p, jnp.linspace(-1, 1, 11, dtype=dtype)[:, None])
        assert y.dtype == dtype and np.all(np.isfinite(np.asarray(y)))


def test_default_dtype_is_float64_under_x64():
    n_in, n, n_out, width = S1
    assert inits.init(_key(7), "glu", n_in, n, n_out).G.dtype == jnp.float64


# ---------------------------------------------------------------- usage errors


def test_unknown_arch_names_value_and_accepted():
    for bad in ("transformer", "GLU", "gated", "gated12", ""):
        with pytest.raises(glu_scaling.UsageError) as info:
            inits.init(_key(0), bad, 1, 3, 1)
        msg = str(info.value)
        assert repr(bad) in msg
        for name in ARCHS:
            assert name in msg
        for fn in (lambda: models.param_count(bad, 1, 3, 1), lambda: models.n_factors(bad),
                   lambda: models.apply(bad, np_params(0, 1, 1, 2, 1), jnp.zeros((3, 1)))):
            with pytest.raises(glu_scaling.UsageError, match="accepted"):
                fn()


def test_unknown_activation_names_value_and_accepted():
    for bad in ("tanhh", "ReLU", "swish"):
        with pytest.raises(glu_scaling.UsageError) as info:
            inits.init(_key(0), "glu", 1, 3, 1, activation=bad)
        msg = str(info.value)
        assert repr(bad) in msg
        for name in ACTS:
            assert name in msg
        with pytest.raises(glu_scaling.UsageError, match=re.escape(repr(bad))):
            models.apply("glu", np_params(0, 1, 1, 2, 1, activation=bad), jnp.zeros((3, 1)))
    assert issubclass(glu_scaling.UsageError, ValueError)


@pytest.mark.parametrize("bad", [0, -1, -128, 2.5, True, "3", None])
def test_non_positive_or_non_integer_sizes_raise(bad):
    for kwargs in ({"n_hidden": bad}, {"n_in": bad}, {"n_out": bad}):
        args = {"n_in": 1, "n_hidden": 3, "n_out": 1, **kwargs}
        with pytest.raises(glu_scaling.UsageError, match=re.escape(repr(bad))):
            inits.init(_key(0), "glu", args["n_in"], args["n_hidden"], args["n_out"])
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            models.param_count("glu", args["n_in"], args["n_hidden"], args["n_out"])
    if bad is not None:  # width=None means "no padding"
        with pytest.raises(glu_scaling.UsageError, match="width"):
            inits.init(_key(0), "glu", 1, 3, 1, width=bad)


@pytest.mark.parametrize("bad", [np.array(2.5), np.array([3, 4]), jnp.float32(2.5)],
                         ids=["np-float-array", "np-int-vector", "jnp-float-scalar"])
def test_array_like_non_integer_sizes_raise_usage_error(bad):
    # a value that has __index__ but refuses it (NumPy/JAX float or non-scalar arrays) gets a
    # UsageError naming the value, not NumPy's TypeError("only integer scalar arrays ...")
    # (errors.check_positive_int)
    with pytest.raises(glu_scaling.UsageError, match="n_hidden"):
        models.param_count("glu", 1, bad, 1)
    with pytest.raises(glu_scaling.UsageError, match="n_hidden"):
        inits.init(_key(0), "glu", 1, bad, 1)


def test_width_below_n_hidden_raises():
    with pytest.raises(glu_scaling.UsageError, match=r"width.*\b4\b"):
        inits.init(_key(0), "mlp", 1, 5, 1, width=4)
    with pytest.raises(glu_scaling.UsageError, match=r"\b3\b"):
        models.pad(np_params(0, 0, 1, 5, 1), 3)


@pytest.mark.parametrize("arch", ARCHS)
def test_apply_wrong_x_shape_raises(arch):
    p = np_params(0, K[arch], 3, 4, 2)
    for shape in ((10, 2), (10, 4), (10,), (3,), (2, 10, 3), ()):
        with pytest.raises(glu_scaling.UsageError, match=r"\(N, 3\)") as info:
            models.apply(arch, p, jnp.zeros(shape))
        assert str(tuple(shape)) in str(info.value)


def test_apply_arch_params_mismatch_raises():
    p = np_params(0, 1, 1, 4, 1)
    for other in ("mlp", "gqu"):
        with pytest.raises(glu_scaling.UsageError, match=other):
            models.apply(other, p, jnp.zeros((3, 1)))
    x = jnp.zeros((3, 1))
    np.testing.assert_array_equal(models.apply("gated1", p, x), models.apply("glu", p, x))


# ---------------------------------------------------------------- packed unit rows


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_pack_unpack_round_trip(k):
    p = np_params(10 + k, k, 3, 5, 2, 7, "silu")
    rows = models.pack_units(p)
    assert rows.shape == (7, (k + 1) * (3 + 1) + 2) == (7, models.unit_size(k, 3, 2))
    back = models.unpack_units(p, rows)
    for name in ("G", "g", "U", "u", "D", "d", "mask"):
        np.testing.assert_array_equal(getattr(back, name), getattr(p, name))
        assert getattr(back, name).shape == getattr(p, name).shape
    # new rows and d go where pack_units reads them back from
    rows2 = jnp.asarray(np.random.default_rng(k).normal(size=rows.shape))
    d2 = jnp.array([3.0, -4.0])
    q = models.unpack_units(p, rows2, d2)
    np.testing.assert_array_equal(models.pack_units(q), rows2)
    np.testing.assert_array_equal(q.d, d2)
    np.testing.assert_array_equal(q.mask, p.mask)
    assert q.activation == p.activation


@pytest.mark.parametrize("arch,activation", [("mlp", "silu"), ("glu", "relu"), ("gqu", "silu")])
def test_unit_outputs_sum_to_apply(arch, activation):
    k = K[arch]
    p = np_params(20 + k, k, 2, 6, 3, 9, activation)
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (25, 2)))
    rows = models.pack_units(p)
    per_unit = jax.jit(jax.vmap(jax.vmap(
        lambda r, xi: models.unit_output(r, xi, k=k, n_in=2, activation=activation),
        in_axes=(0, None)), in_axes=(None, 0)))(rows, x)  # (N, W, n_out)
    assert per_unit.shape == (25, 9, 3)
    y = p.d + jnp.sum(per_unit * p.mask[None, :, None], axis=1)
    assert _rel_err(y, _apply(arch, p, x)) < 1e-12
    # each real unit's output is its hidden column times D_i
    h = models.hidden(p, x)
    np.testing.assert_allclose(per_unit[:, :6], h[:, :6, None] * p.D[None, :6], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("dx,dy", [(1, 1), (3, 2)])
def test_group_columns_partition_the_row(k, dx, dy):
    groups = ["gate", "out"] + [f"factor{j}" for j in range(1, k + 1)]
    cols = {gname: models.group_columns(k, dx, dy, models.Group.parse(gname, k)) for gname in groups}
    flat = sorted(itertools.chain.from_iterable(cols.values()))
    assert flat == list(range(models.unit_size(k, dx, dy)))  # disjoint and complete
    # each group picks the arrays it is named after
    p = np_params(30 + k, k, dx, 4, dy)
    rows = np.asarray(models.pack_units(p))
    np.testing.assert_array_equal(rows[:, cols["gate"]], np.column_stack([p.G, p.g]))
    np.testing.assert_array_equal(rows[:, cols["out"]], np.asarray(p.D))
    for j in range(1, k + 1):
        np.testing.assert_array_equal(rows[:, cols[f"factor{j}"]], np.column_stack([p.U[j - 1], p.u[j - 1]]))
    if k >= 1:
        assert models.group_columns(k, dx, dy, models.Group.parse("U", k)) == cols["factor1"]
    if k >= 2:
        assert models.group_columns(k, dx, dy, models.Group.parse("Q", k)) == cols["factor2"]
    with pytest.raises(glu_scaling.UsageError, match="accepted: gate, out"):
        models.Group.parse(f"factor{k + 1}", k)
    with pytest.raises(glu_scaling.UsageError, match="'bias'"):
        models.Group.parse("bias", k)


@pytest.mark.parametrize("k,alias", [(0, "U"), (1, "Q")])
def test_group_alias_error_names_the_value_given(k, alias):
    # the error names the alias given ('U'), not the group it stands for ('factor1')
    # (models.Group.parse)
    with pytest.raises(glu_scaling.UsageError, match=f"'{alias}'"):
        models.Group.parse(alias, k)


# ---------------------------------------------------------------- jit and vmap over models


@pytest.mark.parametrize("arch", ARCHS)
def test_jit_vmap_over_padded_batch_matches_per_model(arch):
    widths, W, n_in, n_out = (1, 13, 32), 32, 2, 2
    rng = np.random.default_rng(40)
    x = jnp.asarray(rng.uniform(-1, 1, (40, n_in)))
    padded = [np_params(40 + i, K[arch], n_in, n, n_out, W) for i, n in enumerate(widths)]
    singles = [exact_part(p, n) for p, n in zip(padded, widths)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *padded)
    assert stacked.mask.shape == (len(widths), W)
    np.testing.assert_array_equal(np.asarray(stacked.mask).sum(1), widths)
    batched = jax.jit(jax.vmap(lambda p: models.apply(arch, p, x)))(stacked)
    assert batched.shape == (len(widths), 40, n_out)
    for i, p in enumerate(singles):
        assert _rel_err(batched[i], _apply(arch, p, x)) <= 1e-12
    # one input set per model as well (vmap over params and x together)
    xs = jnp.asarray(rng.uniform(-1, 1, (len(widths), 40, n_in)))
    both = jax.jit(jax.vmap(lambda p, xi: models.apply(arch, p, xi)))(stacked, xs)
    assert _rel_err(both[-1], _apply(arch, singles[-1], xs[-1])) <= 1e-12  # W == n: same compile
    # gradients reaching padded units are exactly zero
    grads = jax.jit(jax.grad(
        lambda p: jnp.sum(jax.vmap(lambda q: models.apply(arch, q, x))(p) ** 2)))(stacked)
    pad = np.asarray(stacked.mask) == 0
    for name in ("G", "g", "D"):
        assert np.all(np.asarray(getattr(grads, name))[pad] == 0)
    for name in ("U", "u"):  # (B, k, W, ...): move k behind the (B, W) unit axes
        assert np.all(np.moveaxis(np.asarray(getattr(grads, name)), 1, 2)[pad] == 0)


@pytest.mark.parametrize("n_in,spline", [(1, True), (3, True), (3, False)])
def test_a_wider_shared_draw_gives_every_architecture_its_own_init(n_in, spline):
    """One draw of unit_size(3) numbers per unit serves k = 0..3 bit for bit (the sweeps'
    shared compiled draw), because a threefry draw's first numbers do not depend on its length."""
    if not jax.config.jax_threefry_partitionable:
        pytest.skip("needs JAX's partitionable threefry (its default)")
    key = jax.random.PRNGKey(7)
    wide = inits.init_draws(key, n_in, 2, 6, models.unit_size(3, n_in, 2), jnp.float64)
    for k in range(4):
        own = inits.init_masked(key, k, n_in, 4, 2, 6, spline_init=spline, dtype=jnp.float64)
        shared = inits.init_masked(None, k, n_in, 4, 2, 6, spline_init=spline, dtype=jnp.float64, draws=wide)
        for a, b in zip(jax.tree.leaves(own), jax.tree.leaves(shared)):
            assert a.shape == b.shape and bool(jnp.all(a == b))
        assert bool(jnp.all(own.D[:4] != 0)) and bool(jnp.all(own.mask == jnp.asarray([1, 1, 1, 1, 0, 0])))


@pytest.mark.parametrize("partitionable", [True, False])
@pytest.mark.parametrize("n_in,n_out,width,size", [(1, 1, 5, 7), (3, 2, 4, 9), (9, 1, 3, 4), (2, 3, 1, 12)])
def test_batched_draws_are_each_keys_documented_draws(partitionable, n_in, n_out, width, size):
    """init_draws_batch flattens every model's unit keys into one batch (and, with the
    partitionable threefry, draws rows, directions and biases as the first columns of one
    draw): each model must still get exactly what the InitDraws docstring defines,
    written here with plain jax.random calls: unit i's row normal(fold_in(k_units, i)),
    its direction normal(fold_in(k_gate, i)), the bias normal(k_bias), from
    (k_gate, k_units, k_bias) = split(key, 3).  n_in > size and n_out > n_in cover
    either column count being the longest."""
    seeds = [0, 5, 2**32 - 1]
    with jax.threefry_partitionable(partitionable):
        batch = inits.init_draws_batch(jnp.stack([jax.random.PRNGKey(s) for s in seeds]), n_in, n_out, width, size,
                                        jnp.float64)
        for b, seed in enumerate(seeds):
            k_gate, k_units, k_bias = jax.random.split(jax.random.PRNGKey(seed), 3)
            units = [jax.random.normal(jax.random.fold_in(k_units, i), (size,), jnp.float64) for i in range(width)]
            gates = [jax.random.normal(jax.random.fold_in(k_gate, i), (n_in,), jnp.float64) for i in range(width)]
            want = inits.InitDraws(jnp.stack(units), jax.random.normal(k_bias, (n_out,), jnp.float64),
                                    jnp.stack(gates))
            one = inits.init_draws(jax.random.PRNGKey(seed), n_in, n_out, width, size, jnp.float64)
            for got_batch, got_one, expected in zip(batch, one, want):
                assert got_batch[b].shape == expected.shape and bool(jnp.all(got_batch[b] == expected))
                assert got_one.shape == expected.shape and bool(jnp.all(got_one == expected))


@pytest.mark.parametrize("arch,n_in", [("mlp", 1), ("glu", 3), ("gqu", 2)])
def test_constant_factors_change_no_output(arch, n_in):
    """with_constant_factors adds factors U = 0, u = 1: apply gives the same numbers bit for
    bit (products with 1.0 are exact), for one model and for a batch; the added factors sit
    after the model's own; fewer factors than it has are refused."""
    params = inits.init(jax.random.PRNGKey(3), arch, n_in, 4, 2, width=6, dtype=jnp.float64)
    x = jax.random.uniform(jax.random.PRNGKey(4), (50, n_in), jnp.float64, -1.0, 1.0)
    k = models.n_factors(arch)
    padded = models.with_constant_factors(params, 3)
    assert padded.n_factors == 3 and padded.U.shape == (3, 6, n_in) and padded.u.shape == (3, 6)
    np.testing.assert_array_equal(np.asarray(padded.U[:k]), np.asarray(params.U))
    assert bool(jnp.all(padded.U[k:] == 0)) and bool(jnp.all(padded.u[k:] == 1))
    np.testing.assert_array_equal(np.asarray(jax.jit(models.apply, static_argnums=0)("gated3", padded, x)),
                                  np.asarray(jax.jit(models.apply, static_argnums=0)(arch, params, x)))
    back = models.without_constant_factors(padded, k)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
        assert a.shape == b.shape and bool(jnp.all(a == b))
    batch = jax.tree.map(lambda a: jnp.stack([a, a]), params)
    assert models.with_constant_factors(batch, 3).U.shape == (2, 3, 6, n_in)
    assert models.without_constant_factors(models.with_constant_factors(batch, 3), k).U.shape == batch.U.shape
    with pytest.raises(UsageError, match=f"cannot pad {k} factors down to"):
        models.with_constant_factors(params, k - 1)


@pytest.mark.parametrize("arch,n_in,spline", [("gqu", 1, True), ("gqu", 3, False), ("gated3", 2, True)])
def test_factor_init_one_starts_every_unit_as_the_glus(arch, n_in, spline):
    """factor_init "one" (the default): factors 2..k are the constant 1 (U = 0, u = 1) on the
    real units, so the model computes exactly the GLU made of its gate, first factor and D;
    "random" keeps the N(0, 1) draws, which are columns (j (n_in + 1) ...) of each unit's
    documented row (`init_draws`); everything else is the same in both."""
    key, n, width, n_out = jax.random.PRNGKey(11), 4, 6, 2
    k = models.n_factors(arch)
    one = inits.init(key, arch, n_in, n, n_out, width=width, spline_init=spline, dtype=jnp.float64)
    drawn = inits.init(key, arch, n_in, n, n_out, width=width, spline_init=spline, dtype=jnp.float64,
                        factor_init="random")
    for name in ("G", "g", "D", "d", "mask"):
        np.testing.assert_array_equal(np.asarray(getattr(one, name)), np.asarray(getattr(drawn, name)))
    np.testing.assert_array_equal(np.asarray(one.U[0]), np.asarray(drawn.U[0]))
    np.testing.assert_array_equal(np.asarray(one.u[0]), np.asarray(drawn.u[0]))
    assert bool(jnp.all(one.U[1:] == 0)) and bool(jnp.all(one.u[1:, :n] == 1)) and bool(jnp.all(one.u[1:, n:] == 0))
    rows = inits.init_draws(key, n_in, n_out, width, models.unit_size(k, n_in, n_out), jnp.float64).units
    for j in range(2, k + 1):  # factor j's columns of unit i's row [G, g, U_1, u_1, ..., U_k, u_k, D]
        start = j * (n_in + 1)
        np.testing.assert_array_equal(np.asarray(drawn.U[j - 1, :n]), np.asarray(rows[:n, start:start + n_in]))
        np.testing.assert_array_equal(np.asarray(drawn.u[j - 1, :n]), np.asarray(rows[:n, start + n_in]))
    x = jax.random.uniform(jax.random.PRNGKey(12), (40, n_in), jnp.float64, -1.0, 1.0)
    glu = models.without_constant_factors(one, 1)
    np.testing.assert_array_equal(np.asarray(models.apply(arch, one, x)), np.asarray(models.apply("glu", glu, x)))
    assert not np.allclose(np.asarray(models.apply(arch, drawn, x)), np.asarray(models.apply("glu", glu, x)))
    # which architectures factor_init concerns (an unknown name, as in a hand-edited config, counts)
    assert not inits.has_later_factors(["mlp", "glu", "gated1"])
    assert all(inits.has_later_factors(a) for a in (["glu", "gqu"], ("gated3",), ["mlp", "foo"], [["mlp"]]))
    with pytest.raises(UsageError, match=r"unknown factor_init 'ones' \(did you mean 'one'\?\); accepted: one, random"):
        inits.init(key, arch, n_in, n, n_out, factor_init="ones")


@pytest.mark.parametrize("n_in", [1, 2, 5, models.FEW_INPUTS, models.FEW_INPUTS + 1])
def test_affine_equals_the_matmul(n_in):
    # multiply-adds up to FEW_INPUTS inputs, a matmul beyond: the same map either way
    rng = np.random.default_rng(n_in)
    x, w, b = rng.normal(size=(7, n_in)), rng.normal(size=(4, n_in)), rng.normal(size=4)
    got = np.asarray(jax.jit(models.affine)(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b)))
    np.testing.assert_allclose(got, x @ w.T + b, rtol=1e-13, atol=1e-14)  # XLA may fuse a * b + c


@pytest.mark.parametrize("kwargs,message", [
    ({"interval": (1.0, -1.0)}, "interval must be finite with a < b"),
    ({"interval": (float("nan"), 1.0)}, "interval must be finite with a < b"),
    ({"knot_pad": -0.1}, "knot_pad must be a finite number >= 0, got -0.1"),
    ({"gate_scale": float("nan")}, "gate_scale must be a finite number > 0, got nan"),
    ({"x_data": np.ones((5, 2))}, r"x_data must be finite with shape \(N, 1\), got shape \(5, 2\)"),
    ({"x_data": np.array([[0.0], [np.nan]])}, r"x_data must be finite"),
])
def test_init_checks_its_spline_options(kwargs, message):
    """A reversed or NaN interval, a negative pad, a NaN scale or bad data would give NaN or
    meaningless gates: refused in one line instead."""
    with pytest.raises(UsageError, match=message):
        inits.init(jax.random.PRNGKey(0), "glu", 1, 4, 1, **kwargs)


def test_hidden_checks_the_shape_of_x():
    params = inits.init(jax.random.PRNGKey(0), "glu", 2, 4, 1)
    with pytest.raises(UsageError, match=r"x must have shape \(N, 2\), got \(5,\)"):
        models.hidden(params, jnp.zeros(5))
