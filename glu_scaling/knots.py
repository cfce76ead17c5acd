"""Knot placement: where the cells of a degree-p spline go, for a known f or from a fit.

For a smooth f the best cells of a degree-p spline equidistribute |f^(p+1)|^(2/(2p+3))
(`equidistributed_breakpoints`), and the asymptotic gain over uniform cells is
`knot_placement_gain` (2.8 for the paper's 1D target at degree 2), the same at every
large number of cells.  The spline init's placed knots (`inits.placed_knots`) and the
placed-knot spline baselines (`splines`) use it, on the host, from f itself.

Without f, the fit shows the density: a degree-p spline's p-th derivative is constant on
each cell, and its jump across a knot divided by the distance of the neighbouring cells'
midpoints estimates |f^(p+1)| there (de Boor's NEWNOT, A Practical Guide to Splines,
ch. XII).  `moved_knots` equidistributes that estimate (`equidistribute`), traced, so the
knot-moving training stage (`schedules.KnotStage`) runs vmapped over a batch of models.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
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


# `moved_knots`' outcomes, one per model: what the knot-moving stage did, in its record
KNOT_OUTCOMES = ("moved", "flat fit", "too few points per cell", "fewer than 3 knots", "no gain")
MOVED, FLAT, SPARSE, FEW, NO_GAIN = range(len(KNOT_OUTCOMES))
FLAT_RTOL = 1e-8  # jumps of the p-th derivative below this (relative; at least 1000 eps) are rounding: a flat fit
DENSITY_FLOOR = 1e-3  # times the mean density: cells where the estimate vanishes stay finite


def equidistribute(edges: jax.Array, density: jax.Array, count) -> jax.Array:
    """Points that split the mass of a piecewise-constant density into equal parts.

    Args:
      edges: (M,) sorted; the first `count` are the cell edges (the rest are ignored).
      density: (M - 1,) > 0; density[c] on the cell edges[c]..edges[c + 1], c < count - 1.
      count: the number of edges used, 2 <= count <= M (may be traced).
    Returns (M,): t_0 = edges[0], t_{count-1} = edges[count - 1] and equal mass between
    neighbours in the first `count` entries; the rest repeat t_{count-1}.  Exact (to
    rounding) for the given density: the mass is linear on each cell.
    """
    m = edges.shape[0]
    cells = jnp.arange(m - 1) < count - 1
    mass = jnp.where(cells, density * jnp.diff(edges), 0.0)
    cumulative = jnp.concatenate([jnp.zeros((1,), edges.dtype), jnp.cumsum(mass)])
    total = cumulative[count - 1]
    levels = total * jnp.minimum(jnp.arange(m), count - 1) / (count - 1)
    # the cell each level falls in: the last edge whose mass is <= the level, of the real cells
    cell = jnp.clip(jnp.searchsorted(jnp.where(jnp.arange(m) < count, cumulative, jnp.inf), levels,
                                     side="right") - 1, 0, count - 2)
    t = edges[cell] + (levels - cumulative[cell]) / density[cell]
    t = jnp.where(jnp.arange(m) == 0, edges[0], t)
    return jnp.where(jnp.arange(m) >= count - 1, edges[count - 1], t)


def moved_knots(knots: jax.Array, active: jax.Array, derivative: Callable[[jax.Array], jax.Array],
                x: jax.Array, weight: jax.Array, degree: int, y_scale) -> tuple[jax.Array, jax.Array]:
    """Knots moved to equidistribute the fit's estimate of |f^(p+1)|^(2/(2p+3)), p = `degree`.

    The extreme active knots stay; the others move, keeping their order.  On cell c
    between sorted knots s_c and s_{c+1} the density is the mean of the estimates at its
    two knots, |jump of the p-th derivative| / ((s_{i+1} - s_{i-1}) / 2) (the end knots
    take their neighbour's), to the power 2/(2p+3), plus `DENSITY_FLOOR` times its mean.

    Args:
      knots: (W,) positions; active: (W,) bool, the knots that may move (others stay).
      derivative: points (M,) -> (M, n_out), the fit's p-th derivative in x.
      x: (N,) training inputs; weight: (N,) 1 for real points, 0 for padding.
      degree: the spline degree p; y_scale: the targets' spread (what a flat fit is measured by).
    Returns (knots (W,), outcome): an index into `KNOT_OUTCOMES`; the knots are unchanged
    unless it is MOVED (a flat fit, fewer than 3 active knots, or new cells holding fewer
    than p + 1 training points keep them).
    """
    w = knots.shape[0]
    if w < 3:  # (static) no inner knot to move
        return knots, jnp.asarray(FEW)
    n = jnp.sum(active)
    order = jnp.argsort(jnp.where(active, knots, jnp.inf))
    s = knots[order]
    i = jnp.arange(w)
    s = jnp.where(i < n, s, s[jnp.maximum(n - 1, 0)])  # past the active ones: the last, a zero-width tail
    mid = (s[1:] + s[:-1]) / 2  # (W - 1,) cell midpoints
    values = derivative(mid)  # (W - 1, n_out): the p-th derivative on each cell
    jump = jnp.linalg.norm(values[1:] - values[:-1], axis=-1)  # (W - 2,) at knots 1..W-2
    spacing = (s[2:] - s[:-2]) / 2
    inner = (i[1:-1] < n - 1)
    estimate = jnp.where(inner, jump / jnp.where(spacing > 0, spacing, 1.0), 0.0)  # |f^(p+1)| at knots 1..W-2
    estimate = jnp.concatenate([estimate[:1], estimate, estimate[-1:]])  # (W,), the end knots: their neighbour's
    estimate = jnp.where(i == n - 1, estimate[jnp.maximum(n - 2, 0)], estimate)
    density = ((estimate[1:] + estimate[:-1]) / 2) ** _sigma(degree)  # (W - 1,)
    cells = i[:-1] < n - 1
    span = s[jnp.maximum(n - 1, 0)] - s[0]
    mean = jnp.sum(jnp.where(cells, density * jnp.diff(s), 0.0)) / jnp.where(span > 0, span, 1.0)
    density = jnp.where(cells & (mean > 0), density + DENSITY_FLOOR * mean, 1.0)  # (mean 0: a flat fit)
    scale = jnp.maximum(jnp.max(jnp.where(cells[:, None], jnp.abs(values), 0.0)),
                        y_scale / jnp.where(span > 0, span, 1.0) ** degree)
    rtol = max(FLAT_RTOL, 1e3 * float(jnp.finfo(knots.dtype).eps))
    flat = ~(jnp.max(jnp.where(inner, jump, 0.0)) > rtol * scale)
    new = equidistribute(s, density, jnp.maximum(n, 2))
    # training points in each new cell (a point on an edge counts to the right)
    cell = jnp.searchsorted(jnp.where(i < n, new, jnp.inf), x, side="right") - 1
    inside = (cell >= 0) & (cell < n - 1)
    counts = jax.ops.segment_sum(jnp.where(inside, weight, 0.0), jnp.clip(cell, 0, w - 1), num_segments=w)
    sparse = jnp.min(jnp.where(i < n - 1, counts, jnp.inf)) < degree + 1
    outcome = jnp.where(n < 3, FEW, jnp.where(flat, FLAT, jnp.where(sparse, SPARSE, MOVED)))
    moved = knots.at[order].set(jnp.where(i < n, new, s))
    return jnp.where(outcome == MOVED, jnp.where(active, moved, knots), knots), outcome


# ---------------------------------------------------------------- the knots of a 1D model, and moving them

KNOT_ATTEMPTS = 2  # a knot move that does not lower the loss is tried again at half its length


def knot_stage(carry, x: jax.Array, t: jax.Array, weight: jax.Array, degree: int, rounds: int,
               solve: Callable, better: Callable, going: Callable):
    """Up to `rounds` knot moves of a 1D model (`schedules.KnotStage`), traced.

    Each moves the gates' knots -b_i / w_i (`model_knots`) to equidistribute the fit's
    estimate of |f^(p+1)|^(2/(2p+3)) (`moved_knots`; training data only), keeping each
    gate's weight, then `solve`s the linear groups again.  A move is kept if `better`, else
    tried once more at half its length (`KNOT_ATTEMPTS`; a knot's rank never changes); the
    first move not kept ends the stage.

    Args:
      carry: the training state, with `.params` and `._replace(params=...)`.
      x (N,), t (N, n_out), weight (N,): the training data (weight 0: padding).
      degree: the spline degree p; rounds: the most moves.
      solve: carry -> carry, the least-squares steps; better: (trial, carry) -> bool;
      going: carry -> bool, false to stop (a diverged model).
    Returns (carry, moves kept, outcome): `MOVED` if any move was kept, else the first
    move's reason (`KNOT_OUTCOMES`).
    """
    mean = jnp.sum(weight[:, None] * t, axis=0) / jnp.sum(weight)
    y_scale = jnp.sqrt(jnp.sum(weight[:, None] * (t - mean) ** 2) / jnp.sum(weight))

    def one_move(c):
        params = c.params
        layout = params.layout
        c0 = layout.columns(layout.gate)[0]
        rows = params.rows()
        knots, w, b, _, active = model_knots(params, x, weight)
        new, outcome = moved_knots(knots, active, derivative(params, degree), x, weight, degree, y_scale)

        def attempt(state):
            i, _, _ = state
            shifted = knots + jnp.ldexp(jnp.asarray(1.0, knots.dtype), -i) * (new - knots)
            trial = solve(c._replace(params=params.with_rows(rows.at[:, c0 + 1].set(
                jnp.where(active, -w * shifted, b)))))
            return i + 1, trial, (outcome == MOVED) & better(trial, c)

        _, trial, kept = jax.lax.while_loop(lambda s: (s[0] < KNOT_ATTEMPTS) & ~s[2] & (outcome == MOVED),
                                            attempt, (jnp.asarray(0), c, jnp.asarray(False)))
        outcome = jnp.where((outcome == MOVED) & ~kept, NO_GAIN, outcome)
        return jax.tree.map(lambda u, v: jnp.where(kept, u, v), trial, c), outcome

    def body(state):
        c, r, moves, first, _ = state
        c, outcome = one_move(c)
        return c, r + 1, moves + (outcome == MOVED), jnp.where(r == 0, outcome, first), outcome != MOVED

    start = (carry, jnp.asarray(0), jnp.asarray(0), jnp.asarray(NO_GAIN), jnp.asarray(False))  # (not run)
    carry, _, moves, first, _ = jax.lax.while_loop(lambda s: (s[1] < rounds) & ~s[4] & going(s[0]), body, start)
    return carry, moves, jnp.where(moves > 0, MOVED, first)


def data_range(x: jax.Array, weight: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(min, max) of the real training inputs x (N,) (weight 0: padding)."""
    real = weight > 0
    return jnp.min(jnp.where(real, x, jnp.inf)), jnp.max(jnp.where(real, x, -jnp.inf))


def gate_knots(params):
    """The knots of a 1D model whose layout has them (`models.Layout.knots`): (t, w, b,
    valid), each (W,): t_i = -b_i / w_i for the gate's weight w and bias b where valid (a
    real unit with w != 0; else 0)."""
    layout = params.layout
    c0 = layout.columns(layout.gate)[0]
    rows = params.rows()
    w, b = rows[:, c0], rows[:, c0 + 1]
    valid = (params.mask > 0) & (w != 0)
    return jnp.where(valid, -b / jnp.where(valid, w, 1.0), 0.0), w, b, valid


def model_knots(params, x: jax.Array, weight: jax.Array):
    """`gate_knots` and (W,) inside: valid and within the training inputs' range x (N,)
    (weight 0: padding), widened by 1 % on each side."""
    t, w, b, valid = gate_knots(params)
    lo, hi = data_range(x, weight)
    tol = 0.01 * (hi - lo)
    return t, w, b, valid, valid & (t >= lo - tol) & (t <= hi + tol)


def derivative(params, degree: int) -> Callable[[jax.Array], jax.Array]:
    """points (M,) -> (M, n_out): a 1D model's `degree`-th derivative in x (forward mode)."""
    def f(z):
        return params.output(jnp.reshape(z, (1, 1)))[0]
    for _ in range(degree):
        f = jax.jacfwd(f)
    return jax.vmap(f)


def movable_gates(params, x: jax.Array, weight: jax.Array) -> jax.Array:
    """(W, row) bool: every entry of the unit rows but the gates of units whose knots lie
    outside the training inputs.  Those are the spline init's outer knots, just outside
    the problem's interval: moved inwards, they would leave a piece of the model between
    them and the data that no point constrains (`edge_guard`)."""
    lo, hi = data_range(x, weight)
    t, _, _, valid = gate_knots(params)
    outside = valid & ((t < lo) | (t > hi))
    columns = jnp.asarray(params.layout.columns(params.layout.gate))
    return jnp.ones((params.width, params.layout.size), bool).at[:, columns].set(~outside[:, None])


def edge_guard(params, x: jax.Array, weight: jax.Array) -> Callable:
    """trial params -> bool: false where a knot has entered an edge gap (between the outer
    knot of `params` and the nearest training input) it was not in already.  Random
    training inputs stop short of the interval's ends and the test grid reaches them; a
    knot in the gap makes the model past it a piece no training point constrains
    (docs/design.md, "Knot moves")."""
    lo, hi = data_range(x, weight)
    t0, _, _, valid0 = gate_knots(params)
    outer_lo = jnp.min(jnp.where(valid0, t0, jnp.inf))
    outer_hi = jnp.max(jnp.where(valid0, t0, -jnp.inf))

    def gap(t):
        return ((t > outer_lo) & (t < lo)) | ((t > hi) & (t < outer_hi))

    was = gap(t0)

    def admissible(trial):  # on every line-search trial: the knots alone
        t, _, _, valid = gate_knots(trial)
        return ~jnp.any(valid & gap(t) & ~was)

    return admissible
