"""Tests for glu_scaling.illustrations: the files each figure writes, and the numbers
the figures show (cells, boundaries, knots, facing), checked directly."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glu_scaling import inits, models
from glu_scaling.errors import UsageError
from glu_scaling.paper import cells
from glu_scaling.paper import illustrations as I

ORDER = ("fig1", "fig2", "fig8", "fig9", "fig10", "fig11")


@pytest.fixture(scope="module")
def trained():
    return cells.fig2_models(seed=0)


@pytest.fixture(scope="module")
def drawn(tmp_path_factory, trained):
    out = tmp_path_factory.mktemp("figs") / "nested" / "dir"  # created by the figures
    return out, I.all_illustrations(out, seed=0)


def _grid(n=201):
    s = np.linspace(-1.0, 1.0, n)
    return np.stack([a.ravel() for a in np.meshgrid(s, s)], axis=1)


def _lstsq_residual(features, y):
    coef, *_ = np.linalg.lstsq(features, y, rcond=None)
    return float(np.max(np.abs(features @ coef - y)))


def _linear_features(x):
    return np.stack([np.ones(len(x)), x[:, 0], x[:, 1]], axis=1)


def _quadratic_features(x):
    return np.stack([np.ones(len(x)), x[:, 0], x[:, 1], x[:, 0] ** 2, x[:, 0] * x[:, 1], x[:, 1] ** 2], axis=1)


def _mlp(G, g, mask=None):
    """An MLP with the given gates, D = 1, d = 0 (built directly: no init to compile)."""
    G = jnp.asarray(G, jnp.float64)
    W, dx = G.shape
    mask = jnp.ones(W) if mask is None else jnp.asarray(mask, jnp.float64)
    return models.Params(G=G, g=jnp.asarray(g, jnp.float64), U=jnp.zeros((0, W, dx)), u=jnp.zeros((0, W)),
                         D=jnp.ones((W, 1)), d=jnp.zeros(1), mask=mask)


# ------------------------------------------------------------------ files


def test_all_illustrations_writes_every_figure_as_png_and_pdf(drawn):
    out, paths = drawn
    expected = [out / f"{I.STEMS[key]}.{ext}" for key in ORDER for ext in ("png", "pdf")]
    assert paths == expected
    assert [p.name for p in paths[:2]] == ["fig1_random_2d.png", "fig1_random_2d.pdf"]
    for p in paths:
        head = p.read_bytes()[:8]
        assert p.stat().st_size > 5000, p
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else head.startswith(b"%PDF"), p


@pytest.mark.parametrize("key", ["fig8"])
def test_single_figure_returns_its_two_paths(tmp_path, key):
    paths = getattr(I, key)(tmp_path, seed=3)
    assert paths == [tmp_path / f"{I.STEMS[key]}.png", tmp_path / f"{I.STEMS[key]}.pdf"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_fig2_needs_float64(tmp_path):
    with jax.enable_x64(False):
        with pytest.raises(UsageError, match="jax_enable_x64"):
            I.fig2(tmp_path)
        with pytest.raises(UsageError, match="jax_enable_x64"):
            cells.fig2_models()
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ Fig. 1, 9, 10, 11: cells in 2D


def test_mlp_and_glu_share_gates_and_cells():
    mlp, glu = cells.random_2d_models(0, 8)
    assert mlp.n_factors == 0 and glu.n_factors == 1
    for name in ("G", "g", "D", "d", "mask"):
        np.testing.assert_array_equal(getattr(mlp, name), getattr(glu, name))
    x = _grid(61)
    np.testing.assert_array_equal(cells.cell_labels(mlp, x), cells.cell_labels(glu, x))


def test_glu_is_exactly_quadratic_and_mlp_exactly_linear_on_every_cell():
    mlp, glu = cells.random_2d_models(0, 8)
    x = _grid()
    y_mlp = np.asarray(models.apply("mlp", mlp, jnp.asarray(x)))[:, 0]
    y_glu = np.asarray(models.apply("glu", glu, jnp.asarray(x)))[:, 0]
    labels = cells.cell_labels(glu, x)
    pattern = cells.activation_pattern(glu, x)
    counts = np.bincount(labels)
    assert np.all(np.diff(counts) <= 0)  # label 0 is the most populous cell
    big = np.flatnonzero(counts >= 30)
    assert len(big) >= 5  # the random boundaries cut the square into many cells
    for c in big:
        inside = labels == c
        assert (pattern[inside] == pattern[inside][0]).all()  # one activation pattern per cell
        xc = x[inside]
        assert _lstsq_residual(_linear_features(xc), y_mlp[inside]) < 1e-10
        assert _lstsq_residual(_quadratic_features(xc), y_glu[inside]) < 1e-10
    # ...and the GLU really is curved in its largest cell, and neither model is one polynomial overall
    assert _lstsq_residual(_linear_features(x[labels == 0]), y_glu[labels == 0]) > 1e-3
    assert _lstsq_residual(_linear_features(x), y_mlp) > 1e-2
    assert _lstsq_residual(_quadratic_features(x), y_glu) > 1e-2


def test_activation_boundaries_by_hand():
    # x1 = 0.5; x2 = 0; x1 + x2 = 3 (misses); x1 + x2 = 2 (touches a corner only); masked unit
    params = _mlp([[1, 0], [0, 1], [1, 1], [1, 1], [1, 0]], [-0.5, 0, -3, -2, 0], mask=[1, 1, 1, 1, 0])
    b = cells.activation_boundaries(params)
    assert sorted(b) == [0, 1]
    np.testing.assert_allclose(sorted(map(tuple, b[0])), [(0.5, -1), (0.5, 1)])
    np.testing.assert_allclose(sorted(map(tuple, b[1])), [(-1, 0), (1, 0)])


def test_activation_boundaries_of_random_models_lie_on_the_lines_and_the_square():
    _, glu = cells.random_2d_models(4, 12)
    G, g = np.asarray(glu.G), np.asarray(glu.g)
    b = cells.activation_boundaries(glu)
    x = _grid(101)
    for i in range(12):
        z = x @ G[i] + g[i]
        crosses = z.min() < 0 < z.max()
        assert (i in b) == crosses, i
        if i in b:
            seg = b[i]
            np.testing.assert_allclose(seg @ G[i] + g[i], 0, atol=1e-12)
            np.testing.assert_allclose(np.abs(seg).max(axis=1), 1.0, atol=1e-12)  # ends on the square's edge
            assert np.linalg.norm(seg[1] - seg[0]) > 0
    assert len(b) >= 6
    # the factor's zero lines likewise
    U, u = np.asarray(glu.U[0]), np.asarray(glu.u[0])
    for i, seg in cells.factor_boundaries(glu).items():
        np.testing.assert_allclose(seg @ U[i] + u[i], 0, atol=1e-12)


def test_boundaries_need_2d_inputs():
    params = _mlp(np.ones((4, 3)), np.zeros(4))
    with pytest.raises(UsageError, match="2D"):
        cells.activation_boundaries(params)


def test_random_units_1d_have_knots_in_range_and_are_quadratic_on_the_open_side():
    units = cells.random_units_1d(0, 4)
    knots = -np.asarray(units.g) / np.asarray(units.G)[:, 0]
    assert units.width == 4 and np.all(np.abs(knots) < 1.2)
    s = np.linspace(-2, 2, 401)
    h = np.asarray(models.hidden(units, jnp.asarray(s[:, None])))
    for i in range(4):
        is_open = s * float(units.G[i, 0]) + float(units.g[i]) > 0
        assert np.all(h[~is_open, i] == 0)
        coef = np.polyfit(s[is_open], h[is_open, i], 2)
        np.testing.assert_allclose(np.polyval(coef, s[is_open]), h[is_open, i], atol=1e-10)


# ------------------------------------------------------------------ Fig. 2: six units in 1D


def test_fig2_frozen_gates_keep_the_spline_init_knots(trained):
    expected = np.linspace(-1.001, 1.001, 6)
    for arch in ("mlp", "glu"):
        frozen, info = trained[arch, "newton-splines"]
        assert info["status"] == "ok"
        np.testing.assert_allclose(cells.cell_knots(frozen), expected, rtol=0, atol=1e-12)
        np.testing.assert_allclose(cells.cell_knots(frozen), inits.knots_1d(6, dtype=jnp.float64), atol=1e-12)
        full, _ = trained[arch, "newton-cascade"]
        assert np.max(np.abs(cells.cell_knots(full) - expected)) > 1e-3  # full training moves the knots


def test_fig2_training_improves_and_glu_beats_mlp(trained):
    rmse = {key: info["test_rmse"] for key, (_, info) in trained.items()}
    for arch in ("mlp", "glu"):
        assert rmse[arch, "newton-cascade"] < rmse[arch, "newton-splines"]
    # what the figure shows: the GLU's quadratic cells beat the MLP's linear ones, by a
    # clear margin once both are trained
    assert rmse["glu", "newton-cascade"] < 0.5 * rmse["mlp", "newton-cascade"]
    assert rmse["glu", "newton-splines"] < rmse["mlp", "newton-splines"]


def test_fig2_frozen_mlp_is_the_least_squares_fit_on_its_spline_init_gates(trained):
    """With gates frozen, `newton-splines` solves the MLP's {D, d} by least squares: its
    train and test RMSE are those of numpy's lstsq on the features relu(G x + g) and 1."""
    from glu_scaling import problems

    params, info = trained["mlp", "newton-splines"]
    ds = problems.make_dataset("paper_1d", n_train=2000, seed=0)
    G, g = np.asarray(params.G), np.asarray(params.g)

    def features(x):
        return np.concatenate([np.maximum(np.asarray(x) @ G.T + g, 0.0), np.ones((len(x), 1))], axis=1)

    coef = np.linalg.lstsq(features(ds.x_train), np.asarray(ds.y_train), rcond=None)[0]
    for x, y, key in ((ds.x_train, ds.y_train, "train_rmse"), (ds.x_test, ds.y_test, "test_rmse")):
        want = np.sqrt(np.mean((features(x) @ coef - np.asarray(y)) ** 2))
        assert info[key] == pytest.approx(want, rel=1e-9), key


@pytest.mark.parametrize("arch,degree", [("mlp", 1), ("glu", 2)])
def test_fig2_unit_contributions_sum_to_the_output_and_cells_are_polynomials(trained, arch, degree):
    params, _ = trained[arch, "newton-cascade"]
    s = np.linspace(-1, 1, 2001)
    y = np.asarray(models.apply(arch, params, jnp.asarray(s[:, None])))
    parts = cells.unit_contributions(params, s[:, None])
    assert parts.shape == (2001, 6, 1)
    np.testing.assert_allclose(parts.sum(axis=1) + np.asarray(params.d), y, atol=1e-12)
    edges = np.concatenate([[-1.0], [k for k in cells.cell_knots(params) if -1 < k < 1], [1.0]])
    for lo, hi in itertools.pairwise(edges):
        inside = (s > lo + 1e-9) & (s < hi - 1e-9)
        if inside.sum() > degree + 2:
            coef = np.polyfit(s[inside], y[inside, 0], degree)
            np.testing.assert_allclose(np.polyval(coef, s[inside]), y[inside, 0], atol=1e-10)


def test_cell_knots_skip_masked_and_flat_gates():
    # knots 0.5, (none: G = 0), -0.25 (facing left), masked
    params = _mlp([[2.0], [0.0], [-4.0], [1.0]], [-1.0, 3.0, -1.0, 0.7], mask=[1, 1, 1, 0])
    np.testing.assert_allclose(cells.cell_knots(params), [-0.25, 0.5], rtol=0, atol=1e-15)
    with pytest.raises(UsageError, match="1D"):
        cells.cell_knots(_mlp(np.ones((3, 2)), np.zeros(3)))


# ------------------------------------------------------------------ Fig. 8: facing


def test_same_facing_leaves_a_dead_unit_and_a_thin_end_alternating_does_not():
    x = np.linspace(-1, 1, 4001)[:, None]
    G, g = cells.facing_gates(6, "right")
    assert cells.dead_units(G, g).tolist() == [5]  # its knot 1.001 lies right of the data
    counts = cells.open_counts(G, g, x)
    assert counts.min() == 1 and counts.max() == 5
    assert np.all(counts[x[:, 0] < -0.61] == 1)  # the left end hangs on unit 0 alone
    G, g = cells.facing_gates(6, "left")
    assert cells.dead_units(G, g).tolist() == [0]
    G, g = cells.facing_gates(6, "alternate")
    assert cells.dead_units(G, g).size == 0
    counts = cells.open_counts(G, g, x)
    assert counts.min() == 3 and counts.max() == 4  # every x is seen by about n/2 open units


@pytest.mark.parametrize("n", [4, 5])
def test_alternating_facing_dead_units_depend_on_the_parity_of_n(n):
    # knots linspace(-1.001, 1.001, n): the last unit sits right of the data, and with
    # alternating facing it opens to the right when n is odd (index n - 1 even): dead.
    G, g = cells.facing_gates(n, "alternate")
    assert cells.dead_units(G, g).tolist() == ([] if n % 2 == 0 else [n - 1])
    assert cells.open_counts(G, g, np.linspace(-1, 1, 1001)[:, None]).min() >= max(1, (n - 1) // 2)
    G, g = cells.facing_gates(n, "right")
    assert cells.dead_units(G, g).tolist() == [n - 1]


def test_dead_units_closed_form_matches_a_grid():
    rng = np.random.default_rng(0)
    G, g = rng.normal(size=(40, 2)), rng.normal(size=40) * 2
    x = _grid(101)
    brute = np.flatnonzero((x @ G.T + g).max(axis=0) <= 0)
    np.testing.assert_array_equal(cells.dead_units(G, g), brute)
    assert 0 < brute.size < 40
