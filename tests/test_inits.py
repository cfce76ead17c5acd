"""Tests for glu_scaling.inits (paper.md §3); expected values are derived here."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

import glu_scaling
from glu_scaling import inits

# jit with the shape-like arguments static: one compile per configuration instead of
# one per eager op (the eager path is exercised through inits.init below).
_gates_jit = jax.jit(inits.spline_gates, static_argnums=(1, 2), static_argnames=("facing", "dtype"))


def _gates(key, n, n_in, *, interval=(-1.0, 1.0), pad=0.001, facing="alternate", scale=1.0,
           x_data=None, dtype=jnp.float64):
    """spline_gates, jitted, with every option passed the same way (one cache entry per shape)."""
    return _gates_jit(key, n, n_in, interval=interval, pad=pad, facing=facing, scale=scale,
                      x_data=x_data, dtype=dtype)


def _sign_pattern(n, facing):
    return {
        "alternate": np.array([1.0 if i % 2 == 0 else -1.0 for i in range(n)]),
        "right": np.ones(n),
        "left": -np.ones(n),
    }[facing]


# ---------------------------------------------------------------- 1D knots and facing


@pytest.mark.parametrize("n", [1, 2, 3, 8, 51])
@pytest.mark.parametrize("interval,pad", [((-1.0, 1.0), 0.001), ((0.0, 3.0), 0.0), ((-2.0, 0.5), 0.25)])
def test_knots_are_the_padded_linspace(n, interval, pad):
    lo, hi = interval
    expected = np.linspace(lo - pad, hi + pad, n)
    np.testing.assert_allclose(inits.knots_1d(n, interval, pad, dtype=jnp.float64), expected,
                               rtol=0, atol=1e-14)
    G, g = _gates(jax.random.key(0), n, 1, interval=interval, pad=pad, dtype=jnp.float64)
    assert G.shape == (n, 1) and g.shape == (n,)
    np.testing.assert_allclose(-np.asarray(g) / np.asarray(G)[:, 0], expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("facing", ["alternate", "right", "left"])
@pytest.mark.parametrize("scale", [1.0, 0.5, 7.0])
def test_facing_and_gate_scale(facing, scale):
    n = 9
    G, g = _gates(jax.random.key(0), n, 1, facing=facing, scale=scale, dtype=jnp.float64)
    G1, g1 = _gates(jax.random.key(0), n, 1, facing=facing, dtype=jnp.float64)
    sign = _sign_pattern(n, facing)
    np.testing.assert_array_equal(inits.facing_signs(n, facing), sign)
    np.testing.assert_allclose(np.asarray(G)[:, 0], scale * sign, rtol=1e-15)
    np.testing.assert_allclose(G, scale * np.asarray(G1), rtol=1e-15)
    np.testing.assert_allclose(g, scale * np.asarray(g1), rtol=1e-15, atol=1e-15)
    # knots do not move with the scale
    np.testing.assert_allclose(-np.asarray(g) / np.asarray(G)[:, 0], np.linspace(-1.001, 1.001, n),
                               atol=1e-14)
    # a right-facing unit is open just right of its knot and closed just left of it, and vice versa
    knots = np.linspace(-1.001, 1.001, n)
    eps = 1e-6
    right_of = np.asarray(inits.open_mask(G, g, jnp.asarray(knots + eps)[:, None]))
    left_of = np.asarray(inits.open_mask(G, g, jnp.asarray(knots - eps)[:, None]))
    np.testing.assert_array_equal(np.diag(right_of), sign > 0)
    np.testing.assert_array_equal(np.diag(left_of), sign < 0)


def test_open_mask_is_the_relu_support():
    G, g = _gates(jax.random.key(0), 6, 1, dtype=jnp.float64)
    x = np.linspace(-1.5, 1.5, 301)[:, None]
    expected = x @ np.asarray(G).T + np.asarray(g) > 0
    np.testing.assert_array_equal(inits.open_mask(G, g, jnp.asarray(x)), expected)
    # open exactly where the ReLU gate is nonzero
    np.testing.assert_array_equal(np.asarray(jax.nn.relu(x @ np.asarray(G).T + np.asarray(g))) > 0, expected)


# ---------------------------------------------------------------- coverage of [-1, 1]


def _open_count_formula(n, facing, k):
    """Open units on cell k (between knots k and k+1), from the facing pattern alone."""
    if facing == "right":  # paper.md §4: on cell k exactly units 0..k are open
        return k + 1
    if facing == "left":
        return n - 1 - k
    right_open = len(range(0, k + 1, 2))  # even units i <= k face right
    left_open = len([i for i in range(k + 1, n) if i % 2 == 1])  # odd units i > k face left
    return right_open + left_open


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 13, 32, 64, 101])
@pytest.mark.parametrize("pad", [0.001, 0.0])
def test_alternating_init_leaves_no_dead_point_in_the_interval(n, pad):
    G, g = _gates(jax.random.key(0), n, 1, pad=pad, dtype=jnp.float64)
    x = np.linspace(-1.0, 1.0, 20001)  # includes both endpoints
    is_open = x[:, None] * np.asarray(G)[:, 0] + np.asarray(g) > 0
    assert np.all(is_open.sum(axis=1) >= 1), "a point of [-1, 1] is covered only by closed units"
    # and the count of open units on every cell is what the facing pattern predicts
    knots = np.linspace(-1.0 - pad, 1.0 + pad, n)
    away = np.min(np.abs(x[:, None] - knots), axis=1) > 1e-9
    cell = np.searchsorted(knots, x, side="right") - 1  # -1 left of all knots, n-1 right of all
    for c in np.unique(cell[away]):
        if 0 <= c < n - 1:
            sel = away & (cell == c)
            np.testing.assert_array_equal(is_open[sel].sum(axis=1), _open_count_formula(n, "alternate", c))


@pytest.mark.parametrize("facing", ["right", "left"])
def test_same_facing_open_counts_per_cell(facing):
    n = 7
    G, g = _gates(jax.random.key(0), n, 1, facing=facing, dtype=jnp.float64)
    knots = np.linspace(-1.001, 1.001, n)
    mids = (knots[:-1] + knots[1:]) / 2
    counts = np.asarray(inits.open_mask(G, g, jnp.asarray(mids)[:, None])).sum(axis=1)
    np.testing.assert_array_equal(counts, [_open_count_formula(n, facing, k) for k in range(n - 1)])


# ---------------------------------------------------------------- n_in > 1


def _directions_and_knots(G, g, facing, scale):
    n = G.shape[0]
    s = scale * _sign_pattern(n, facing)
    return np.asarray(G) / s[:, None], -np.asarray(g) / s


@pytest.mark.parametrize("n_in,facing", [(2, "alternate"), (5, "right")])
def test_nd_directions_unit_norm_and_knots_at_data_quantiles(n_in, facing):
    n, scale = 12, 2.5
    x_data = np.random.default_rng(n_in).uniform(-1, 1, (4001, n_in))
    G, g = _gates(jax.random.key(n_in), n, n_in, facing=facing, scale=scale,
                  x_data=jnp.asarray(x_data), dtype=jnp.float64)
    assert G.shape == (n, n_in) and g.shape == (n,)
    np.testing.assert_allclose(np.linalg.norm(G, axis=1), scale, rtol=1e-12)
    w, t = _directions_and_knots(G, g, facing, scale)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, rtol=1e-12)
    levels = (np.arange(n) + 0.5) / n
    proj = x_data @ w.T  # (N, n)
    np.testing.assert_allclose(t, [np.quantile(proj[:, i], levels[i]) for i in range(n)], rtol=0, atol=1e-12)
    below = (proj < t).mean(axis=0)
    np.testing.assert_allclose(below, levels, atol=1.5 / len(x_data))
    # the facing decides which side of each hyperplane is open
    is_open = np.asarray(inits.open_mask(G, g, jnp.asarray(x_data))).mean(axis=0)
    sign = _sign_pattern(n, facing)
    np.testing.assert_allclose(is_open, np.where(sign > 0, 1 - levels, levels), atol=1.5 / len(x_data))
    # same key, different scale: same directions and knots
    G1, g1 = _gates(jax.random.key(n_in), n, n_in, facing=facing, x_data=jnp.asarray(x_data),
                    dtype=jnp.float64)
    np.testing.assert_allclose(G, scale * np.asarray(G1), rtol=1e-13)
    np.testing.assert_allclose(g, scale * np.asarray(g1), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("interval", [(-1.0, 1.0), (0.0, 2.0)])
def test_nd_knots_without_data_follow_the_normal_approximation(interval):
    n, n_in = 10, 5
    lo, hi = interval
    G, g = _gates(jax.random.key(3), n, n_in, interval=interval, facing="alternate", dtype=jnp.float64)
    w, t = _directions_and_knots(G, g, "alternate", 1.0)
    levels = (np.arange(n) + 0.5) / n
    # w.x for x uniform on [lo, hi]^n_in: mean (lo+hi)/2 sum(w), variance (hi-lo)^2/12 |w|^2
    mean = (lo + hi) / 2 * w.sum(axis=1)
    std = (hi - lo) / np.sqrt(12.0)
    np.testing.assert_allclose(t, mean + std * norm.ppf(levels), rtol=1e-10, atol=1e-12)
    # Empirically those are near the true quantiles of the projection; it is an approximation.
    # For a direction along one axis the projection is uniform and the normal quantiles miss
    # its CDF by up to 0.0572 (at levels 0.21 and 0.79); the tolerance allows that.
    x = np.random.default_rng(0).uniform(lo, hi, (200_000, n_in))
    np.testing.assert_allclose(((x @ w.T) < t).mean(axis=0), levels, atol=0.06)


# ---------------------------------------------------------------- dtypes and errors


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dtype_preserved(dtype):
    # shapes as in the tests above, so the float64 case reuses their compiles
    x_data = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (4001, 2)))
    for n, n_in, xd in ((9, 1, None), (10, 5, None), (12, 2, x_data)):
        G, g = _gates(jax.random.key(0), n, n_in, x_data=xd, facing="alternate", dtype=dtype)
        assert G.dtype == dtype and g.dtype == dtype
        assert np.all(np.isfinite(np.asarray(G))) and np.all(np.isfinite(np.asarray(g)))
    assert inits.knots_1d(9, dtype=dtype).dtype == dtype
    assert inits.facing_signs(9, dtype=dtype).dtype == dtype


def test_unknown_facing_names_value_and_accepted():
    with pytest.raises(glu_scaling.UsageError) as info:
        inits.spline_gates(jax.random.key(0), 3, 1, facing="outward")
    msg = str(info.value)
    assert "'outward'" in msg
    for name in inits.FACINGS:
        assert name in msg
    with pytest.raises(ValueError, match="facing"):
        inits.init(jax.random.key(0), "glu", 1, 3, 1, facing="both")


# ---------------------------------------------------------------- through inits.init


def test_init_uses_the_spline_gates_and_passes_options():
    n = 5  # the shape used by the models tests (cached compiles)
    p = inits.init(jax.random.key(0), "glu", 1, n, 1, width=9)
    np.testing.assert_array_equal(np.asarray(p.G)[:n, 0], _sign_pattern(n, "alternate"))
    np.testing.assert_allclose(-np.asarray(p.g)[:n] / np.asarray(p.G)[:n, 0], np.linspace(-1.001, 1.001, n),
                               atol=1e-14)
    q = inits.init(jax.random.key(0), "glu", 1, n, 1, width=9, interval=(0.0, 2.0), knot_pad=0.0,
                    facing="left", gate_scale=3.0)
    np.testing.assert_array_equal(np.asarray(q.G)[:n, 0], -3.0 * np.ones(n))
    np.testing.assert_allclose(-np.asarray(q.g)[:n] / np.asarray(q.G)[:n, 0], np.linspace(0, 2, n), atol=1e-14)
    # only the gates come from the spline init: the other parameters are the same draws
    for name in ("U", "u", "D", "d"):
        np.testing.assert_array_equal(getattr(p, name), getattr(q, name))
    # spline_init=False draws gates at random instead
    r = inits.init(jax.random.key(0), "glu", 1, n, 1, width=9, spline_init=False)
    assert not np.allclose(np.abs(np.asarray(r.G)[:n, 0]), 1.0)


@pytest.mark.parametrize("n_in,with_data", [(1, False), (3, False), (3, True)])
def test_a_units_gate_does_not_depend_on_the_padded_width(n_in, with_data):
    # spline_gates(..., width=W) computes W rows; the first n must be the unpadded gates
    # (the rows past n are placeholders that inits.init masks and zeroes).  The two are
    # differently compiled programs, whose reductions over the 300 data points (the
    # projections' quantiles) may round differently on another CPU (AVX2 vs AVX-512): in
    # float64, a tolerance of one rounding per point, 300 eps.
    n, width, n_points = 6, 10, 300
    gates = jax.jit(inits.spline_gates, static_argnums=(1, 2), static_argnames=("width", "dtype"))
    x_data = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (n_points, n_in))) if with_data else None
    G, g = gates(jax.random.key(5), n, n_in, x_data=x_data, dtype=jnp.float64)
    Gw, gw = gates(jax.random.key(5), n, n_in, x_data=x_data, width=width, dtype=jnp.float64)
    assert Gw.shape == (width, n_in) and gw.shape == (width,) and Gw.dtype == jnp.float64
    tol = n_points * np.finfo(np.float64).eps
    np.testing.assert_allclose(Gw[:n], G, rtol=tol, atol=tol)
    np.testing.assert_allclose(gw[:n], g, rtol=tol, atol=tol)


# ---------------------------------------------------------------- knots placed for a target


@pytest.mark.parametrize("f,degree", [(lambda x: x**2, 1), (lambda x: x**3, 2), (lambda x: x**4 / 24, 3)])
@pytest.mark.parametrize("n", [1, 2, 5, 17])
def test_placed_knots_are_the_even_ones_when_the_top_derivative_is_constant(f, degree, n):
    # f^(p+1) constant: every cell has the same mass, so the knots are knots_1d's
    t = inits.placed_knots(f, n, degree, width=n + 3)
    even = np.asarray(inits.knots_1d(n, (-1.0, 1.0), 0.001, jnp.float64))
    np.testing.assert_allclose(t[:n], even, atol=1e-12)
    np.testing.assert_array_equal(t[n:], np.full(3, t[n - 1]))  # padding repeats the last knot


def test_placed_knots_split_the_density_into_equal_masses():
    # f = exp, degree 1: the density is |f''|^(2/5) = e^(2x/5) plus the floor 1e-3 times its
    # mean m over [a, b] = [-1.001, 1.001]; its integral from a is
    # M(x) = 5/2 (e^(2x/5) - e^(2a/5)) + 1e-3 m (x - a), and the n - 1 cells between the n
    # knots hold M(b) / (n - 1) each
    n, a, b = 9, -1.001, 1.001
    t = inits.placed_knots(jnp.exp, n, 1, pad=0.001)
    assert t[0] == a and t[-1] == b
    m = 2.5 * (np.exp(0.4 * b) - np.exp(0.4 * a)) / (b - a)
    mass = 2.5 * (np.exp(0.4 * t) - np.exp(0.4 * a)) + 1e-3 * m * (t - a)
    np.testing.assert_allclose(np.diff(mass), mass[-1] / (n - 1), rtol=1e-5)
    assert np.all(np.diff(np.diff(t)) < 0)  # denser where f'' is larger: the cells shrink to the right


def test_given_knots_are_where_the_units_open():
    t = np.array([-1.001, -0.3, 0.2, 0.9, 1.001])
    G, g = inits.spline_gates(None, 5, 1, knots=jnp.asarray(t), dtype=jnp.float64)
    np.testing.assert_array_equal(np.asarray(G)[:, 0], _sign_pattern(5, "alternate"))
    np.testing.assert_allclose(-np.asarray(g) / np.asarray(G)[:, 0], t, atol=1e-15)


def test_init_with_knots():
    n = 5
    even = np.asarray(inits.knots_1d(n, (-1.0, 1.0), 0.001, jnp.float64))
    p = inits.init(jax.random.key(0), "glu", 1, n, 1, width=9)
    q = inits.init(jax.random.key(0), "glu", 1, n, 1, width=9, knots=even)
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q)):  # the even knots given explicitly: the same model
        np.testing.assert_array_equal(a, b)
    t = inits.placed_knots(lambda x: 1 / (1 + 9 * x**2), n, 2)
    r = inits.init(jax.random.key(0), "glu", 1, n, 1, width=9, knots=t)
    np.testing.assert_allclose(-np.asarray(r.g)[:n] / np.asarray(r.G)[:n, 0], t, atol=1e-15)
    assert np.all(np.asarray(r.G)[n:] == 0) and np.all(np.asarray(r.mask)[n:] == 0)
    for name in ("U", "u", "D", "d"):  # only the gates move
        np.testing.assert_array_equal(getattr(p, name), getattr(r, name))


@pytest.mark.parametrize("kwargs,match", [
    (dict(knots=np.zeros(4)), r"knots must be 5 finite positions \(shape \(5,\)\) .*got shape \(4,\)"),
    (dict(knots=np.array([0, 1, np.nan, 2, 3])), "knots must be 5 finite positions"),
    (dict(knots=np.zeros(5), spline_init=False), "spline_init=False"),
])
def test_init_rejects_bad_knots(kwargs, match):
    with pytest.raises(glu_scaling.UsageError, match=match):
        inits.init(jax.random.key(0), "glu", 1, 5, 1, **kwargs)
    with pytest.raises(glu_scaling.UsageError, match="n_in=2"):
        inits.init(jax.random.key(0), "glu", 2, 5, 1, knots=np.zeros(5))


def test_placed_knots_rejects_bad_sizes():
    with pytest.raises(glu_scaling.UsageError, match="width must be >= n = 5, got 3"):
        inits.placed_knots(jnp.exp, 5, 1, width=3)
    with pytest.raises(glu_scaling.UsageError, match="n must be a positive integer"):
        inits.placed_knots(jnp.exp, 0, 1)
