"""Shallow gated networks as pure functions: the "one gate times k linear factors" family.

For inputs x in R^dx, width n and outputs in R^dy, a model of the family with k factors is

    y = d + D^T [ act(G x + g) * (U_1 x + u_1) * ... * (U_k x + u_k) ]

with `*` elementwise over the n hidden units.  k = 0 is the MLP, k = 1 the GLU,
k = 2 the GQU (paper.md §2); "gatedK" names any k = K in 0..9.

Parameters live in a `Params` pytree (a registered dataclass, so jit/vmap/grad see
its arrays as leaves and its activation name as static metadata):

    G (W, dx), g (W,), U (k, W, dx), u (k, W), D (W, dy), d (dy,), mask (W,)

W >= n is the padded width; `mask` is 1 for the n real units and 0 for padding.
Masked units contribute exactly zero to `apply`, whatever their parameters hold,
so one compiled function serves every width up to W.

For Newton training each unit's parameters are packed into one row of length
`unit_size(k, dx, dy) = (k + 1)(dx + 1) + dy`, laid out as
[G_i, g_i, U_1i, u_1i, ..., U_ki, u_ki, D_i]; see `pack_units` / `unpack_units`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from glu_scaling import spline_init as _spline
from glu_scaling.errors import UsageError, check_choice, check_interval, check_positive_int, unknown

NAMED_ARCHS = {"mlp": 0, "glu": 1, "gqu": 2}


def _gelu_exact(z):
    return jax.nn.gelu(z, approximate=False)


ACTIVATIONS: dict[str, Callable] = {
    "relu": jax.nn.relu,
    "gelu": _gelu_exact,
    "silu": jax.nn.silu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
}

_GATED_K = re.compile(r"gated(\d)")


def accepted_archs() -> list[str]:
    return [*NAMED_ARCHS, "gatedK (K = 0..9 linear factors)"]


# How the linear factors after the first start (gqu, gatedK with K >= 2):
#   "one"     U_j = 0, u_j = 1 for j >= 2: every unit starts as the GLU's unit, so the
#             spline stages fit the best GLU on the frozen gates ({U_1, u_1}) before each
#             later factor multiplies in a linear correction ({U_j, u_j}) -- on the same
#             gates the frozen model's training error is then never above the GLU's
#             (`tests/test_sweep.py`);
#   "random"  N(0, 1) like U_1 and u_1 (the reference's GQU): the stage on U_1 then fits
#             around a random root of U_2 x + u_2 (README, "Later factors").
FACTOR_INITS = ("one", "random")


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


def n_factors(arch: str) -> int:
    """Number k of linear factors multiplying the gate: mlp 0, glu 1, gqu 2, gatedK K."""
    if arch in NAMED_ARCHS:
        return NAMED_ARCHS[arch]
    match = _GATED_K.fullmatch(arch) if isinstance(arch, str) else None
    if match is None:
        raise unknown("architecture", arch, accepted_archs(),
                      candidates=[*NAMED_ARCHS, *(f"gated{k}" for k in range(10))])
    return int(match.group(1))


def activation_fn(name: str) -> Callable:
    check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]


@dataclasses.dataclass(frozen=True)
class Params:
    """Parameters of one model (or a batch of models, with leading batch axes).

    Shapes for one model of padded width W, dx inputs, dy outputs and k factors:
    G (W, dx), g (W,), U (k, W, dx), u (k, W), D (W, dy), d (dy,), mask (W,).
    `activation` is static metadata (a name from `ACTIVATIONS`).
    """

    G: jax.Array
    g: jax.Array
    U: jax.Array
    u: jax.Array
    D: jax.Array
    d: jax.Array
    mask: jax.Array
    activation: str = "relu"

    @property
    def width(self) -> int:
        return self.mask.shape[-1]

    @property
    def n_factors(self) -> int:
        return self.U.shape[-3]

    @property
    def n_in(self) -> int:
        return self.G.shape[-1]

    @property
    def n_out(self) -> int:
        return self.D.shape[-1]

    def replace(self, **changes) -> Params:
        return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(
    Params,
    data_fields=["G", "g", "U", "u", "D", "d", "mask"],
    meta_fields=["activation"],
)


def param_count(arch: str, n_in: int, n_hidden: int, n_out: int) -> int:
    """Trainable parameters of an unpadded model: ((k+1)(n_in+1) + n_out) n_hidden + n_out."""
    k = n_factors(arch)
    for kind, value in (("n_in", n_in), ("n_hidden", n_hidden), ("n_out", n_out)):
        check_positive_int(kind, value)
    return unit_size(k, n_in, n_out) * n_hidden + n_out


def unit_size(k: int, n_in: int, n_out: int) -> int:
    """Length of one packed unit row [G_i, g_i, U_1i, u_1i, ..., D_i]."""
    return (k + 1) * (n_in + 1) + n_out


def default_float():
    """float64 when jax_enable_x64 is on, else float32 (what jnp.zeros(()) would give)."""
    return jnp.zeros(()).dtype


def check_float_dtype(dtype) -> jnp.dtype:
    """`dtype` (None: `default_float()`) as a float32 / float64 dtype; float64 with
    jax_enable_x64 off is refused, never silently downgraded to float32."""
    if dtype is None:
        return default_float()
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        dtype = None
    if dtype not in (jnp.float32, jnp.float64):
        raise UsageError(f"dtype must be float32 or float64, got {dtype!r}")
    if dtype == jnp.float64 and default_float() != jnp.float64:
        raise UsageError("dtype float64 requested but jax_enable_x64 is off; "
                         "enable it with jax.config.update('jax_enable_x64', True)")
    return dtype


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
      spline_init: gates from the spline ("MASO") init (`spline_init.spline_gates`);
        otherwise G, g ~ N(0, 1) like every other parameter.
      width: padded width W >= n_hidden (default n_hidden).
      interval, knot_pad, facing, gate_scale, x_data: spline-init options, see
        `spline_init.spline_gates`.
      knots: (n_hidden,) knot positions for a 1D spline init (e.g.
        `spline_init.placed_knots`); default evenly spaced (`spline_init.knots_1d`).
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
        knots = _spline.pad_knots(knots, width)
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
    about 2x faster than the 3-D (models, units, row) ones.  With the partitionable
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
    init's knot positions (`spline_init.spline_gates`), possibly traced.  `factor_init`
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
        G, g = _spline.spline_gates(
            None, n_hidden, n_in, interval=interval, pad=knot_pad, facing=facing,
            scale=gate_scale, x_data=x_data, dtype=dtype, width=width, directions=draws.directions,
            knots=knots,
        )
    mask = (jnp.arange(width) < n_hidden).astype(dtype)
    params = Params(G=G, g=g, U=jnp.moveaxis(U, 0, 1), u=u.T, D=D, d=draws.d, mask=mask, activation=activation)
    return zero_masked(params)


def zero_masked(params: Params) -> Params:
    """Set every parameter of the masked units to zero."""
    m = params.mask > 0
    return params.replace(
        G=jnp.where(m[..., None], params.G, 0), g=jnp.where(m, params.g, 0),
        U=jnp.where(m[..., None, :, None], params.U, 0), u=jnp.where(m[..., None, :], params.u, 0),
        D=jnp.where(m[..., None], params.D, 0),
    )


def pad(params: Params, width: int) -> Params:
    """Pad a model to `width` units with zero, masked units (no effect on `apply`)."""
    extra = width - params.width
    if extra < 0:
        raise UsageError(f"cannot pad width {params.width} down to {width}")
    if extra == 0:
        return params

    def grow(a, axis):
        widths = [(0, 0)] * a.ndim
        widths[axis] = (0, extra)
        return jnp.pad(a, widths)

    return params.replace(
        G=grow(params.G, -2), g=grow(params.g, -1), U=grow(params.U, -2), u=grow(params.u, -1),
        D=grow(params.D, -2), mask=grow(params.mask, -1),
    )


def with_constant_factors(params: Params, k: int) -> Params:
    """The same model with k factors: factors n_factors + 1 .. k are the constant 1
    (U = 0, u = 1), so `apply` gives exactly the same numbers (products with 1.0 are
    exact).  Leaves may carry leading batch axes.  Lets models of several
    architectures share one compiled `newton-splines` program (`train.train_batch`'s
    `factors`); `without_constant_factors` undoes it."""
    extra = k - params.n_factors
    if extra < 0:
        raise UsageError(f"cannot pad {params.n_factors} factors down to {k}")
    U_shape = (*params.U.shape[:-3], extra, *params.U.shape[-2:])
    u_shape = (*params.u.shape[:-2], extra, params.u.shape[-1])
    return params.replace(U=jnp.concatenate([params.U, jnp.zeros(U_shape, params.U.dtype)], axis=-3),
                          u=jnp.concatenate([params.u, jnp.ones(u_shape, params.u.dtype)], axis=-2))


def without_constant_factors(params: Params, k: int) -> Params:
    """The model's first k factors only (undoes `with_constant_factors`); leaves may carry
    leading batch axes."""
    return params.replace(U=params.U[..., :k, :, :], u=params.u[..., :k, :])


def unpad(params: Params) -> Params:
    """Drop masked units (host-side; needs concrete arrays)."""
    keep = jnp.asarray(params.mask) > 0
    return params.replace(
        G=params.G[keep], g=params.g[keep], U=params.U[:, keep], u=params.u[:, keep],
        D=params.D[keep], mask=params.mask[keep],
    )


# up to this many inputs, `affine` multiplies and adds instead of calling a matmul
FEW_INPUTS = 8


def affine(x: jax.Array, weight: jax.Array, bias: jax.Array) -> jax.Array:
    """x @ weight.T + bias for x (N, dx), weight (W, dx), bias (W,) -> (N, W).

    With few inputs (dx <= FEW_INPUTS, every problem of the paper) it is dx broadcast
    multiply-adds, which XLA fuses into whatever consumes them; a matmul with an inner
    size of a few is a kernel call of its own and a (N, W) array written and read back.
    """
    if x.shape[1] > FEW_INPUTS:
        return x @ weight.T + bias
    out = x[:, :1] * weight[:, 0]
    for m in range(1, x.shape[1]):
        out = out + x[:, m:m + 1] * weight[:, m]
    return out + bias


def hidden(params: Params, x: jax.Array) -> jax.Array:
    """Hidden activations act(Gx+g) * prod_j (U_j x + u_j), masked; x (N, dx) -> (N, W)."""
    if jnp.ndim(x) != 2 or jnp.shape(x)[1] != jnp.shape(params.G)[-1]:
        raise UsageError(f"x must have shape (N, {jnp.shape(params.G)[-1]}), got {tuple(jnp.shape(x))}")
    act = activation_fn(params.activation)
    h = act(affine(x, params.G, params.g))
    for j in range(params.n_factors):
        h = h * affine(x, params.U[j], params.u[j])
    return jnp.where(params.mask > 0, h, 0.0)


def _check_arch(arch: str, params: Params) -> None:
    k = n_factors(arch)
    if k != params.n_factors:
        raise UsageError(f"architecture {arch!r} has {k} linear factors but params carry {params.n_factors}")


def apply(arch: str, params: Params, x: jax.Array) -> jax.Array:
    """Evaluate one model: x (N, n_in) -> y (N, n_out). Padded units have no effect."""
    if not isinstance(params, Params):
        raise UsageError(f"params must be a models.Params (from init), got {type(params).__name__}")
    _check_arch(arch, params)
    if jnp.ndim(params.G) != 2:
        raise UsageError(f"apply evaluates one model, but params carry leading batch axes "
                         f"{tuple(jnp.shape(params.G)[:-2])}; for a batch use "
                         "jax.vmap(lambda p: apply(arch, p, x))(params)")
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != params.n_in:
        raise UsageError(f"x must have shape (N, {params.n_in}), got {tuple(x.shape)}")
    return params.d + hidden(params, x) @ params.D


def count_trainable(params: Params) -> int:
    """Parameters of the unmasked units plus d (what `param_count` predicts)."""
    n = int(jnp.sum(jnp.asarray(params.mask) > 0))
    return unit_size(params.n_factors, params.n_in, params.n_out) * n + params.n_out


# ---------------------------------------------------------------- packed unit rows


def pack_units(params: Params) -> jax.Array:
    """One row per unit: [G_i, g_i, U_1i, u_1i, ..., U_ki, u_ki, D_i]; (W, unit_size)."""
    cols = [params.G, params.g[:, None]]
    for j in range(params.n_factors):
        cols += [params.U[j], params.u[j][:, None]]
    cols.append(params.D)
    return jnp.concatenate(cols, axis=1)


def unpack_units(template: Params, rows: jax.Array, d: jax.Array | None = None) -> Params:
    """Inverse of `pack_units`: new Params with unit rows (W, unit_size) and optional d."""
    dx = template.n_in
    G, g = rows[:, :dx], rows[:, dx]
    U, u = [], []
    for j in range(1, template.n_factors + 1):
        start = j * (dx + 1)
        U.append(rows[:, start:start + dx])
        u.append(rows[:, start + dx])
    k = template.n_factors
    D = rows[:, (k + 1) * (dx + 1):]
    U = jnp.stack(U) if U else jnp.zeros((0,) + G.shape, rows.dtype)
    u = jnp.stack(u) if u else jnp.zeros((0, G.shape[0]), rows.dtype)
    return template.replace(G=G, g=g, U=U, u=u, D=D, d=template.d if d is None else d)


def unit_output(row: jax.Array, x: jax.Array, *, k: int, n_in: int, activation: str) -> jax.Array:
    """Contribution of one unit: row (unit_size,), x (n_in,) -> (n_out,)."""
    act = activation_fn(activation)
    h = act(row[:n_in] @ x + row[n_in])
    for j in range(1, k + 1):
        start = j * (n_in + 1)
        h = h * (row[start:start + n_in] @ x + row[start + n_in])
    return h * row[(k + 1) * (n_in + 1):]


def group_columns(k: int, n_in: int, n_out: int, group: str) -> list[int]:
    """Columns of a packed unit row that belong to a parameter group.

    Groups: "gate" ({G, g}), "factor1".."factorK" ({U_j, u_j}; "U" and "Q" alias
    factor1 and factor2 as in the paper), "out" ({D}; d goes with it).
    """
    aliases = {"U": "factor1", "Q": "factor2"}
    given, group = group, aliases.get(group, group)
    if group == "gate":
        return list(range(0, n_in + 1))
    if group == "out":
        start = (k + 1) * (n_in + 1)
        return list(range(start, start + n_out))
    match = re.fullmatch(r"factor(\d+)", group)
    if match and 1 <= int(match.group(1)) <= k:
        j = int(match.group(1))
        return list(range(j * (n_in + 1), (j + 1) * (n_in + 1)))
    accepted = ["gate", "out"] + [f"factor{j}" for j in range(1, k + 1)]
    raise UsageError(f"unknown parameter group {given!r} for k={k}; accepted: {', '.join(accepted)}")
