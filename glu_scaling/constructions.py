"""Analytic constructions (paper.md §4): MLP, GLU and GQU weights that build a spline of f.

Layout (1D, every gate facing right).  The interval [a, b] is cut into m equal
cells with boundaries t_k = a + k h, h = (b - a) / m, k = 0..m.  Every unit of cell
k opens at its left knot t_k (G = 1, g = -t_k), so on cell k exactly the units of
cells 0..k are open and, with s = x - t_k,

    y(x) = d + sum_{j <= k} Delta_j(x - t_j) = q_k(s),   d = f(a).

q_k is the target's local polynomial on cell k (degree 1, 2, 3 for MLP, GLU, GQU):

    q_k(s) = f(t_k) + c1_k s + c2_k s^2 + c3_k s^3,

* MLP (eq. 6): c2 = c3 = 0.  The piecewise-linear interpolant.
* GLU (eqs. 10-13): c2 = f''(xi_k) / 2, c3 = 0.
* GQU: c3 = f'''(xi_k) / 6, c2 = (f''(xi_k) - f'''(xi_k)(xi_k - t_k)) / 2, i.e.
  q_k'' and q_k''' equal f'' and f''' at xi_k.

xi_k is the Taylor point: the left knot t_k (``curvature="left"``, the paper's
choice) or the midpoint t_k + h/2 (``curvature="mid"``).  In every case c1_k is set
by interpolation at the right knot, q_k(h) = f(t_{k+1}), so the construction
interpolates f at every knot and errors never accumulate from cell to cell.
GQU also offers ``curvature="hermite"``: q_k is the cubic Hermite interpolant
(f and f' at both knots), c1 = f'(t_k), c2 = (3 S - 2 f'(t_k) - f'(t_{k+1})) / h,
c3 = (f'(t_k) + f'(t_{k+1}) - 2 S) / h^2 with S = (f(t_{k+1}) - f(t_k)) / h.

The unit(s) of cell k add the *correction* Delta_k(s) = q_k(s) - q_{k-1}(s + h)
(q_{-1} = f(a)): the new polynomial minus what the units of the earlier cells
already give on this cell.  Its constant term vanishes (both equal f(t_k) at
s = 0), so Delta_k(s) = a1_k s + a2_k s^2 + a3_k s^3 with the jumps

    a3_k = c3_k - c3_{k-1},
    a2_k = c2_k - c2_{k-1} - 3 c3_{k-1} h,
    a1_k = c1_k - c1_{k-1} - 2 c2_{k-1} h - 3 c3_{k-1} h^2

(a1 = jump of q', a2 = jump of q''/2, a3 = jump of q'''/6 at t_k).  A unit
realises it as follows (D is the output weight):

* MLP: relu(s) D with D = a1.
* GLU: relu(s)(U x + u) with U = a2, u = a1 - a2 t_k, D = 1: s (a2 s + a1).
* GQU: relu(s)(U x + u)(Q x + q) = s (U s + p)(Q s + r), D = 1.  One unit supplies
  a3 s^3 + a2 s^2 + a1 s exactly when the quadratic factor a3 s^2 + a2 s + a1 has
  real roots, a2^2 >= 4 a3 a1 ("factorable"); otherwise two units sharing the knot
  supply s * s * (a3 s + a2) and s * 1 * a1.

Why GQU needs two units per knot with Taylor data.  As h -> 0, with f4 = f'''' and
f5 = f''''' at t_k: a3 ~ f4 h / 6 for every choice; "left" gives a2 ~ f4 h^2 / 4,
a1 ~ f4 h^3 / 6, so a2^2 - 4 a3 a1 ~ f4^2 h^4 (1/16 - 1/9) < 0; "mid" gives
a2 ~ -f5 h^3 / 24, a1 ~ f4 h^3 / 24, so a2^2 - 4 a3 a1 ~ -f4^2 h^4 / 36 < 0.
Wherever f'''' != 0 the correction does not factor, and the cell needs two units.
The Hermite cubic is C^1, so a1 = 0 at t_1, t_2, ... (set exactly) and
s^2 (a3 s + a2) always factors: one unit per cell suffices, except cell 0, whose
correction q_0(s) - f(a) keeps a1 = f'(a) and may not factor.

How n_hidden counts units (`cell_slots`, `n_cells`), and the knot spacing that results:

* MLP, GLU: one unit per cell, m = n_hidden, h = (b - a) / n_hidden; unit k has knot t_k.
* GQU "left" / "mid": two units per knot, m = n_hidden // 2 cells,
  h = (b - a) / m.  Units 2k and 2k+1 share knot t_k: if the correction factors,
  unit 2k supplies all of it and unit 2k+1 has D = 0; otherwise unit 2k supplies
  s^2 (a3 s + a2) and unit 2k+1 supplies a1 s.  For odd n_hidden the last unit has
  D = 0 (knot at b).
* GQU "hermite": m = n_hidden - 1 cells, h = (b - a) / (n_hidden - 1); units 0
  and 1 share knot t_0 = a (same rule as above), unit k + 1 has knot t_k for k >= 1.
* n_hidden = 1 (any GQU choice): m = 1 cell with one unit; if its correction does
  not factor, that unit supplies the quadratic s (a2 s + a1 + a3 h^2) instead (the
  cubic term dropped, the value at b kept), and the cell is only quadratic.
The layout is fixed by n_hidden alone (not by f), so h is exactly proportional to
1/n and the error falls like n^-4 without jitter.

Units with D = 0 are real (unmasked) units whose contribution is zero; `width`
pads beyond n_hidden with masked units as `models.pad` does.

Leading-order error (see `predicted_rmse` and docs/constructions.md): on a cell,
e = f^(p)(xi_k) h^p phi(s / h) + O(h^(p+1)), p = 2, 3, 4 for MLP, GLU, GQU; the
local RMS constants rms(phi) are `LOCAL_RMS`.

Everything here is host-side (NumPy float64 algebra; f and its derivatives are
evaluated with JAX, jitted once per f and dtype); the result is an ordinary
`Params` that `glu_scaling.apply` evaluates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import jax.numpy as jnp
import numpy as np

from glu_scaling import taylor
from glu_scaling.errors import UsageError, check_choice, check_interval, check_positive_int
from glu_scaling.models import Params, pad

ARCHS = ("mlp", "glu", "gqu")
CURVATURES = ("left", "mid", "hermite")  # "hermite": GQU only
ORDER = {"mlp": 1, "glu": 2, "gqu": 3}  # polynomial degree per cell

# Local RMS constants: on a cell of width h the leading-order RMS error is
# C * h^p * |f^(p)(xi)|, keyed by (arch, curvature) -> (p, C).  With s = x - t_k in
# [0, h] and sig = x - (t_k + h/2) in [-h/2, h/2]:
#   MLP:          e = -f''/2 s (h - s)                -> C = 1/sqrt(120)
#   GLU left:     e = f'''/6 (s^3 - h^2 s)            -> C = sqrt(2/945) = 1/sqrt(945/2)
#   GLU mid:      e = f'''/6 (sig^3 - h^2 sig / 4)    -> C = sqrt(2/945) / 8 = 1/sqrt(30240)
#   GQU left:     e = f''''/24 (s^4 - h^3 s)          -> C = 1/72
#   GQU mid:      e = f''''/24 (sig^4 - h^4 / 16)     -> C = sqrt(32/45) / 384 = 1/sqrt(207360)
#   GQU hermite:  e = f''''/24 s^2 (s - h)^2          -> C = 1/sqrt(9!) = 1/sqrt(362880)
LOCAL_RMS: dict[tuple[str, str], tuple[int, float]] = {
    ("mlp", "left"): (2, 1.0 / math.sqrt(120.0)),
    ("mlp", "mid"): (2, 1.0 / math.sqrt(120.0)),
    ("mlp", "hermite"): (2, 1.0 / math.sqrt(120.0)),
    ("glu", "left"): (3, math.sqrt(2.0 / 945.0)),
    ("glu", "mid"): (3, math.sqrt(2.0 / 945.0) / 8.0),
    ("gqu", "left"): (4, 1.0 / 72.0),
    ("gqu", "mid"): (4, math.sqrt(32.0 / 45.0) / 384.0),
    ("gqu", "hermite"): (4, 1.0 / math.sqrt(362880.0)),
}


# ------------------------------------------------------------------ argument checks


def _check_arch_curvature(arch: str, curvature: str) -> tuple[str, str]:
    check_choice("construction architecture", arch, ARCHS)
    check_choice("curvature", curvature, CURVATURES)
    if curvature == "hermite" and arch == "glu":
        raise UsageError("curvature 'hermite' is for gqu (and ignored by mlp); accepted for glu: left, mid")
    return arch, curvature


# ------------------------------------------------------------------ layout


def cell_slots(arch: str, n_hidden: int, curvature: str = "left") -> np.ndarray:
    """Units reserved for each cell of an n_hidden-unit construction; (m,) ints, m = `n_cells`.

    * MLP, GLU: m = n_hidden, one unit per cell.
    * GQU "left"/"mid": m = n_hidden // 2, two units per cell (one unit if n_hidden = 1);
      an odd n_hidden leaves one spare unit (D = 0, knot b).
    * GQU "hermite": m = n_hidden - 1, two units for cell 0 and one for every other
      cell (m = 1 with one unit if n_hidden = 1).
    Independent of f, so h = (b - a) / m is fixed by n_hidden.
    """
    arch, curvature = _check_arch_curvature(arch, curvature)
    n = check_positive_int("n_hidden", n_hidden)
    if arch != "gqu" or n == 1:
        return np.ones(n, dtype=int)
    if curvature == "hermite":
        return np.concatenate([[2], np.ones(n - 2, dtype=int)])
    return np.full(n // 2, 2)


def n_cells(arch: str, n_hidden: int, curvature: str = "left") -> int:
    """Number m of cells (knot spacing h = (b - a) / m) of an n_hidden-unit construction.

    m = n_hidden for MLP and GLU; for GQU, max(1, n_hidden // 2) with "left"/"mid"
    (two units per knot) and max(1, n_hidden - 1) with "hermite" (cell 0 has two
    units).  Independent of f; see `cell_slots`.
    """
    return int(cell_slots(arch, n_hidden, curvature).size)


def cell_knots(m: int, interval=(-1.0, 1.0)) -> np.ndarray:
    """Cell boundaries t_k = a + k (b - a) / m, k = 0..m (t_m = b exactly); (m + 1,)."""
    a, b = check_interval(interval)
    return np.linspace(a, b, check_positive_int("m", m) + 1)


def construction_knots(arch: str, n_hidden: int, *, interval=(-1.0, 1.0), curvature: str = "left") -> np.ndarray:
    """Cell boundaries t_0 = a, ..., t_m = b of `construct(arch, f, n_hidden, ...)`; (m + 1,)."""
    return cell_knots(n_cells(arch, n_hidden, curvature), interval)


def taylor_points(knots: np.ndarray, curvature: str) -> np.ndarray:
    """Taylor point xi_k of each cell: left knot ("left") or midpoint ("mid", "hermite"); (m,)."""
    check_choice("curvature", curvature, CURVATURES)
    return knots[:-1] if curvature == "left" else 0.5 * (knots[:-1] + knots[1:])


# ------------------------------------------------------------------ the per-cell algebra


def local_coefficients(table_knots: np.ndarray, table_xi: np.ndarray, h: float, order: int,
                       curvature: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coefficients (c1, c2, c3) of q_k(s) = f(t_k) + c1 s + c2 s^2 + c3 s^3 on each cell.

    Args:
      table_knots: `taylor.derivatives(f, knots)`, (5, m + 1).
      table_xi: `taylor.derivatives(f, taylor_points(knots, curvature))`, (5, m).
      h: cell width.  order: 1 (MLP), 2 (GLU), 3 (GQU).
      curvature: "left", "mid" (Taylor data at xi_k) or "hermite" (order 3 only).

    Returns:
      c1, c2, c3, each (m,), with q_k(h) = f(t_{k+1}) (and q_k'(0), q_k'(h) = f' at
      the knots for "hermite"; q_k'' (and q_k''') = f'' (f''') at xi_k otherwise).
    """
    f_k, df_k = table_knots[0], table_knots[1]
    slope = (f_k[1:] - f_k[:-1]) / h
    zeros = np.zeros_like(slope)
    if order == 1:
        return slope, zeros, zeros
    if curvature == "hermite":
        left, right = df_k[:-1], df_k[1:]
        return left, (3.0 * slope - 2.0 * left - right) / h, (left + right - 2.0 * slope) / (h * h)
    d2, d3 = table_xi[2], table_xi[3]
    if order == 2:
        c2, c3 = d2 / 2.0, zeros
    else:
        theta = 0.0 if curvature == "left" else 0.5
        c3 = d3 / 6.0
        c2 = (d2 - d3 * theta * h) / 2.0
    return slope - c2 * h - c3 * h * h, c2, c3


def unit_corrections(c1: np.ndarray, c2: np.ndarray, c3: np.ndarray,
                     h: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correction Delta_k(s) = a1 s + a2 s^2 + a3 s^3 = q_k(s) - q_{k-1}(s + h), per cell.

    Args:
      c1, c2, c3: local coefficients of every cell, (m,) each (see `local_coefficients`).
      h: cell width.

    Returns:
      a1, a2, a3, each (m,); cell 0 is corrected against the constant q_{-1} = f(a).
    """
    def prev(c):
        return np.concatenate([[0.0], c[:-1]])

    p1, p2, p3 = prev(c1), prev(c2), prev(c3)
    a3 = c3 - p3
    a2 = c2 - p2 - 3.0 * p3 * h
    a1 = c1 - p1 - 2.0 * p2 * h - 3.0 * p3 * h * h
    return a1, a2, a3


def factorable(a1: np.ndarray, a2: np.ndarray, a3: np.ndarray) -> np.ndarray:
    """Whether a3 s^2 + a2 s + a1 has real roots (one GQU unit suffices); bool, (m,)."""
    return a2 * a2 >= 4.0 * a3 * a1


def factor_quadratic(a1: float, a2: float, a3: float) -> tuple[float, float, float, float]:
    """Real factors (U s + p)(Q s + r) = a3 s^2 + a2 s + a1 of a factorable quadratic.

    Returns (U, p, Q, r).  Uses the cancellation-free root
    q = -(a2 + sign(a2) sqrt(a2^2 - 4 a3 a1)) / 2:  a3 s^2 + a2 s + a1 = (a3 s - q)(s - a1 / q).
    """
    if a3 == 0.0:
        return 0.0, 1.0, a2, a1
    root = math.sqrt(max(a2 * a2 - 4.0 * a3 * a1, 0.0))
    q = -(a2 + math.copysign(root, a2)) / 2.0
    if q == 0.0:  # a2 = 0 and a1 a3 = 0 with a3 != 0, so a1 = 0: a3 s^2
        return a3, 0.0, 1.0, 0.0
    return a3, -q, 1.0, -a1 / q


def cell_corrections(arch: str, f: Callable, m: int, *, interval=(-1.0, 1.0), curvature: str = "left",
                     dtype=None) -> tuple[np.ndarray, float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Knots, f(a) and per-cell corrections of an m-cell construction.

    Returns:
      knots (m + 1,), d = f(a), and (a1, a2, a3), each (m,) (a1 = 0 exactly for
      GQU-"hermite", whose spline is C^1).
    """
    arch, curvature = _check_arch_curvature(arch, curvature)
    knots = cell_knots(m, interval)
    h = (knots[-1] - knots[0]) / m
    table = taylor.derivatives(f, np.concatenate([knots, taylor_points(knots, curvature)]), dtype=dtype)
    coeffs = local_coefficients(table[:, : m + 1], table[:, m + 1:], h, ORDER[arch], curvature)
    a1, a2, a3 = unit_corrections(*coeffs, h)
    if arch == "gqu" and curvature == "hermite":
        a1 = np.concatenate([a1[:1], np.zeros(m - 1)])  # C^1: q' has no jump (up to rounding) at t_1..
    return knots, float(table[0, 0]), (a1, a2, a3)


# ------------------------------------------------------------------ building Params

_ZERO_UNIT = (0.0, 1.0, 0.0, 1.0, 0.0)  # (U1, p1, U2, p2, D): contributes nothing


def _gqu_cell_rows(t: float, h: float, a1: float, a2: float, a3: float, slots: int) -> list[list[float]]:
    """Rows [t, U1, p1, U2, p2, D] of the `slots` (1 or 2) GQU units of one cell of width h."""
    if factorable(a1, a2, a3):
        rows = [[t, *factor_quadratic(a1, a2, a3), 1.0]]
    elif slots == 1:  # no room for a second unit: s (a2 s + a1 + a3 h^2), same value at s = h
        rows = [[t, a2, a1 + a3 * h * h, 0.0, 1.0, 1.0]]
    else:  # two units sharing the knot: s * s * (a3 s + a2) and s * 1 * a1
        rows = [[t, 1.0, 0.0, a3, a2, 1.0], [t, 0.0, 1.0, 0.0, a1, 1.0]]
    return rows + [[t, *_ZERO_UNIT]] * (slots - len(rows))


def unit_rows(arch: str, knots: np.ndarray, corrections, slots: np.ndarray, n_hidden: int) -> np.ndarray:
    """Rows [t, U1, p1, U2, p2, D] of all n_hidden units; (n_hidden, 6).

    A row contributes D relu(x - t) (U1 s + p1)(U2 s + p2) with s = x - t (an MLP uses
    no factors, a GLU only the first).  `slots` (m,) units per cell (see `cell_slots`);
    units left after the last cell get D = 0 and knot b.
    """
    a1, a2, a3 = corrections
    t = knots[:-1]
    m = t.size
    ones, zeros = np.ones(m), np.zeros(m)
    if arch == "mlp":
        rows = np.stack([t, zeros, ones, zeros, ones, a1], axis=1)
    elif arch == "glu":
        rows = np.stack([t, a2, a1, zeros, ones, ones], axis=1)
    else:
        h = (knots[-1] - knots[0]) / m
        cells = [_gqu_cell_rows(float(t[k]), h, float(a1[k]), float(a2[k]), float(a3[k]), int(slots[k]))
                 for k in range(m)]
        rows = np.asarray([row for cell in cells for row in cell], dtype=np.float64)
    spare = n_hidden - rows.shape[0]
    filler = np.tile([[knots[-1], *_ZERO_UNIT]], (spare, 1))
    return np.concatenate([rows, filler], axis=0)


def params_from_rows(arch: str, rows: np.ndarray, d: float, dtype=None) -> Params:
    """Params of the units described by `rows` (see `unit_rows`) and output bias d.

    Returns G (n, 1) = 1, g (n,) = -t, U (k, n, 1), u (k, n) with U x + u = U (x - t) + p,
    D (n, 1), d (1,), mask ones (n,), activation "relu".
    """
    dtype = taylor.check_dtype(dtype)
    t, U1, p1, U2, p2, D = rows.T
    n = rows.shape[0]
    factors = [(U1, p1), (U2, p2)][: ORDER[arch] - 1]
    U = np.stack([w for w, _ in factors]) if factors else np.zeros((0, n))
    u = np.stack([p - w * t for w, p in factors]) if factors else np.zeros((0, n))
    as_j = partial(jnp.asarray, dtype=dtype)
    return Params(
        G=as_j(np.ones((n, 1))), g=as_j(-t), U=as_j(U[:, :, None]), u=as_j(u),
        D=as_j(D[:, None]), d=as_j(np.array([d])), mask=as_j(np.ones(n)), activation="relu",
    )


def construct(
    arch: str,
    f: Callable,
    n_hidden: int,
    *,
    interval: tuple[float, float] = (-1.0, 1.0),
    curvature: str = "left",
    dtype=None,
    width: int | None = None,
) -> Params:
    """Analytic construction of an MLP, GLU or GQU that builds a spline of f on `interval`.

    Args:
      arch: "mlp" (piecewise-linear interpolant, eq. 6), "glu" (piecewise quadratic,
        eqs. 10-13) or "gqu" (piecewise cubic).
      f: scalar JAX-traceable function (derivatives come from jax.grad).
      n_hidden: number of (unmasked) hidden units; the cells and knots follow from
        it alone (`cell_slots`): m = n_hidden cells for MLP and GLU, n_hidden // 2
        for GQU-"left"/"mid" (two units per knot), n_hidden - 1 for GQU-"hermite"
        (two units at t_0 = a, one per later knot); m = 1 if n_hidden = 1.
        Knots t_k = a + k (b - a) / m, k = 0..m-1; the last cell ends at b.
      interval: (a, b), a < b.
      curvature: where the cell's higher derivatives come from: "left" knot (the
        paper's choice; default) or cell "mid"point for f'' (GLU) or f'', f''' (GQU);
        "hermite" (GQU only): cubic Hermite data f, f' at both knots.  Ignored by MLP.
      dtype: dtype of the parameters and of the derivative evaluation (default
        float64 if jax_enable_x64, else float32).
      width: pad to this width >= n_hidden with masked units (default n_hidden).

    Returns:
      Params with activation "relu": G (W, 1) = 1, g (W,) = -t, U (k, W, 1), u (k, W),
      D (W, 1), d (1,) = f(a), mask ones on the n_hidden real units.  On [a, b],
      `apply(arch, params, x[:, None])` is the spline q of the module docstring
      (interpolating f at every knot); for x < a it is f(a), for x > b the last
      cell's polynomial continues.
    """
    arch, curvature = _check_arch_curvature(arch, curvature)
    n = check_positive_int("n_hidden", n_hidden)
    interval = check_interval(interval)
    dtype = taylor.check_dtype(dtype)
    if width is not None:
        width = check_positive_int("width", width)
    slots = cell_slots(arch, n, curvature)
    knots, d, corrections = cell_corrections(arch, f, slots.size, interval=interval, curvature=curvature,
                                             dtype=dtype)
    rows = unit_rows(arch, knots, corrections, slots, n)
    params = params_from_rows(arch, rows, d, dtype)
    return params if width is None else pad(params, width)


# ------------------------------------------------------------------ theory


def predicted_rmse(
    arch: str,
    f: Callable,
    n_hidden: int,
    *,
    interval: tuple[float, float] = (-1.0, 1.0),
    curvature: str = "left",
    dtype=None,
) -> float:
    """Leading-order RMSE over `interval` of `construct(arch, f, n_hidden, ...)`.

    On a cell of width h with Taylor point xi, the construction's error is
    e = f^(p)(xi) h^p phi(s / h) + O(h^(p+1)) with phi fixed by the construction
    (p = 2, 3, 4 for MLP, GLU, GQU; see `LOCAL_RMS`), so its mean square over the
    cell is C^2 h^(2p) f^(p)(xi)^2 with C = rms(phi).  All cells have the same
    width, so the mean square over [a, b] is the mean over cells:

        RMSE = C h^p sqrt( mean_k f^(p)(xi_k)^2 ),   h = (b - a) / m,  m = n_cells(...).

    xi_k is the left knot for "left" and the midpoint otherwise; the MLP always uses
    the midpoint (its error is symmetric about it, so the per-cell value is then
    accurate to O(h^2), like "mid" and "hermite"; "left" carries an O(h) relative
    correction, which cancels over the interval when f'''' f^(p) integrates to zero,
    e.g. for even or odd targets on a symmetric interval).  This integrates
    f^(p)(x)^2 numerically instead of using the bound C h^p max|f^(p)|, so
    measured / predicted -> 1 as n grows.  Not meaningful for GQU "left"/"mid" with
    n_hidden = 1 when that single cell's correction does not factor.

    Returns:
      The predicted RMSE (float).
    """
    arch, curvature = _check_arch_curvature(arch, curvature)
    p, C = LOCAL_RMS[(arch, curvature)]
    m = n_cells(arch, n_hidden, curvature)
    knots = cell_knots(m, interval)
    h = (knots[-1] - knots[0]) / m
    xi = taylor_points(knots, "mid" if arch == "mlp" else curvature)
    fp = taylor.derivatives(f, xi, dtype=dtype)[p]
    return float(C * h**p * np.sqrt(np.mean(fp * fp)))
