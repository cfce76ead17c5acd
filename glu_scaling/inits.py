"""Initialisation: a model's start, its spline-init gates, placed knots, batched draws.

Spline ("MASO") gates (paper.md §3): in 1D unit i gets G_i = s * sigma_i and
g_i = -s * sigma_i * t_i, so act(G_i x + g_i) opens at the knot t_i, facing right
(sigma_i = +1, open for x > t_i) or left (sigma_i = -1, open for x < t_i).  The knots
tile [lo - pad, hi + pad] evenly (the reference's linspace(-1.001, 1.001, n), alternating
facing), or are placed for a known target f (`placed_knots`): where |f^(p+1)|^(2/(2p+3))
has equal mass between neighbours, the best cells for a degree-p spline (p = k + 1).

For n_in > 1, unit i gets a random unit direction w_i and a knot at the (i + 0.5)/n
quantile of the projection w_i . x (from `x_data`, else a normal approximation of x
uniform on the box), so the hyperplanes sweep through the data.

Every random number of a model comes from one draw per unit row (`init_draws`), so a
model's real units are the same at any padded width, and a sweep's bucket draws all its
models in one compiled call (`init_batch`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from glu_scaling import compilation, problems
from glu_scaling.errors import UsageError, check_choice, check_interval, check_positive_int
from glu_scaling.knots import equidistributed_breakpoints
from glu_scaling.models import (
    Params,
    activation_fn,
    check_float_dtype,
    n_factors,
    unit_size,
    with_constant_factors,
    zero_masked,
)

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
    (`knots.equidistributed_breakpoints`; f must be defined on that span); n = 1 gives
    knots_1d's single knot lo - pad.  Where f^(p+1) is constant they are `knots_1d`'s.
    Entries n..width-1 repeat the last knot (those units are masked).  Host-side (numpy),
    so `n` is concrete.
    """
    n = check_positive_int("n", n)
    width = n if width is None else check_positive_int("width", width)
    if width < n:
        raise UsageError(f"width must be >= n = {n}, got {width}")
    lo, hi = interval
    if n == 1:
        t = np.array([lo - pad])
    else:
        t = equidistributed_breakpoints(f, n - 1, degree, (lo - pad, hi + pad))
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


# How the linear factors after the first start (gqu, gatedK with K >= 2):
#   "one"     U_j = 0, u_j = 1 for j >= 2: every unit starts as the GLU's unit, so the
#             spline stages fit the best GLU on the frozen gates ({U_1, u_1}) before each
#             later factor multiplies in a linear correction ({U_j, u_j}) -- on the same
#             gates the frozen model's training error is then never above the GLU's
#             (`tests/test_sweep.py`);
#   "random"  N(0, 1) like U_1 and u_1 (the reference's GQU): the stage on U_1 then fits
#             around a random root of U_2 x + u_2 (docs/investigations.md).
FACTOR_INITS = ("one", "random")


@dataclasses.dataclass(frozen=True)
class InitConfig:
    """How a sweep's models start: one choice in three parts, checked here once.

    spline_init: gates from the spline init (`spline_gates`), or N(0, 1) like the rest.
    knots: the 1D spline init's knots, "uniform" (evenly spaced) or "placed" for the
      problem's target (`placed_knots`; the sweep checks the problem has one).
    factor_init: how factors 2..k start (`FACTOR_INITS`).
    """

    spline_init: bool = True
    knots: str = "uniform"
    factor_init: str = "one"

    def __post_init__(self):
        if not isinstance(self.spline_init, bool | np.bool_):
            raise UsageError(f"spline_init must be True or False, got {self.spline_init!r}")
        check_choice("knots", self.knots, KNOT_PLACEMENTS)
        check_choice("factor_init", self.factor_init, FACTOR_INITS)
        if self.knots == "placed" and not self.spline_init:
            raise UsageError("knots 'placed' positions the spline init's knots; it cannot go with the random init "
                             "(--random-init)")


def has_later_factors(archs) -> bool:
    """Whether any of `archs` has a second factor, i.e. whether `factor_init` changes its
    models; a name that is not an architecture (a hand-edited config) counts as one."""
    for arch in archs:
        try:
            if n_factors(arch) >= 2:
                return True
        except (UsageError, TypeError):
            return True
    return False


def init(
    key: jax.Array,
    arch: str,
    n_in: int,
    n_hidden: int,
    n_out: int,
    *,
    activation: str = "relu",
    spline_init: bool = True,
    width: int | None = None,
    interval: tuple[float, float] = (-1.0, 1.0),
    knot_pad: float = 0.001,
    facing: str = "alternate",
    gate_scale: float = 1.0,
    x_data: jax.Array | None = None,
    knots=None,
    dtype=None,
    factor_init: str = "one",
) -> Params:
    """Initialise one model, optionally padded to `width` masked units.

    Args:
      key: PRNG key.
      arch: "mlp", "glu", "gqu" or "gatedK".
      n_in, n_hidden, n_out: input dimension, number of real hidden units, outputs.
      activation: gate activation, one of `ACTIVATIONS`.
      spline_init: gates from the spline ("MASO") init (`spline_gates`);
        otherwise G, g ~ N(0, 1) like every other parameter.
      width: padded width W >= n_hidden (default n_hidden).
      interval, knot_pad, facing, gate_scale, x_data: spline-init options, see
        `spline_gates`.
      knots: (n_hidden,) knot positions for a 1D spline init (e.g.
        `placed_knots`); default evenly spaced (`knots_1d`).
      dtype: float dtype (default: float64 if jax_enable_x64, else float32).
      factor_init: how factors 2..k start (`FACTOR_INITS`): "one" (the constant 1,
        U_j = 0 and u_j = 1, default) or "random" (N(0, 1), as the reference's GQU).

    Returns:
      Params with G (W, n_in), g (W,), U (k, W, n_in), u (k, W), D (W, n_out),
      d (n_out,), mask (W,); units n_hidden..W-1 are zero and masked.
    """
    k = n_factors(arch)
    activation_fn(activation)
    n_hidden = check_positive_int("n_hidden", n_hidden)
    n_in = check_positive_int("n_in", n_in)
    n_out = check_positive_int("n_out", n_out)
    width = n_hidden if width is None else check_positive_int("width", width)
    if width < n_hidden:
        raise UsageError(f"width must be >= n_hidden={n_hidden}, got {width}")
    dtype = check_float_dtype(dtype)
    check_choice("factor_init", factor_init, FACTOR_INITS)
    interval = check_interval(interval)
    for name, value, positive in (("knot_pad", knot_pad, False), ("gate_scale", gate_scale, True)):
        try:
            number = None if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            number = None
        if number is None or not np.isfinite(number) or number < 0 or (positive and number == 0):
            raise UsageError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    if x_data is not None:
        x_data = np.asarray(x_data)
        if x_data.ndim != 2 or x_data.shape[1] != n_in or not np.all(np.isfinite(x_data)):
            raise UsageError(f"x_data must be finite with shape (N, {n_in}), got shape {x_data.shape}")
    if knots is not None:
        knots = np.asarray(knots, dtype=np.float64)
        if not spline_init or n_in != 1 or knots.shape != (n_hidden,) or not np.all(np.isfinite(knots)):
            raise UsageError(f"knots must be {n_hidden} finite positions (shape ({n_hidden},)) for a 1D spline "
                             f"init, got shape {knots.shape} with n_in={n_in}, spline_init={spline_init}")
        knots = pad_knots(knots, width)
    return init_masked(
        key, k, n_in, n_hidden, n_out, width, activation=activation, spline_init=spline_init,
        interval=interval, knot_pad=knot_pad, facing=facing, gate_scale=gate_scale,
        x_data=x_data, dtype=dtype, knots=knots, factor_init=factor_init,
    )


class InitDraws(NamedTuple):
    """Every random number `init_masked` uses, drawn apart from the model (`init_draws`).

    units (W, m): unit i's N(0, 1) row from fold_in(k_units, i), m >= unit_size;
    d (n_out,): the output bias; directions (W, n_in): unit i's gate direction draw
    from fold_in(k_gate, i) (used by the spline init when n_in > 1).
    """

    units: jax.Array
    d: jax.Array
    directions: jax.Array


def init_draws(key, n_in: int, n_out: int, width: int, size: int, dtype=jnp.float32) -> InitDraws:
    """The random draws of `init_masked` with `size` numbers per unit row (>= unit_size).

    With JAX's partitionable threefry (its default), element j of a draw does not
    depend on the draw's length, so the first unit_size(k, ...) columns of a wider
    draw are exactly a model's own: one compiled draw serves every k of a sweep
    (compiling the random-bit generator is the slow part of an init on a CPU).
    One key's draws are `init_draws_batch` of a batch of one.
    """
    return jax.tree.map(lambda a: a[0], init_draws_batch(jnp.expand_dims(key, 0), n_in, n_out, width, size, dtype))


def init_draws_batch(keys, n_in: int, n_out: int, width: int, size: int, dtype=jnp.float32) -> InitDraws:
    """`init_draws` for a batch of keys (B, 2) (or B typed keys): leaves with a leading B axis.

    Key b's draws are exactly `init_draws(keys[b], ...)`: unit i's row comes from
    fold_in(k_units, i), its gate direction from fold_in(k_gate, i), the output bias from
    k_bias, with (k_gate, k_units, k_bias) = split(keys[b], 3).  The per-unit keys of all
    models are drawn from as one flat batch (M keys, one row each) rather than under a
    vmap over models: the generator then runs on 2-D arrays, which XLA:CPU compiles
    faster than the 3-D (models, units, row) ones.  With the partitionable
    threefry, the unit rows, directions and biases are the first columns of one draw.
    """
    n_keys = keys.shape[0]
    k_gate, k_units, k_bias = jnp.moveaxis(jax.vmap(lambda k: jax.random.split(k, 3))(keys), 1, 0)
    idx = jnp.arange(width)

    def unit_keys(base):  # (B, ...) -> (B W, ...): fold_in(base_b, i), model-major
        folded = jax.vmap(lambda k: jax.vmap(lambda i: jax.random.fold_in(k, i))(idx))(base)
        return folded.reshape((n_keys * width,) + folded.shape[2:])

    def normals(flat_keys, length):
        return jax.vmap(lambda k: jax.random.normal(k, (length,), dtype))(flat_keys)

    if jax.config.jax_threefry_partitionable:  # one generator call for everything
        m = n_keys * width
        z = normals(jnp.concatenate([unit_keys(k_units), unit_keys(k_gate), k_bias]), max(size, n_in, n_out))
        units, directions, d = z[:m, :size], z[m:2 * m, :n_in], z[2 * m:, :n_out]
    else:  # a draw's numbers depend on its length: each at its own
        units, directions = normals(unit_keys(k_units), size), normals(unit_keys(k_gate), n_in)
        d = normals(k_bias, n_out)
    return InitDraws(units.reshape(n_keys, width, size), d, directions.reshape(n_keys, width, n_in))


def init_masked(key, k: int, n_in: int, n_hidden, n_out: int, width: int, *, activation="relu",
                spline_init=True, interval=(-1.0, 1.0), knot_pad=0.001, facing="alternate",
                gate_scale=1.0, x_data=None, dtype=jnp.float32, draws: InitDraws | None = None,
                knots=None, factor_init: str = "one") -> Params:
    """`init` without argument checks, with `n_hidden` possibly traced (jit/vmap-able).

    Unit i draws its packed row [G_i, g_i, U_1i, u_1i, ..., D_i] ~ N(0, 1) from
    fold_in(key, i) in one call, so a model's real units are
    the same whatever width it is padded to: init(key, ..., width=W) equals
    pad(init(key, ...), W) exactly.  `draws` (from `init_draws(key, ...)`) replaces the
    drawing, with the same result; `key` is then unused.  `knots` (width,): the 1D spline
    init's knot positions (`spline_gates`), possibly traced.  `factor_init`
    "one" replaces the draws of factors 2..k by the constant 1 (`FACTOR_INITS`).
    """
    p = unit_size(k, n_in, n_out)
    if draws is None:
        draws = init_draws(key, n_in, n_out, width, p, dtype)
    if draws.units.shape != (width, draws.units.shape[1]) or draws.units.shape[1] < p:
        raise UsageError(f"draws.units must be ({width}, >= {p}) for k={k}, n_in={n_in}, n_out={n_out}, "
                         f"got {draws.units.shape}")
    z = draws.units[:, :p]
    G, g = z[:, :n_in], z[:, n_in]
    U = z[:, n_in + 1:(k + 1) * (n_in + 1)].reshape(width, k, n_in + 1)
    U, u, D = U[:, :, :n_in], U[:, :, n_in], z[:, (k + 1) * (n_in + 1):]
    if factor_init == "one":  # factors 2..k: U_j x + u_j = 1
        later = jnp.arange(k) >= 1
        U, u = jnp.where(later[:, None], 0.0, U).astype(dtype), jnp.where(later, 1.0, u).astype(dtype)
    if spline_init:
        G, g = spline_gates(
            None, n_hidden, n_in, interval=interval, pad=knot_pad, facing=facing,
            scale=gate_scale, x_data=x_data, dtype=dtype, width=width, directions=draws.directions,
            knots=knots,
        )
    mask = (jnp.arange(width) < n_hidden).astype(dtype)
    params = Params(G=G, g=g, U=jnp.moveaxis(U, 0, 1), u=u.T, D=D, d=draws.d, mask=mask, activation=activation)
    return zero_masked(params)


@functools.lru_cache(maxsize=4096)
def _placed_knots(problem: str, degree: int, n: int) -> tuple[float, ...]:
    return tuple(placed_knots(problems.scalar_target(problem), n, degree))


def knot_table(knots: str, problem: str, arch: str, n_hidden: Sequence[int], width: int,
               degree: int | None = None) -> np.ndarray | None:
    """The spline init's knots of each model of a bucket, (B, width): for `knots` "placed",
    `placed_knots` for f = `problem`'s target and degree k + 1 (or `degree`, for an
    architecture of the gated family's name or not); None for "uniform" (the init spaces
    them evenly itself)."""
    if knots == "uniform":
        return None
    degree = n_factors(arch) + 1 if degree is None else degree
    rows = [_placed_knots(problem, degree, int(n)) for n in n_hidden]
    return np.stack([pad_knots(row, width) for row in rows])


def init_batch(seeds, n_hidden, *, k, n_in, n_out, width, activation, spline_init, dtype, knots=None,
                factors_to=None, factor_init="one"):
    """Models for (seed_b, n_hidden_b) pairs, each padded to `width`; leaves have a leading B axis.
    knots (B, width): each model's 1D spline-init knots (`knot_table`; None: evenly spaced).
    factors_to: pad them to this many factors with constant ones (`with_constant_factors`,
    for a shared program: `shared_factors`), in the same compiled call.
    factor_init: how factors 2..k start (`FACTOR_INITS`).

    The random draws are one compiled call shared by every architecture up to the GQU
    (`draw_batch`, `init_draws`), the models another (`assemble_batch`): a
    sweep over mlp, glu and gqu compiles the random-bit generator once, not three times.
    """
    draws = draw_batch(seeds, **draw_kwargs(k, n_in, n_out, width, dtype))
    return assemble_batch(n_hidden, draws, knots, k=k, n_in=n_in, n_out=n_out, width=width,
                           activation=activation, spline_init=spline_init, dtype=dtype, factors_to=factors_to,
                           factor_init=factor_init)


def draw_kwargs(k: int, n_in: int, n_out: int, width: int, dtype) -> dict:
    """`draw_batch`'s static arguments.  Its draw per unit holds enough normals for a GQU
    (k = 2) whenever a draw's first columns do not depend on its length (JAX's
    partitionable threefry), so architectures up to the GQU share it; else exactly unit_size."""
    size = unit_size(k, n_in, n_out)
    if jax.config.jax_threefry_partitionable:
        size = max(size, unit_size(2, n_in, n_out))
    return dict(n_in=n_in, n_out=n_out, width=width, size=size, dtype=dtype)


@compilation.jit_with(brief=True, static_argnames=("n_in", "n_out", "width", "size", "dtype"))
def draw_batch(seeds, *, n_in, n_out, width, size, dtype) -> InitDraws:
    return init_draws_batch(jax.vmap(jax.random.PRNGKey)(seeds), n_in, n_out, width, size, dtype)


@compilation.jit_with(brief=True, static_argnames=("k", "n_in", "n_out", "width", "activation", "spline_init",
                                                  "dtype", "factors_to", "factor_init"))
def assemble_batch(n_hidden, draws, knots, *, k, n_in, n_out, width, activation, spline_init, dtype,
                    factors_to=None, factor_init="one"):
    def one(n, z, t):
        return init_masked(None, k, n_in, n, n_out, width, activation=activation, spline_init=spline_init,
                                  dtype=dtype, draws=z, knots=t, factor_init=factor_init)

    params = jax.vmap(one)(n_hidden, draws, knots)
    return params if factors_to is None else with_constant_factors(params, factors_to)
