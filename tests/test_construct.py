"""Tests for glu_scaling.construct: analytic MLP/GLU/GQU constructions and their error theory.

conftest.py enables float64.  Expected values are derived here (polynomial
reproduction, interpolation, local error constants by quadrature), not copied
from the code.
"""

from __future__ import annotations

import functools
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The module, not the function: the package root may export the function `construct`
# under the same name, which shadows the submodule attribute.
from conftest import SMOOTH_TARGETS  # noqa: E402

import glu_scaling
from glu_scaling import taylor
from glu_scaling.errors import UsageError
from glu_scaling.models import count_trainable, param_count

C = importlib.import_module("glu_scaling.constructions")

WIDTHS = (64, 128, 256)
N_TEST = 20001

TARGETS = SMOOTH_TARGETS

# (arch, curvature, expected slope in n, tolerance)
VARIANTS = [
    ("mlp", "left", -2.0, 0.05),
    ("glu", "left", -3.0, 0.08),
    ("glu", "mid", -3.0, 0.08),
    ("gqu", "left", -4.0, 0.15),
    ("gqu", "mid", -4.0, 0.15),
    ("gqu", "hermite", -4.0, 0.15),
]


def _grid(interval=(-1.0, 1.0)):
    return np.linspace(interval[0], interval[1], N_TEST)


def _bucket(size: int, least: int) -> int:
    return max(least, 1 << (size - 1).bit_length())


_jit_apply = jax.jit(glu_scaling.apply, static_argnums=0)


def _evaluate(arch, params, x):
    """apply(arch, params, x[:, None])[:, 0] for x (N,).  Params and x are zero-padded
    (host-side) to a few bucket sizes so the jitted apply compiles only a handful of
    times; padded units contribute nothing (`test_padded_construction_equals_unpadded`)."""
    x = np.asarray(x, dtype=np.float64)
    xs = np.zeros(_bucket(x.size, 1024))
    xs[: x.size] = x
    extra = _bucket(params.width, 64) - params.width

    def grow(a, axis):
        widths = [(0, 0)] * np.ndim(a)
        widths[axis] = (0, extra)
        return np.pad(np.asarray(a), widths)

    padded = params.replace(G=grow(params.G, 0), g=grow(params.g, 0), U=grow(params.U, 1),
                            u=grow(params.u, 1), D=grow(params.D, 0), mask=grow(params.mask, 0))
    return np.asarray(_jit_apply(arch, padded, jnp.asarray(xs)[:, None]))[: x.size, 0]


def _apply_plain(arch, params, x):
    return np.asarray(glu_scaling.apply(arch, params, jnp.asarray(x)[:, None]))[:, 0]


def _f_np(f, x):
    return taylor.derivatives(f, x)[0]  # jitted once per f


@functools.cache
def _rmse(target: str, arch: str, curvature: str, n: int) -> float:
    f = TARGETS[target]
    x = _grid()
    params = C.construct(arch, f, n, curvature=curvature)
    return float(np.sqrt(np.mean((_evaluate(arch, params, x) - _f_np(f, x)) ** 2)))


# ------------------------------------------------------------------ structure


@pytest.mark.parametrize("arch,curvature", [("mlp", "left"), ("glu", "left"), ("glu", "mid"),
                                            ("gqu", "left"), ("gqu", "mid"), ("gqu", "hermite")])
@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_params_are_ordinary_relu_params(arch, curvature, n):
    params = C.construct(arch, TARGETS["sin"], n, curvature=curvature)
    k = {"mlp": 0, "glu": 1, "gqu": 2}[arch]
    assert isinstance(params, glu_scaling.Params)
    assert params.activation == "relu"
    assert params.G.shape == (n, 1) and params.g.shape == (n,)
    assert params.U.shape == (k, n, 1) and params.u.shape == (k, n)
    assert params.D.shape == (n, 1) and params.d.shape == (1,)
    np.testing.assert_array_equal(params.mask, np.ones(n))
    np.testing.assert_array_equal(params.G, np.ones((n, 1)))  # every gate faces right
    assert params.G.dtype == jnp.float64
    assert count_trainable(params) == param_count(arch, 1, n, 1)
    assert float(params.d[0]) == pytest.approx(float(jnp.sin(-4.0)), abs=1e-15)  # d = f(a)
    knots = -np.asarray(params.g)
    assert np.all(np.diff(knots) >= 0)  # units ordered left to right
    assert np.all((knots >= -1.0) & (knots <= 1.0))


def test_cell_layout():
    assert [C.n_cells("mlp", n) for n in (1, 2, 7)] == [1, 2, 7]
    assert [C.n_cells("glu", n, "mid") for n in (1, 2, 7)] == [1, 2, 7]
    assert [C.n_cells("gqu", n, "left") for n in (1, 2, 3, 8, 9)] == [1, 1, 1, 4, 4]
    assert [C.n_cells("gqu", n, "mid") for n in (1, 2, 3, 8, 9)] == [1, 1, 1, 4, 4]
    assert [C.n_cells("gqu", n, "hermite") for n in (1, 2, 3, 8)] == [1, 1, 2, 7]
    np.testing.assert_array_equal(C.cell_slots("gqu", 5, "hermite"), [2, 1, 1, 1])
    np.testing.assert_array_equal(C.cell_slots("gqu", 5, "mid"), [2, 2])
    np.testing.assert_allclose(C.construction_knots("mlp", 4, interval=(0.0, 2.0)), [0.0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(C.construction_knots("gqu", 8, interval=(0.0, 2.0)), [0.0, 0.5, 1.0, 1.5, 2.0])


@pytest.mark.parametrize("curvature", ["left", "mid"])
def test_gqu_pairs_share_knots_and_odd_spare_is_zero(curvature):
    n = 9
    params = C.construct("gqu", TARGETS["sin"], n, curvature=curvature)
    knots = -np.asarray(params.g)
    cells = C.construction_knots("gqu", n, curvature=curvature)
    np.testing.assert_allclose(knots[0:8:2], cells[:-1], atol=1e-15)
    np.testing.assert_allclose(knots[1:8:2], cells[:-1], atol=1e-15)
    assert float(params.D[8, 0]) == 0.0  # the spare unit contributes nothing


@pytest.mark.parametrize("curvature", ["left", "mid"])
def test_gqu_taylor_corrections_mostly_do_not_factor(curvature):
    """The asymptotic discriminant a2^2 - 4 a3 a1 ~ -c f''''^2 h^4 < 0: two units needed."""
    _, _, (a1, a2, a3) = C.cell_corrections("gqu", TARGETS["sin"], 128, curvature=curvature)
    assert np.mean(C.factorable(a1, a2, a3)) < 0.1


def test_gqu_hermite_uses_one_unit_per_later_cell():
    f = TARGETS["exp_sin_2x"]
    _, _, (a1, a2, a3) = C.cell_corrections("gqu", f, 64, curvature="hermite")
    assert np.all(a1[1:] == 0.0)
    assert np.all(C.factorable(a1[1:], a2[1:], a3[1:]))
    params = C.construct("gqu", f, 65, curvature="hermite")
    knots = -np.asarray(params.g)
    np.testing.assert_allclose(knots[1:], C.construction_knots("gqu", 65, curvature="hermite")[:-1], atol=1e-15)


def test_factor_quadratic_reproduces_coefficients():
    rng = np.random.default_rng(0)
    cases = [tuple(rng.normal(size=3)) for _ in range(200)]
    cases += [(0.0, 1.0, 2.0), (0.0, 0.0, 2.0), (1.0, 2.0, 0.0), (-1.0, 0.0, 1.0), (0.0, 0.0, 0.0), (1.0, 2.0, 1.0)]
    checked = 0
    for a1, a2, a3 in cases:
        if not C.factorable(a1, a2, a3):
            continue
        U, p, Q, r = C.factor_quadratic(a1, a2, a3)
        np.testing.assert_allclose([U * Q, U * r + p * Q, p * r], [a3, a2, a1], atol=1e-12)
        checked += 1
    assert checked > 100


# ------------------------------------------------------------------ interpolation and exactness


@pytest.mark.parametrize("target", ["paper_1d", "sin", "exp_sin_2x"])
@pytest.mark.parametrize("n", [1, 3, 64, 256])
def test_mlp_interpolates_f_at_knots(target, n):
    f = TARGETS[target]
    knots = C.construction_knots("mlp", n)
    params = C.construct("mlp", f, n)
    np.testing.assert_allclose(_evaluate("mlp", params, knots), _f_np(f, knots), rtol=0, atol=1e-12)


@pytest.mark.parametrize("arch,curvature", [("glu", "left"), ("glu", "mid"),
                                            ("gqu", "left"), ("gqu", "mid"), ("gqu", "hermite")])
@pytest.mark.parametrize("n", [1, 2, 3, 64])
def test_gated_constructions_interpolate_f_at_knots(arch, curvature, n):
    f = TARGETS["one_over_2_p_x"]
    knots = C.construction_knots(arch, n, curvature=curvature)
    params = C.construct(arch, f, n, curvature=curvature)
    np.testing.assert_allclose(_evaluate(arch, params, knots), _f_np(f, knots), rtol=0, atol=1e-12)


@pytest.mark.parametrize("arch,curvature,poly", [
    ("mlp", "left", lambda x: 0.3 - 2.0 * x),
    ("glu", "left", lambda x: 0.5 * x**2 - x + 2.0),
    ("glu", "mid", lambda x: -3.0 * x**2 + 0.25 * x),
    ("gqu", "left", lambda x: x**3 - 2.0 * x**2 + 0.5 * x - 1.0),
    ("gqu", "mid", lambda x: -0.7 * x**3 + x),
    ("gqu", "hermite", lambda x: 2.0 * x**3 + x**2 + 3.0 * x),
])
@pytest.mark.parametrize("interval", [(-1.0, 1.0), (0.5, 3.0)])
def test_constructions_reproduce_their_polynomial_degree(arch, curvature, poly, interval):
    x = _grid(interval)[::20]
    params = C.construct(arch, poly, 10, curvature=curvature, interval=interval)
    np.testing.assert_allclose(_evaluate(arch, params, x), _f_np(poly, x), rtol=0, atol=1e-11)


def test_outside_interval_left_is_f_of_a():
    f = TARGETS["sin"]
    params = C.construct("glu", f, 16)
    y = _evaluate("glu", params, np.array([-3.0, -1.5]))
    np.testing.assert_allclose(y, float(f(-1.0)), atol=1e-15)


# ------------------------------------------------------------------ padding


@pytest.mark.parametrize("arch,curvature", [("mlp", "left"), ("glu", "mid"), ("gqu", "left"), ("gqu", "hermite")])
def test_padded_construction_equals_unpadded(arch, curvature):
    f = TARGETS["paper_1d"]
    x = _grid()
    plain = C.construct(arch, f, 13, curvature=curvature)
    padded = C.construct(arch, f, 13, curvature=curvature, width=32)
    assert padded.width == 32 and int(np.sum(padded.mask)) == 13
    # equal up to the summation order of the output matmul
    np.testing.assert_allclose(_apply_plain(arch, padded, x), _apply_plain(arch, plain, x), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(glu_scaling.unpad(padded).D, plain.D)


# ------------------------------------------------------------------ convergence and theory


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("arch,curvature,slope,tol", VARIANTS)
def test_local_slopes(target, arch, curvature, slope, tol):
    errors = [_rmse(target, arch, curvature, n) for n in WIDTHS]
    local = np.diff(np.log(errors)) / np.diff(np.log(WIDTHS))
    assert np.all(np.abs(local - slope) <= tol), local


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("arch,curvature", [(a, c) for a, c, _, _ in VARIANTS])
def test_measured_over_predicted_rmse(target, arch, curvature):
    n = WIDTHS[-1]
    predicted = C.predicted_rmse(arch, TARGETS[target], n, curvature=curvature)
    ratio = _rmse(target, arch, curvature, n) / predicted
    assert 0.9 <= ratio <= 1.1, ratio


def test_predicted_rmse_on_other_interval():
    f, interval = TARGETS["one_over_2_p_x"], (0.0, 3.0)
    x = _grid(interval)
    for arch, curvature in [("mlp", "left"), ("glu", "left"), ("glu", "mid"), ("gqu", "hermite")]:
        params = C.construct(arch, f, 128, curvature=curvature, interval=interval)
        measured = np.sqrt(np.mean((_evaluate(arch, params, x) - _f_np(f, x)) ** 2))
        predicted = C.predicted_rmse(arch, f, 128, curvature=curvature, interval=interval)
        assert 0.9 <= measured / predicted <= 1.1, (arch, curvature, measured / predicted)


def test_glu_mid_constant_is_an_eighth_of_left():
    ratio = _rmse("sin", "glu", "mid", 256) / _rmse("sin", "glu", "left", 256)
    assert ratio == pytest.approx(1 / 8, rel=0.02)


@pytest.mark.parametrize("key,phi,lo,hi", [
    # error shapes per unit f^(p) on a cell of width 1: s in [0, 1], sigma in [-1/2, 1/2]
    (("mlp", "left"), lambda s: s * (s - 1) / 2, 0.0, 1.0),
    (("glu", "left"), lambda s: (s**3 - s) / 6, 0.0, 1.0),
    (("glu", "mid"), lambda g: (g**3 - g / 4) / 6, -0.5, 0.5),
    (("gqu", "left"), lambda s: (s**4 - s) / 24, 0.0, 1.0),
    (("gqu", "mid"), lambda g: (g**4 - 1 / 16) / 24, -0.5, 0.5),
    (("gqu", "hermite"), lambda s: s**2 * (s - 1) ** 2 / 24, 0.0, 1.0),
])
def test_local_rms_constants_by_quadrature(key, phi, lo, hi):
    nodes, weights = np.polynomial.legendre.leggauss(20)
    s = lo + (nodes + 1) * (hi - lo) / 2
    rms = math.sqrt(np.sum(weights * phi(s) ** 2) / 2)
    assert C.LOCAL_RMS[key][1] == pytest.approx(rms, rel=1e-12)


def test_paper_constants():
    assert C.LOCAL_RMS[("mlp", "left")] == (2, pytest.approx(1 / math.sqrt(120)))
    assert C.LOCAL_RMS[("glu", "left")] == (3, pytest.approx(1 / math.sqrt(945 / 2)))


# ------------------------------------------------------------------ dtype and bad input


def test_float32_request_gives_float32_params():
    params = C.construct("glu", TARGETS["sin"], 8, dtype=jnp.float32)
    assert params.G.dtype == jnp.float32 and params.D.dtype == jnp.float32


@pytest.mark.parametrize("kwargs,match", [
    (dict(arch="gated3"), "construction architecture"),
    (dict(arch="glu", curvature="hermite"), "hermite"),
    (dict(curvature="right"), "curvature"),
    (dict(n_hidden=0), "n_hidden"),
    (dict(n_hidden=2.5), "n_hidden"),
    (dict(interval=(1.0, -1.0)), "interval"),
    (dict(interval=(0.0, float("inf"))), "interval"),
    (dict(width=3, n_hidden=4), "width"),
])
def test_bad_input_raises_usage_error(kwargs, match):
    args = dict(arch="mlp", f=TARGETS["sin"], n_hidden=4)
    args.update(kwargs)
    arch, f, n = args.pop("arch"), args.pop("f"), args.pop("n_hidden")
    with pytest.raises(UsageError, match=match):
        C.construct(arch, f, n, **args)


def test_non_finite_target_raises():
    with pytest.raises(UsageError, match="not finite"):
        C.construct("mlp", lambda x: 1 / x, 4)
