"""Tests for glu_scaling.slopes: exact recovery on power laws, the two confidence
intervals against hand computations with scipy, their coverage, and slopes_table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from glu_scaling import slopes
from glu_scaling.errors import UsageError

X = np.array([2.0, 4, 8, 16, 32, 64, 128])


@pytest.mark.parametrize("s,C", [(-2.0, 3.0), (-4.0, 0.01), (0.5, 7.0), (-1.2345, 1.0)])
def test_exact_power_law(s, C):
    x = np.array([1.0, 3, 4, 10, 31, 100])
    fit = slopes.fit_slope(x, C * x**s)
    assert abs(fit.slope - s) < 1e-12
    assert fit.ci_high - fit.ci_low < 1e-10
    assert fit.ci_low <= fit.slope + 1e-15 and fit.slope - 1e-15 <= fit.ci_high
    assert abs(fit.intercept - math.log(C)) < 1e-11
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.n_points == 6 and fit.range == (1.0, 100.0)
    # with groups (seeds): every group has the same slope, so the interval collapses too
    xx = np.concatenate([x, x, x])
    yy = np.concatenate([C * x**s, 2 * C * x**s, 0.5 * C * x**s])
    g = np.repeat([0, 1, 2], x.size)
    fit = slopes.fit_slope(xx, yy, groups=g)
    assert abs(fit.slope - s) < 1e-12 and fit.ci_high - fit.ci_low < 1e-10


def test_grouped_interval_matches_hand_computation():
    rng = np.random.default_rng(0)
    G = 5
    xx, yy, gg = [], [], []
    for seed in range(G):
        y = 2.0 * X**-2.0 * np.exp(0.1 * rng.normal(size=X.size))
        xx.append(X), yy.append(y), gg.append(np.full(X.size, seed))
    xx, yy, gg = map(np.concatenate, (xx, yy, gg))
    fit = slopes.fit_slope(xx, yy, groups=gg)
    per = np.array([np.polyfit(np.log(X), np.log(yy[gg == s]), 1)[0] for s in range(G)])
    half = stats.t.ppf(0.975, G - 1) * per.std(ddof=1) / math.sqrt(G)
    assert fit.slope == pytest.approx(per.mean(), abs=1e-12)
    assert fit.ci_low == pytest.approx(per.mean() - half, abs=1e-12)
    assert fit.ci_high == pytest.approx(per.mean() + half, abs=1e-12)
    # r2 and intercept are those of the pooled fit
    pooled = stats.linregress(np.log(xx), np.log(yy))
    assert fit.r2 == pytest.approx(pooled.rvalue**2, abs=1e-12)
    assert fit.intercept == pytest.approx(pooled.intercept, abs=1e-12)
    # other confidence levels use their own quantile
    fit90 = slopes.fit_slope(xx, yy, groups=gg, confidence=0.9)
    half90 = stats.t.ppf(0.95, G - 1) * per.std(ddof=1) / math.sqrt(G)
    assert fit90.ci_high - fit90.ci_low == pytest.approx(2 * half90, abs=1e-12)


def test_single_group_interval_is_the_ols_one():
    rng = np.random.default_rng(1)
    y = 5.0 * X**-1.5 * np.exp(0.2 * rng.normal(size=X.size))
    ref = stats.linregress(np.log(X), np.log(y))
    half = stats.t.ppf(0.975, X.size - 2) * ref.stderr
    for groups in (None, np.zeros(X.size)):  # one group falls back to OLS
        fit = slopes.fit_slope(X, y, groups=groups)
        assert fit.slope == pytest.approx(ref.slope, abs=1e-12)
        assert fit.ci_low == pytest.approx(ref.slope - half, abs=1e-12)
        assert fit.ci_high == pytest.approx(ref.slope + half, abs=1e-12)
        assert fit.r2 == pytest.approx(ref.rvalue**2, abs=1e-12)


def test_two_points_have_no_ols_interval():
    fit = slopes.fit_slope([2.0, 4.0], [1.0, 0.3])
    assert fit.slope == pytest.approx(math.log(0.3) / math.log(2.0), abs=1e-14)
    assert math.isnan(fit.ci_low) and math.isnan(fit.ci_high)


def test_fit_range_and_non_positive_values_are_filtered():
    x = np.array([1.0, 2, 4, 8, 16, 32])
    y = np.where(x <= 8, x**-1.0, 100 * x**-3.0)  # a kink after 8
    y_bad = y.copy()
    y_bad[0] = 0.0  # log of 0: dropped
    fit = slopes.fit_slope(x, y, fit_range=(2, 8))
    assert fit.slope == pytest.approx(-1.0, abs=1e-12) and fit.range == (2.0, 8.0) and fit.n_points == 3
    fit = slopes.fit_slope(x, y, fit_range=(8, 32))  # 8 is on the other branch: not -3
    expected = np.polyfit(np.log([8.0, 16, 32]), np.log([1 / 8, 100 * 16.0**-3, 100 * 32.0**-3]), 1)[0]
    assert fit.slope == pytest.approx(expected, abs=1e-12) and fit.n_points == 3
    assert expected == pytest.approx(-2.678072, abs=1e-6)
    fit = slopes.fit_slope(x, y, fit_range=(9, 1e9))
    assert fit.slope == pytest.approx(-3.0, abs=1e-12) and fit.n_points == 2
    fit = slopes.fit_slope(x[:4], y_bad[:4])
    assert fit.n_points == 3 and fit.slope == pytest.approx(-1.0, abs=1e-12)


def test_coverage_of_the_intervals():
    """95% intervals contain the true slope in ~95% of 200 noisy replicates (both kinds)."""
    rng = np.random.default_rng(2024)
    true = -2.0
    hit_ols = hit_grp = 0
    n_rep = 200
    for _ in range(n_rep):
        y = 3.0 * X**true * np.exp(0.3 * rng.normal(size=X.size))
        f = slopes.fit_slope(X, y)
        hit_ols += f.ci_low <= true <= f.ci_high
        xx = np.tile(X, 4)
        yy = 3.0 * xx**true * np.exp(0.3 * rng.normal(size=xx.size))
        f = slopes.fit_slope(xx, yy, groups=np.repeat(np.arange(4), X.size))
        hit_grp += f.ci_low <= true <= f.ci_high
    assert 0.90 * n_rep <= hit_ols <= 0.99 * n_rep, hit_ols
    assert 0.90 * n_rep <= hit_grp <= 0.99 * n_rep, hit_grp


def test_errors():
    with pytest.raises(UsageError, match="2 or more distinct x"):
        slopes.fit_slope([3.0, 3.0, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(UsageError, match="got 1"):
        slopes.fit_slope([1.0, 2.0], [1.0, -1.0])  # only one positive y
    with pytest.raises(UsageError, match="got 0"):
        slopes.fit_slope([1.0, 2.0, 4.0], [1.0, 0.5, 0.25], fit_range=(5, 9))
    with pytest.raises(UsageError, match="same length"):
        slopes.fit_slope([1.0, 2.0, 3.0], [1.0, 2.0])


def test_local_slopes_exact_on_power_laws():
    x = np.array([1.0, 2, 5, 11, 40])
    np.testing.assert_allclose(slopes.local_slopes(x, 4 * x**-2.5), np.full(4, -2.5), rtol=0, atol=1e-13)
    y = np.where(x < 5, x**-1.0, 5.0 * x**-2.0)  # continuous at 5, kink there
    np.testing.assert_allclose(slopes.local_slopes(x, y), [-1, -1, -2, -2], rtol=0, atol=1e-13)


def _records(arch, widths, seeds, err, status="ok"):
    return [{"arch": arch, "problem": "p", "n_in": 1, "n_hidden": n, "n_params": 3 * n + 1, "seed": s,
             "test_rmse": err(n, s), "status": status} for n in widths for s in seeds]


def test_slopes_table():
    recs = (_records("mlp", [2, 4, 8, 16], [0, 1, 2], lambda n, s: (1 + 0.1 * s) * n**-2.0)
            + _records("glu", [2, 4, 8], [0], lambda n, s: n**-4.0)
            + _records("glu", [32], [0], lambda n, s: 1.0, status="diverged")  # ignored
            + _records("gqu", [4], [0, 1], lambda n, s: 0.1))  # one width: no row
    rows = slopes.slopes_table(recs)
    assert [(r["arch"], r["x"]) for r in rows] == [("glu", "n_hidden"), ("glu", "n_params"),
                                                     ("mlp", "n_hidden"), ("mlp", "n_params")]
    by = {(r["arch"], r["x"]): r for r in rows}
    assert by["mlp", "n_hidden"]["slope"] == pytest.approx(-2.0, abs=1e-12)
    assert by["glu", "n_hidden"]["slope"] == pytest.approx(-4.0, abs=1e-12)
    assert by["glu", "n_hidden"]["range"] == [2.0, 8.0] and by["glu", "n_hidden"]["n_models"] == 3
    # against P = 3n + 1 the slope is the fit of log e on log P
    P = np.array([7.0, 13, 25])
    assert by["glu", "n_params"]["slope"] == pytest.approx(np.polyfit(np.log(P), -4 * np.log([2, 4, 8]), 1)[0],
                                                            abs=1e-12)
    assert by["glu", "n_params"]["range"] == [7.0, 25.0]
    # fit_range on n_hidden
    rows = slopes.slopes_table(recs, fit_range=(4, 16))
    assert {r["range"][0] for r in rows if r["x"] == "n_hidden"} == {4.0}
    assert next(r for r in rows if r["arch"] == "mlp" and r["x"] == "n_hidden")["n_models"] == 9


def test_fit_records_applies_the_n_range_on_either_axis_and_needs_two_widths():
    """P = 3n + 1 is not a power of n, so the P-axis slope differs; the n range must pick the same models."""
    from glu_scaling.slopes import fit_records

    recs = [{"n_hidden": n, "n_params": 3 * n + 1, "seed": s, "status": st, "test_rmse": 0.5 * n**-2.0}
            for n in (1, 2, 4, 8) for s, st in ((0, "ok"), (1, "stalled"))]
    recs.append({"n_hidden": 8, "n_params": 25, "seed": 2, "status": "diverged", "test_rmse": 1e6})
    by_n = fit_records(recs, fit_range=(2, 8))
    assert by_n.slope == pytest.approx(-2.0, abs=1e-12) and by_n.range == (2.0, 8.0) and by_n.n_points == 6
    by_p = fit_records(recs, x="n_params", fit_range=(2, 8))
    assert by_p.range == (7.0, 25.0) and by_p.n_points == 6
    assert fit_records(recs, fit_range=(4, 6)) is None  # one width left
    assert fit_records([{**r, "test_rmse": float("nan")} for r in recs]) is None


def test_grouped_fit_reports_the_line_of_its_own_slope():
    """Seeds on different widths: the slope is the mean per-seed slope (-2), and the intercept
    and r2 belong to that line (least squares at that slope), not to the pooled fit (-0.67):
    y = n^-2 on seed 0 (n = 4, 8), 10 n^-2 on seed 1 (n = 16, 32) -> log intercept = log(10) / 2."""
    x = np.array([4.0, 8.0, 16.0, 32.0])
    y = np.array([1.0, 1.0, 10.0, 10.0]) * x**-2.0
    fit = slopes.fit_slope(x, y, groups=[0, 0, 1, 1])
    assert fit.slope == pytest.approx(-2.0, abs=1e-12)
    assert fit.intercept == pytest.approx(np.log(10.0) / 2, abs=1e-12)
    resid = np.log(y) - fit.intercept - fit.slope * np.log(x)  # +-log(10)/2 at every point
    assert np.allclose(np.abs(resid), np.log(10.0) / 2)
    ly = np.log(y)
    assert fit.r2 == pytest.approx(1 - np.sum(resid**2) / np.sum((ly - ly.mean()) ** 2), abs=1e-12)
