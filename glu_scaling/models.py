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
import functools
import re
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from glu_scaling.errors import UsageError, check_choice, check_positive_int, unknown

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

    # The training engine's view of a model (`newton`, `train`), shared with `units.UnitParams`:
    # y = d + sum of units, each unit's parameters one packed row.

    @property
    def dtype(self):
        return self.G.dtype

    @property
    def layout(self) -> Layout:
        """How a packed unit row splits into parameter groups (`gated_layout`)."""
        return gated_layout(self.n_factors, self.n_in, self.n_out, self.activation)

    def rows(self) -> jax.Array:
        """The packed unit rows (W, unit_size) (`pack_units`)."""
        return pack_units(self)

    def with_rows(self, rows: jax.Array, d: jax.Array | None = None) -> Params:
        """The same model with new unit rows (W, unit_size) and optionally a new d (`unpack_units`)."""
        return unpack_units(self, rows, d)

    def output(self, x: jax.Array) -> jax.Array:
        """y = d + hidden(x) D; x (N, n_in) -> (N, n_out), without `apply`'s checks."""
        return self.d + hidden(self, x) @ self.D


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


class Group(NamedTuple):
    """A parameter group of a unit row: the gate {G, g} ("gate"), linear factor j
    {U_j, u_j} ("factor", j >= 1), or the output {D} with the bias d ("out").

    The Newton schedules move parameters group by group (`train`); with the others
    fixed the output is linear in every group but the gate (`linear`), which makes that
    group's Newton step one linear least-squares solve.
    """

    kind: str
    index: int = 0

    @property
    def linear(self) -> bool:
        return self.kind != "gate"

    @classmethod
    def parse(cls, name: str, k: int) -> Group:
        """The group a user names: "gate", "factor1".."factorK" ("U" and "Q" alias factor1
        and factor2 as in the paper) or "out"; anything else is a UsageError."""
        aliases = {"U": "factor1", "Q": "factor2"}
        text = aliases.get(name, name) if isinstance(name, str) else ""
        match = re.fullmatch(r"factor(\d+)", text)
        if text in ("gate", "out"):
            return cls(text)
        if match and 1 <= int(match.group(1)) <= k:
            return factor(int(match.group(1)))
        accepted = ["gate", "out"] + [f"factor{j}" for j in range(1, k + 1)]
        raise UsageError(f"unknown parameter group {name!r} for k={k}; accepted: {', '.join(accepted)}")

    def __str__(self) -> str:
        return f"factor{self.index}" if self.kind == "factor" else self.kind


GATE = Group("gate")
OUT = Group("out")


def factor(j: int) -> Group:
    """Linear factor j's group {U_j, u_j} (j = 1..k)."""
    return Group("factor", j)


def all_groups(k: int) -> tuple[Group, ...]:
    """Every parameter group of a model with k linear factors, in row order."""
    return (GATE, *[factor(j) for j in range(1, k + 1)], OUT)


def group_columns(k: int, n_in: int, n_out: int, group: Group) -> list[int]:
    """Columns of a packed unit row [G_i, g_i, U_1i, u_1i, ..., D_i] that belong to `group`."""
    if group not in all_groups(k):
        raise UsageError(f"no parameter group {group} in a model with k={k} factors")
    return gated_layout(k, n_in, n_out).columns(group)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one packed unit row splits into parameter groups: what the Newton schedules need
    to know of an architecture (static, hashable).

    groups: every group, in row order; sizes: their lengths (sum = the row length).
    cascade: the groups the output is linear in (with the others fixed), in the order the
      spline stages solve them, each by one linear least-squares step.
    gate: the group that holds the gate (the knot), which gets the gate stage; or None.
    d_group: the group the output bias d moves with (None: d moves only with every group).
    degree: the piecewise-polynomial degree p of the output in x when the gate is an affine
      knot (weight, bias) on one input, the unit opening at x = -bias / weight; else None.
      The knot-moving stage (`schedules.KnotStage`) needs it.
    """

    groups: tuple[Group, ...]
    sizes: tuple[int, ...]
    cascade: tuple[Group, ...]
    gate: Group | None = None
    d_group: Group | None = None
    degree: int | None = None

    def __post_init__(self):
        if len(self.groups) != len(self.sizes) or len(set(self.groups)) != len(self.groups):
            raise UsageError(f"a layout needs one size per group and distinct groups, got groups "
                             f"{[str(g) for g in self.groups]} and sizes {list(self.sizes)}")
        for group in (*self.cascade, *(g for g in (self.gate, self.d_group) if g is not None)):
            if group not in self.groups:
                raise UsageError(f"group {str(group)!r} is not one of the unit's groups "
                                 f"{[str(g) for g in self.groups]}")

    @property
    def size(self) -> int:
        """Length of one packed unit row."""
        return sum(self.sizes)

    def columns(self, group: Group) -> list[int]:
        """Columns of a packed unit row that belong to `group`."""
        if group not in self.groups:
            raise UsageError(f"no parameter group {group} in a unit of groups {[str(g) for g in self.groups]}")
        i = self.groups.index(group)
        start = sum(self.sizes[:i])
        return list(range(start, start + self.sizes[i]))

    def linear(self, group: Group) -> bool:
        """Whether the output is linear in `group` with the others fixed."""
        return group in self.cascade

    @property
    def knots(self) -> bool:
        """Whether the units have knots that can move: a 1D affine gate and a degree."""
        return self.gate is not None and self.degree is not None and len(self.columns(self.gate)) == 2


@functools.lru_cache(maxsize=256)
def gated_layout(k: int, n_in: int, n_out: int, activation: str = "relu") -> Layout:
    """The gated family's row [G_i, g_i, U_1i, u_1i, ..., U_ki, u_ki, D_i]: the gate, k factors
    and the output, solved out, factor 1, ..., factor k in the spline stages; d moves with D.
    With relu (and one input) the output is a spline of degree k + 1 in x, knots -g_i / G_i."""
    groups = all_groups(k)
    degree = k + 1 if activation == "relu" and n_in == 1 else None
    return Layout(groups, (n_in + 1,) * (k + 1) + (n_out,), cascade=(OUT, *groups[1:-1]), gate=GATE, d_group=OUT,
                  degree=degree)
