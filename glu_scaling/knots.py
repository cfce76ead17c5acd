"""Knot placement: where the cells of a degree-p spline go for a smooth target f.

For a smooth f the best cells of a degree-p spline equidistribute |f^(p+1)|^(2/(2p+3))
(`equidistributed_breakpoints`), and the asymptotic gain over uniform cells is
`knot_placement_gain` (2.8 for the paper's 1D target at degree 2), the same at every
large number of cells.  The spline init's placed knots (`inits.placed_knots`) and the
placed-knot spline baselines (`splines`) both use it.  NumPy and the derivative tables
only: placing knots needs no spline fit.
"""

from __future__ import annotations

import numpy as np

from glu_scaling import taylor
from glu_scaling.errors import UsageError, check_interval, check_positive_int

# knots placed for a degree-p spline follow f^(p+1); `taylor.derivatives` goes up to MAX_DERIVATIVE
MAX_PLACED_DEGREE = taylor.MAX_DERIVATIVE - 1


def _check_degree(degree: int) -> int:
    p = check_positive_int("degree", degree)
    if p > MAX_PLACED_DEGREE:
        raise UsageError(f"degree must be 1..{MAX_PLACED_DEGREE} for knots placed by f^(degree+1), got {degree}")
    return p


def _top_derivative(f, degree: int, x: np.ndarray) -> np.ndarray:
    """|f^(p+1)(x)| for a degree-p spline, p = `degree`; (N,)."""
    return np.abs(taylor.derivatives(f, x)[_check_degree(degree) + 1])


def _sigma(degree: int) -> float:
    """2/(2p+3): |f^(p+1)|^sigma is the density of the best cells for a degree-p spline."""
    return 2.0 / (2 * degree + 3)


def equidistributed_breakpoints(f, n_knots: int, degree: int, interval=(-1.0, 1.0), *,
                                grid: int = 4001, floor: float = 1e-3) -> np.ndarray:
    """Cell boundaries for a degree-p least-squares spline of a smooth f; (n_knots + 1,).

    On cells of local width h(x) the L2 error is about (int h^(2p+2) f^(p+1)^2)^(1/2) up
    to a constant; at a fixed number of cells it is smallest when the cell density 1/h is
    proportional to |f^(p+1)|^(2/(2p+3)) (de Boor, A Practical Guide to Splines, ch. XII).
    The boundaries split the integral of that density, on a uniform grid of `grid`
    points (trapezoid rule), into n_knots equal parts; `floor` (times the mean density) is
    added so that cells stay finite where f^(p+1) vanishes.

    Args:
      f: scalar -> scalar, JAX-traceable (derivatives by jax.grad, `taylor.derivatives`).
      n_knots: number of cells.
      degree: spline degree p, 1..3.
      interval: (a, b); the first and last boundaries are exactly a and b.
      grid: points of the density's grid (>= 2); floor: >= 0, see above (with 0, an f^(p+1)
        that vanishes everywhere is refused).
    """
    a, b = check_interval(interval)
    n = check_positive_int("n_knots", n_knots)
    if check_positive_int("grid", grid) < 2:
        raise UsageError(f"grid must be at least 2 points, got {grid}")
    if not (np.isfinite(floor) and floor >= 0):
        raise UsageError(f"floor must be a finite number >= 0, got {floor!r}")
    x = np.linspace(a, b, grid)
    rho = _top_derivative(f, degree, x) ** _sigma(degree)
    if not np.all(np.isfinite(rho)):
        raise UsageError(f"f^({degree + 1}) is not finite on [{a}, {b}]; knots cannot be placed by it")
    mean = float(np.mean(rho))
    rho = rho + floor * (mean if mean > 0 else 1.0)
    cumulative = np.concatenate([[0.0], np.cumsum((rho[1:] + rho[:-1]) / 2 * np.diff(x))])
    t = np.interp(np.linspace(0.0, cumulative[-1], n + 1), cumulative, x)
    t[0], t[-1] = a, b
    if not np.all(np.diff(t) > 0):
        raise UsageError(f"f^({degree + 1}) vanishes on [{a}, {b}]: nothing to place knots by; "
                         f"use floor > 0 (got {floor})")
    return t


def knot_placement_gain(f, degree: int, interval=(-1.0, 1.0), *, grid: int = 20001) -> float:
    """Asymptotic ratio of the degree-p least-squares spline's RMSE on uniform cells to that
    on equidistributed cells (`equidistributed_breakpoints`), for large n_knots:
    ||f^(p+1)||_2 / ||f^(p+1)||_sigma with sigma = 2/(2p+3), norms as means over the
    interval.  1 when f^(p+1) is constant; larger the more it varies."""
    a, b = check_interval(interval)
    phi = _top_derivative(f, degree, np.linspace(a, b, grid))
    if not np.any(phi > 0):  # f is a polynomial of degree <= p: both splines are exact
        return 1.0
    sigma = _sigma(degree)
    return float(np.sqrt(np.mean(phi**2)) / np.mean(phi**sigma) ** (1.0 / sigma))
