"""Least-squares spline baselines (paper.md §7, Fig. 4): degree 1, 2, 3, on uniform knots or
on knots placed for the target (`knots.equidistributed_breakpoints`).

A baseline with ``n_knots`` has the breakpoints t_k = a + k (b - a) / n_knots,
k = 0..n_knots: n_knots cells on [a, b], n_knots - 1 interior knots, and
clamped (repeated) end knots a and b.  Its space is the splines of degree p with
continuity C^(p-1) at the interior knots, of dimension n_knots + p.

"Same number of knots" as a network means the same cells:

* an n-unit MLP (unit k opens at t_k = a + k (b - a) / n, k = 0..n-1) has n knots:
  `n_knots = n`.  Its construction and the degree-1 spline live in the same space
  (continuous piecewise-linear functions on those cells, dimension n + 1 = n unit
  weights D plus d), so with equal knots the LSQ linear spline's training RMSE is
  never above the construction's (it is the least-squares optimum of that space).
* an n-unit GLU also has n knots (`n_knots = n`), but its space (continuous piecewise
  quadratics, dimension 2n + 1) is larger than the C^1 quadratic spline space
  (n + 2): the LSQ quadratic spline is not guaranteed to beat the GLU construction.
* a GQU's cells are `constructions.n_cells("gqu", n, curvature)` (n // 2 with Taylor data,
  n - 1 for "hermite"); its construction is C^0 (C^1 for "hermite") piecewise cubic,
  again a larger space than the C^2 cubic spline.

In general `n_knots = glu_scaling.constructions.n_cells(arch, n_hidden, curvature)`.
Fitting uses `scipy.interpolate.make_lsq_spline` (QR) in float64 on the host.

Knots that move (as a trained network's do) buy at most a constant factor: for a smooth
f the best cells equidistribute |f^(p+1)|^(2/(2p+3)) (`knots.equidistributed_breakpoints`), and
the asymptotic gain over uniform cells is `knots.knot_placement_gain` (2.8 for the paper's 1D
target at degree 2), the same at every large n_knots.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import BSpline, make_lsq_spline

from glu_scaling.errors import UsageError, check_interval, check_positive_int


def _as_points(name: str, a) -> np.ndarray:
    """(N,) or (N, 1) array-like -> (N,) float64; raises on other shapes or non-finite values."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise UsageError(f"{name} must have shape (N,) or (N, 1), got {np.shape(a)}")
    if not np.all(np.isfinite(arr)):
        raise UsageError(f"{name} contains non-finite values")
    return arr


def breakpoints(n_knots: int, interval=(-1.0, 1.0)) -> np.ndarray:
    """Cell boundaries t_k = a + k (b - a) / n_knots, k = 0..n_knots; (n_knots + 1,)."""
    a, b = check_interval(interval)
    return np.linspace(a, b, check_positive_int("n_knots", n_knots) + 1)


def _checked_breaks(breaks, n_knots: int, a: float, b: float) -> np.ndarray:
    t = np.asarray(breaks, dtype=np.float64)
    if t.shape != (n_knots + 1,):
        raise UsageError(f"breaks must have n_knots + 1 = {n_knots + 1} entries, got shape {t.shape}")
    if not (np.all(np.isfinite(t)) and np.all(np.diff(t) > 0) and t[0] == a and t[-1] == b):
        raise UsageError(f"breaks must increase strictly from {a} to {b}, got {t.tolist()}")
    return t


def knot_vector(degree: int, n_knots: int, interval=(-1.0, 1.0), breaks=None) -> np.ndarray:
    """Clamped B-spline knot vector: a (degree+1 times), the n_knots - 1 interior knots, b
    (degree+1 times); (n_knots + 2 degree + 1,).  The spline has n_knots + degree coefficients.
    `breaks` (n_knots + 1,), from a to b, replaces the uniform cell boundaries."""
    p = check_positive_int("degree", degree)
    a, b = check_interval(interval)
    n_knots = check_positive_int("n_knots", n_knots)
    t = breakpoints(n_knots, (a, b)) if breaks is None else _checked_breaks(breaks, n_knots, a, b)
    return np.concatenate([np.full(p, t[0]), t, np.full(p, t[-1])])


def fit_lsq_spline(x_train, y_train, degree: int, n_knots: int, interval=(-1.0, 1.0), *,
                   breaks=None) -> BSpline:
    """Least-squares spline of `degree` on `n_knots` cells fitted to (x_train, y_train).

    Args:
      x_train: (N,) or (N, 1), inside `interval`.
      y_train: (N,) or (N, 1).
      degree: spline degree p >= 1 (1 linear, 2 quadratic, 3 cubic).
      n_knots: number of cells (see the module docstring for the match with widths).
      interval: (a, b).
      breaks: optional (n_knots + 1,) cell boundaries from a to b (default uniform; see
        `knots.equidistributed_breakpoints`).

    Returns:
      A scipy `BSpline` (call it on points (M,) to get (M,); it extrapolates outside
      [a, b] with the end polynomials).
    """
    a, b = check_interval(interval)
    x = _as_points("x_train", x_train)
    y = _as_points("y_train", y_train)
    if x.size != y.size:
        raise UsageError(f"x_train and y_train must have the same length, got {x.size} and {y.size}")
    if x.size and (x.min() < a or x.max() > b):
        raise UsageError(f"x_train must lie in the interval [{a}, {b}], got [{x.min()}, {x.max()}]")
    t = knot_vector(degree, n_knots, (a, b), breaks)
    n_coef = n_knots + degree
    if x.size < n_coef:
        raise UsageError(f"{x.size} training points cannot determine {n_coef} spline coefficients "
                         f"(degree {degree}, n_knots {n_knots})")
    order = np.argsort(x, kind="stable")
    try:
        spline = make_lsq_spline(x[order], y[order], t, k=degree)
    except (ValueError, np.linalg.LinAlgError) as err:
        raise UsageError(f"least-squares spline (degree {degree}, n_knots {n_knots}) is not determined "
                         f"by the training points (too few points per cell?): {err}") from None
    if not np.all(np.isfinite(spline.c)):
        raise UsageError(f"least-squares spline (degree {degree}, n_knots {n_knots}) is not determined "
                         "by the training points (too few points per cell?)")
    return spline


def rmse(y_pred, y_true) -> float:
    """Root-mean-square error between two (N,) or (N, 1) arrays."""
    p, t = _as_points("y_pred", y_pred), _as_points("y_true", y_true)
    if p.size != t.size:
        raise UsageError(f"y_pred and y_true must have the same length, got {p.size} and {t.size}")
    return float(np.sqrt(np.mean((p - t) ** 2)))


def lsq_spline_rmse(x_train, y_train, x_test, y_test, degree: int, n_knots: int,
                    interval=(-1.0, 1.0), *, breaks=None) -> float:
    """Test RMSE of `fit_lsq_spline(x_train, y_train, degree, n_knots, interval, breaks=breaks)`
    on (x_test, y_test).

    x_*, y_*: (N,) or (N, 1).  Returns a float.
    """
    spline = fit_lsq_spline(x_train, y_train, degree, n_knots, interval, breaks=breaks)
    return rmse(spline(_as_points("x_test", x_test)), y_test)
