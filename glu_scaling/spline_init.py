"""Spline ("MASO") initialisation of the gates (paper.md §3).

In 1D unit i gets G_i = s * sigma_i and g_i = -s * sigma_i * t_i, so act(G_i x + g_i)
opens at the knot t_i, facing right (sigma_i = +1, open for x > t_i) or left
(sigma_i = -1, open for x < t_i).  The knots tile [lo - pad, hi + pad] evenly;
the reference used linspace(-1.001, 1.001, n) with alternating facing.  Or they are
placed for a known target f (`placed_knots`, KNOT_PLACEMENTS "placed"): over the same
span, where |f^(p+1)|^(2/(2p+3)) has equal mass between neighbours, the best cells for
a degree-p spline (p = k + 1 for k linear factors).

For n_in > 1 (a 1D idea stretched, documented in the README): unit i gets a random
unit direction w_i and a knot t_i on the projection w_i . x, at the quantile
(i + 0.5) / n of that projection, so the hyperplanes sweep through the data.  The
projection's quantiles come from `x_data` when given, else from a normal
approximation of x uniform on the box interval^n_in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from glu_scaling.errors import UsageError, check_choice, check_positive_int

FACINGS = ("alternate", "right", "left")
KNOT_PLACEMENTS = ("uniform", "placed")


def knots_1d(n, interval=(-1.0, 1.0), pad: float = 0.001, dtype=jnp.float32, width: int | None = None) -> jax.Array:
    """Evenly spaced knots t_i = (lo - pad) + i (hi - lo + 2 pad) / (n - 1); (width or n,).

    `n` may be a traced integer when `width` (static, >= n) is given; entries
    i >= n are then meaningless and must be masked by the caller.
    """
    lo, hi = interval
    width = n if width is None else width
    i = jnp.arange(width, dtype=dtype)
    step = (hi - lo + 2 * pad) / jnp.maximum(jnp.asarray(n, dtype) - 1, 1)
    return (lo - pad) + i * step


def pad_knots(t, width: int) -> np.ndarray:
    """Knots t (n,) padded to (width,) by repeating the last one (the padded units are masked)."""
    t = np.asarray(t, dtype=np.float64)
    return np.concatenate([t, np.full(width - t.shape[0], t[-1])])


def placed_knots(f, n: int, degree: int, interval=(-1.0, 1.0), pad: float = 0.001,
                 width: int | None = None) -> np.ndarray:
    """n knots placed for a smooth target f, padded to `width` (default n); (width,) float64.

    The knots are the n boundaries of n - 1 cells on [lo - pad, hi + pad] (`knots_1d`'s
    span) whose density is proportional to |f^(p+1)|^(2/(2p+3)), p = `degree`
    (`splines.equidistributed_breakpoints`; f must be defined on that span); n = 1 gives
    knots_1d's single knot lo - pad.  Where f^(p+1) is constant they are `knots_1d`'s.
    Entries n..width-1 repeat the last knot (those units are masked).  Host-side (numpy),
    so `n` is concrete.
    """
    from glu_scaling import splines  # scipy and the derivative tables load only when knots are placed

    n = check_positive_int("n", n)
    width = n if width is None else check_positive_int("width", width)
    if width < n:
        raise UsageError(f"width must be >= n = {n}, got {width}")
    lo, hi = interval
    if n == 1:
        t = np.array([lo - pad])
    else:
        t = splines.equidistributed_breakpoints(f, n - 1, degree, (lo - pad, hi + pad))
    return pad_knots(t, width)


def facing_signs(n: int, facing: str = "alternate", dtype=jnp.float32) -> jax.Array:
    """+1 for a unit opening to the right, -1 to the left; alternate starts right; (n,)."""
    check_choice("facing", facing, FACINGS)
    if facing == "right":
        return jnp.ones((n,), dtype)
    if facing == "left":
        return -jnp.ones((n,), dtype)
    return jnp.where(jnp.arange(n) % 2 == 0, 1.0, -1.0).astype(dtype)


def spline_gates(
    key: jax.Array,
    n,
    n_in: int,
    *,
    interval=(-1.0, 1.0),
    pad: float = 0.001,
    facing: str = "alternate",
    scale: float = 1.0,
    x_data: jax.Array | None = None,
    dtype=jnp.float32,
    width: int | None = None,
    directions: jax.Array | None = None,
    knots: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Gate weights and biases of the spline init: G (W, n_in), g (W,), W = width or n.

    Unit i's direction (n_in > 1) is a normal draw from fold_in(key, i), so a unit's
    gate does not depend on the padded width; `directions` (W, n_in) gives those draws
    instead (`key` is then unused).  `n` may be traced when `width` is given.
    `knots` (W,), 1D only: the knot positions (e.g. `placed_knots`) instead of `knots_1d`'s.
    """
    width = n if width is None else width
    sign = facing_signs(width, facing, dtype)
    if knots is not None and n_in != 1:
        raise UsageError(f"knots are positions on a line: they need n_in = 1, got n_in = {n_in}")
    if n_in == 1:
        t = knots_1d(n, interval, pad, dtype, width) if knots is None else jnp.asarray(knots, dtype)
        if t.shape != (width,):
            raise UsageError(f"knots must have shape ({width},), got {tuple(t.shape)}")
        return (scale * sign)[:, None], -scale * sign * t
    if directions is None:
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(width))
        directions = jax.vmap(lambda k: jax.random.normal(k, (n_in,), dtype))(keys)
    w = directions / jnp.linalg.norm(directions, axis=1, keepdims=True)
    levels = (jnp.arange(width, dtype=dtype) + 0.5) / jnp.asarray(n, dtype)
    levels = jnp.clip(levels, 0.0, 1.0)
    if x_data is not None:
        proj = jnp.asarray(x_data, dtype) @ w.T  # (N, W)
        t = jax.vmap(lambda p, q: jnp.quantile(p, q), in_axes=(1, 0))(proj, levels)
    else:
        lo, hi = interval
        mean = (lo + hi) / 2 * jnp.sum(w, axis=1)
        std = (hi - lo) / jnp.sqrt(12.0) * jnp.linalg.norm(w, axis=1)
        t = mean + std * ndtri(jnp.clip(levels, 1e-6, 1 - 1e-6))
    return scale * sign[:, None] * w, -scale * sign * t


def open_mask(G: jax.Array, g: jax.Array, x: jax.Array) -> jax.Array:
    """Which ReLU gates are open at which points: x (N, n_in) -> (N, n) booleans."""
    return x @ G.T + g > 0
