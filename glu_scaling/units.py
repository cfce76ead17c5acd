"""Bring your own architecture: a shallow model y = d + sum_i unit(theta_i, x), declared as data.

An architecture (`Unit`) says, as plain data and one pure function:

* its parameter groups in row order, each with a size: "affine" (n_in weights then a
  bias, n_in + 1), "out" (n_out), "in" (n_in) or an int;
* `unit(parts, x) -> (n_out,)`: one unit's output at one point x (n_in,), with `parts`
  the unit's parameter row split into its groups (a dict name -> 1-D array);
* `linear`: the groups the output is linear in (the others fixed), in the order the
  spline stages solve them by one least-squares step each;
* `gate`: the group that holds the gate (its knot): it gets the spline init (an "affine"
  gate only) and `newton-cascade`'s gate stage; `out`: the group the output bias d moves
  with; `degree`: the piecewise-polynomial degree p, when there is one (1D order -(p + 1)).

The training engine (`newton`, `train`) builds each unit's Jacobian and its per-unit
Hessian block by autodiff of `unit` (`UnitParams.derivatives`), with the same damping
ladder, line search, stages, batching, padding masks and sharding as the gated family,
whose closed-form derivatives stay its fast path (`models.Params`).  A sweep accepts a
`Unit`, the name of a registered one, or "module:NAME" for a `Unit` that an importable
module defines (`archs`; docs/architectures.md has a worked example).

Example:

>>> import jax, jax.numpy as jnp
>>> relu2 = Unit("my_relu2", lambda p, x: jax.nn.relu(affine(p["gate"], x)) ** 2 * p["out"],
...              groups=(("gate", "affine"), ("out", "out")), linear=("out",), gate="gate", degree=2)
>>> relu2.param_count(n_in=1, n_hidden=10, n_out=1)
31
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from glu_scaling import compilation
from glu_scaling.errors import UsageError, check_positive_int
from glu_scaling.inits import init_draws, init_draws_batch, pad_knots, spline_gates
from glu_scaling.models import GATE, NAMED_ARCHS, OUT, Group, Layout, check_float_dtype, factor

SIZES = ("affine", "out", "in")


def affine(w: jax.Array, x: jax.Array) -> jax.Array:
    """w[:-1] . x + w[-1] for an "affine" group w (n_in + 1,) and a point x (n_in,)."""
    return w[:-1] @ x + w[-1]


def _group(name: str) -> Group:
    """The engine's `models.Group` for a group name (the gated family's own for gate, out, factorJ)."""
    match = re.fullmatch(r"factor(\d+)", name)
    if match and int(match.group(1)) >= 1:
        return factor(int(match.group(1)))
    return {"gate": GATE, "out": OUT}.get(name, Group(name))


@dataclasses.dataclass(frozen=True)
class Unit:
    """A shallow architecture y = d + sum over units of unit(parts_i, x) (see the module docstring).

    name: how records, tables and plots name it.
    unit: (parts: dict group name -> (size,), x (n_in,)) -> (n_out,); pure, differentiable twice.
    groups: ((name, size), ...) in row order; size "affine" (n_in + 1), "out" (n_out), "in"
      (n_in) or a positive int.
    linear: groups the output is linear in, in the order the spline stages solve them.
    gate: the group holding the gate (spline init if "affine", gate stage), or None.
    out: the group the output bias d moves with (default "out" if there is one, else the
      first of `linear`).
    degree: the piecewise-polynomial degree p in 1D, or None.
    """

    name: str
    unit: Callable
    groups: tuple[tuple[str, str | int], ...]
    linear: tuple[str, ...] = ()
    gate: str | None = None
    out: str | None = None
    degree: int | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z_][\w.\-]*", self.name) \
                or self.name in NAMED_ARCHS or re.fullmatch(r"gated\d", self.name):
            raise UsageError(f"a unit's name must be a plain identifier not used by the gated family "
                             f"(mlp, glu, gqu, gatedK), got {self.name!r}")
        if not callable(self.unit):
            raise UsageError(f"unit {self.name!r}: `unit` must be a function (parts, x) -> (n_out,), "
                             f"got {self.unit!r}")
        groups = tuple((str(n), s) for n, s in self.groups)
        names = [n for n, _ in groups]
        if not names or len(set(names)) != len(names):
            raise UsageError(f"unit {self.name!r}: groups must be distinct (name, size) pairs, got {self.groups!r}")
        for n, size in groups:
            if size not in SIZES and not (isinstance(size, int) and not isinstance(size, bool) and size >= 1):
                raise UsageError(f"unit {self.name!r}: group {n!r} has size {size!r}; accepted: "
                                 f"{', '.join(SIZES)} or a positive int")
        for what, value in (("linear", self.linear), ("gate", (self.gate,) if self.gate else ()),
                            ("out", (self.out,) if self.out else ())):
            for n in value:
                if n not in names:
                    raise UsageError(f"unit {self.name!r}: {what} names group {n!r}; its groups are "
                                     f"{', '.join(names)}")
        if self.gate in self.linear:
            raise UsageError(f"unit {self.name!r}: the gate group {self.gate!r} cannot also be linear")
        if self.degree is not None and (isinstance(self.degree, bool) or not isinstance(self.degree, int)
                                        or self.degree < 1):
            raise UsageError(f"unit {self.name!r}: degree must be a positive int or None, got {self.degree!r}")
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "linear", tuple(self.linear))

    def sizes(self, n_in: int, n_out: int) -> tuple[int, ...]:
        """Each group's length for n_in inputs and n_out outputs."""
        named = {"affine": n_in + 1, "out": n_out, "in": n_in}
        return tuple(named.get(size, size) for _, size in self.groups)

    def row_size(self, n_in: int, n_out: int) -> int:
        """Length p of one unit's parameter row."""
        return sum(self.sizes(n_in, n_out))

    def param_count(self, n_in: int, n_hidden: int, n_out: int) -> int:
        """Trainable parameters of an unpadded model: p n_hidden + n_out (d)."""
        for kind, value in (("n_in", n_in), ("n_hidden", n_hidden), ("n_out", n_out)):
            check_positive_int(kind, value)
        return self.row_size(n_in, n_out) * n_hidden + n_out

    @property
    def d_group(self) -> str | None:
        names = [n for n, _ in self.groups]
        return self.out or ("out" if "out" in names else (self.linear[0] if self.linear else None))

    def layout(self, n_in: int, n_out: int) -> Layout:
        """The packed row's `models.Layout` (what the Newton schedules read)."""
        d = self.d_group
        return Layout(tuple(_group(n) for n, _ in self.groups), self.sizes(n_in, n_out),
                      cascade=tuple(_group(n) for n in self.linear),
                      gate=None if self.gate is None else _group(self.gate),
                      d_group=None if d is None else _group(d),
                      degree=self.degree if n_in == 1 and dict(self.groups).get(self.gate) == "affine" else None)

    def split(self, row: jax.Array, n_in: int, n_out: int) -> dict[str, jax.Array]:
        """A packed row (p,) as a dict group name -> its slice."""
        parts, start = {}, 0
        for (n, _), size in zip(self.groups, self.sizes(n_in, n_out)):
            parts[n] = row[start:start + size]
            start += size
        return parts

    pads = True  # models of several widths share a program, padded with masked units

    def unit_at(self, n_in: int, n_hidden: int, n_out: int) -> Unit:
        """The unit of a model of width n_hidden: this one at any width (`dense.Dense` differs)."""
        return self

    def init_batch(self, seeds, n_hidden, knots=None, **shape) -> UnitParams:
        """`init_batch` of this unit (what a sweep calls for any architecture object)."""
        return init_batch(seeds, n_hidden, knots, unit=self, **shape)

    def model(self, key, n_in: int, n_hidden: int, n_out: int, **options) -> UnitParams:
        """One model (`init`; options: width, spline_init, dtype, knots)."""
        return init(key, self, n_in, n_hidden, n_out, **options)

    def row_fn(self, n_in: int, n_out: int) -> Callable:
        """f(row (p,), x (n_in,)) -> (n_out,): `unit` on a packed row."""
        return lambda row, x: jnp.reshape(self.unit(self.split(row, n_in, n_out), x), (n_out,))


FORWARD_ROW = 64  # `UnitParams.derivatives`: unit rows up to this long get forward-mode Jacobians


@dataclasses.dataclass(frozen=True)
class UnitParams:
    """Parameters of one model of a `Unit` (or a batch, with leading batch axes).

    rows (W, p): one packed row per unit; d (n_out,); mask (W,) 1 for the real units, 0 for
    padding (whose rows are zero and contribute nothing).  `unit` and `n_in` are static.
    """

    rows_: jax.Array
    d: jax.Array
    mask: jax.Array
    unit: Unit
    n_in: int

    @property
    def width(self) -> int:
        return self.mask.shape[-1]

    @property
    def n_out(self) -> int:
        return self.d.shape[-1]

    @property
    def dtype(self):
        return self.rows_.dtype

    @property
    def layout(self) -> Layout:
        return self.unit.layout(self.n_in, self.n_out)

    def replace(self, **changes) -> UnitParams:
        return dataclasses.replace(self, **changes)

    def rows(self) -> jax.Array:
        return self.rows_

    def with_rows(self, rows: jax.Array, d: jax.Array | None = None) -> UnitParams:
        return self.replace(rows_=rows, d=self.d if d is None else d)

    def _per_unit(self, x: jax.Array, fn: Callable) -> jax.Array:
        """fn(row_i, x_n) for every point and unit: (N, W, ...)."""
        return jax.vmap(jax.vmap(fn, in_axes=(0, None)), in_axes=(None, 0))(self.rows_, x)

    def output(self, x: jax.Array) -> jax.Array:
        """y = d + sum over real units of unit(row_i, x); x (N, n_in) -> (N, n_out)."""
        f = self.unit.row_fn(self.n_in, self.n_out)
        each = self._per_unit(x, f)  # (N, W, dy)
        return self.d + jnp.sum(jnp.where(self.mask[None, :, None] > 0, each, 0.0), axis=1)

    def derivatives(self, x: jax.Array, r: jax.Array | None):
        """Ju (C, W, dy, p) = d y(x_n) / d row_i and S (W, p, p) = sum_n r_n . d^2 unit / d row_i^2
        by autodiff (forward-mode Jacobians; S as the Hessian of the scalar sum_n r_n . unit(row, x_n),
        one per unit); zero for masked units; S is None when r is."""
        f = self.unit.row_fn(self.n_in, self.n_out)
        mask = self.mask > 0
        # forward mode pushes p tangents through each (point, unit): cheap for a short row, where
        # vmapped reverse mode compiles to transposes that cost far more (docs/benchmarks.md);
        # a long row (a dense model's: every parameter) takes reverse mode's n_out cotangents
        jac = jax.jacfwd if self.rows_.shape[-1] <= FORWARD_ROW else jax.jacrev
        Ju = jnp.where(mask[None, :, None, None], self._per_unit(x, jac(f)), 0.0)
        if r is None:
            return Ju, None

        def curvature(row):
            return jax.hessian(lambda w: jnp.sum(r * jax.vmap(lambda xn: f(w, xn))(x)))(row)

        S = jax.vmap(curvature)(self.rows_)
        return Ju, jnp.where(mask[:, None, None], S, 0.0)


jax.tree_util.register_dataclass(UnitParams, data_fields=["rows_", "d", "mask"], meta_fields=["unit", "n_in"])


# ---------------------------------------------------------------- the gated family as units

def check_unit(unit: Unit, n_in: int, n_out: int, dtype=jnp.float64) -> None:
    """One line naming what is wrong with a user's `unit` for n_in inputs and n_out outputs:
    a function that fails, or an output that is not n_out numbers."""
    p = unit.row_size(n_in, n_out)
    try:
        out = jax.eval_shape(lambda row, x: unit.unit(unit.split(row, n_in, n_out), x),
                             jax.ShapeDtypeStruct((p,), dtype), jax.ShapeDtypeStruct((n_in,), dtype))
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UsageError(f"architecture {unit.name!r}: its unit(parts, x) fails on a row of groups "
                         f"{dict(zip([n for n, _ in unit.groups], unit.sizes(n_in, n_out)))} and x of shape "
                         f"({n_in},): {type(err).__name__}: {first}") from None
    if not hasattr(out, "shape") or int(np.prod(out.shape)) != n_out:
        raise UsageError(f"architecture {unit.name!r}: unit(parts, x) must return {n_out} outputs (shape "
                         f"({n_out},)), got {getattr(out, 'shape', type(out).__name__)}")


CHECK_POINTS = 256  # `check_finite` evaluates an architecture's first model on this many points


def check_finite(name: str, params: UnitParams, x) -> None:
    """One line if the model `params` (an architecture's first model) gives a non-finite output on
    the first `CHECK_POINTS` rows of the data x (N, n_in): it would only train to "diverged"."""
    x = jnp.asarray(np.asarray(x)[:CHECK_POINTS], params.dtype)
    y = np.asarray(jax.jit(UnitParams.output)(params, x))
    if not np.all(np.isfinite(y)):
        raise UsageError(f"architecture {name!r}: its unit gives non-finite outputs (NaN or inf) at the "
                         f"initial parameters on {int(np.sum(~np.isfinite(y)))} of {y.size} values of the data; "
                         "check unit(parts, x) for divisions, logs or overflow")

def init_masked(unit: Unit, n_in: int, n_hidden, n_out: int, width: int, draws, *, spline_init: bool = True,
                dtype=jnp.float64, knots=None) -> UnitParams:
    """A model of `unit` from `inits.init_draws` (every entry N(0, 1), unit i's row from its own
    key, so a model's real units do not depend on the padded width), the gate group (if
    "affine") from the spline init (`inits.spline_gates`), padding units zero and masked.
    `n_hidden` may be traced."""
    p = unit.row_size(n_in, n_out)
    rows = draws.units[:, :p].astype(dtype)
    if spline_init and unit.gate is not None and dict(unit.groups)[unit.gate] == "affine":
        G, g = spline_gates(None, n_hidden, n_in, dtype=dtype, width=width, directions=draws.directions,
                            knots=knots)
        start = unit.layout(n_in, n_out).columns(_group(unit.gate))[0]
        rows = rows.at[:, start:start + n_in].set(G).at[:, start + n_in].set(g)
    mask = (jnp.arange(width) < n_hidden).astype(dtype)
    return UnitParams(rows * mask[:, None], draws.d.astype(dtype), mask, unit, n_in)


def init(key, unit: Unit, n_in: int, n_hidden: int, n_out: int, *, width: int | None = None,
         spline_init: bool = True, dtype=None, knots=None) -> UnitParams:
    """Initialise one model of `unit` with `n_hidden` real units padded to `width` (default
    n_hidden); see `init_masked`."""
    if not isinstance(unit, Unit):
        raise UsageError(f"units.init takes a Unit, got {unit!r}; for any architecture by name use "
                         "glu_scaling.init(key, arch, ...)")
    n_in, n_hidden, n_out = (check_positive_int(k, v) for k, v in (("n_in", n_in), ("n_hidden", n_hidden),
                                                                   ("n_out", n_out)))
    width = n_hidden if width is None else check_positive_int("width", width)
    if width < n_hidden:
        raise UsageError(f"width must be >= n_hidden={n_hidden}, got {width}")
    dtype = check_float_dtype(dtype)
    check_unit(unit, n_in, n_out, dtype)
    draws = init_draws(key, n_in, n_out, width, unit.row_size(n_in, n_out), dtype)
    knots = None if knots is None else pad_knots(knots, width)
    return init_masked(unit, n_in, n_hidden, n_out, width, draws, spline_init=spline_init, dtype=dtype,
                       knots=knots)


@compilation.jit_with(brief=True, static_argnames=("unit", "n_in", "n_out", "width", "spline_init", "dtype"))
def init_batch(seeds, n_hidden, knots=None, *, unit: Unit, n_in: int, n_out: int, width: int, spline_init: bool,
               dtype) -> UnitParams:
    """Models of `unit` for (seed_b, n_hidden_b) pairs, padded to `width`, in one compiled call;
    knots (B, width) or None (evenly spaced).  Leaves have a leading B axis."""
    draws = init_draws_batch(jax.vmap(jax.random.PRNGKey)(seeds), n_in, n_out, width,
                             unit.row_size(n_in, n_out), dtype)
    return jax.vmap(lambda n, z, t: init_masked(unit, n_in, n, n_out, width, z, spline_init=spline_init,
                                                dtype=dtype, knots=t))(n_hidden, draws, knots)


__all__ = ["FORWARD_ROW", "SIZES", "Unit", "UnitParams", "affine", "check_finite", "check_unit", "init", "init_batch",
           "init_masked"]
