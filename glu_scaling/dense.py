"""The dense path: models that are not a sum of units (two hidden layers, ...), trained by
the same Newton engine with the exact Hessian of the whole parameter vector.

A `Dense` architecture is y = d + apply(params, x) for a parameter dict whose shapes
depend on the hidden width n (its `init`).  The engine sees it as a model of one unit
whose row is every parameter (`units.UnitParams` with W = 1): the unit Jacobian is the
model's Jacobian, and the one per-unit Hessian block, forward over reverse of the scalar
r^T f accumulated chunk by chunk over the data, is the whole second-order term, so
Newton steps use the exact Hessian.  Nothing says how to pad such a model, so each width
compiles on its own (`pads = False`: the sweep gives every width its own bucket).
Their unit at width n is `Dense.unit_at`.

The dict's keys are the parameter groups (in sorted order, as `jax.tree` flattens a
dict); `linear` names those the output is linear in (the others fixed), which
`newton-cascade` and `newton-splines` solve first by least squares.  `mlp2` and `glu2`
are registered: two hidden layers of width n, ReLU MLP and ReLU GLU.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from glu_scaling import compilation
from glu_scaling.architectures import register
from glu_scaling.errors import UsageError, check_positive_int
from glu_scaling.models import check_float_dtype
from glu_scaling.units import Unit, UnitParams


@dataclasses.dataclass(frozen=True)
class Dense:
    """A model y = d + apply(params, x) that is not a sum of units.

    name: how records name it.
    init: (key, n_in, n_hidden, n_out) -> dict of arrays (the parameter groups).
    apply: (params dict, x (n_in,)) -> (n_out,); pure, twice differentiable where it matters.
    linear: keys the output is linear in, in the order the least-squares stages solve them.
    degree: the 1D piecewise-polynomial degree, if the model is a spline of one, else None.
    """

    name: str
    init: Callable
    apply: Callable
    linear: tuple[str, ...] = ()
    degree: int | None = None
    pads = False  # each width compiles on its own
    gate = None  # no gate stage, no spline init

    def shapes(self, n_in: int, n_hidden: int, n_out: int) -> dict:
        """The parameter dict's shapes at width n_hidden (no computation)."""
        return jax.eval_shape(lambda k: self.init(k, n_in, n_hidden, n_out), jax.random.PRNGKey(0))

    def row_size(self, n_in: int, n_out: int, n_hidden: int) -> int:
        return sum(int(np.prod(s.shape)) for s in self.shapes(n_in, n_hidden, n_out).values())

    def param_count(self, n_in: int, n_hidden: int, n_out: int) -> int:
        """Every parameter plus d (n_out)."""
        for kind, value in (("n_in", n_in), ("n_hidden", n_hidden), ("n_out", n_out)):
            check_positive_int(kind, value)
        return self.row_size(n_in, n_out, n_hidden) + n_out

    @functools.lru_cache(maxsize=512)  # noqa: B019  (a frozen dataclass: a stable key, kept for the process)
    def unit_at(self, n_in: int, n_hidden: int, n_out: int) -> Unit:
        """The model at width n_hidden as one `Unit` whose row is every parameter."""
        shapes = self.shapes(n_in, n_hidden, n_out)
        names = sorted(shapes)
        missing = [n for n in self.linear if n not in names]
        if missing:
            raise UsageError(f"architecture {self.name!r}: linear names {missing}, not keys of its init's dict "
                             f"{names}")

        def whole(parts, x):
            return self.apply({n: parts[n].reshape(shapes[n].shape) for n in names}, x)

        return Unit(self.name, whole, tuple((n, int(np.prod(shapes[n].shape))) for n in names),
                    linear=self.linear, out=self.linear[0] if self.linear else names[-1], degree=self.degree)

    def model(self, key, n_in: int, n_hidden: int, n_out: int, dtype=None) -> UnitParams:
        """One model (`init`)."""
        return init(key, self, n_in, n_hidden, n_out, dtype)

    def init_batch(self, seeds, n_hidden, knots=None, *, n_in: int, n_out: int, width: int, dtype, **_) -> UnitParams:
        """Models at width `width` for seeds (B,) (every n_hidden must equal width); one
        compiled call.  knots: unused (no spline init)."""
        if not np.all(np.asarray(n_hidden) == width):
            raise UsageError(f"{self.name}: a dense model is not padded; every model of a bucket has width {width}")
        return _init_batch(seeds, dense=self, n_in=n_in, n_out=n_out, width=width, dtype=dtype)


@compilation.jit_with(brief=True, static_argnames=("dense", "n_in", "n_out", "width", "dtype"))
def _init_batch(seeds, *, dense: Dense, n_in: int, n_out: int, width: int, dtype) -> UnitParams:
    return jax.vmap(lambda seed: init(jax.random.PRNGKey(seed), dense, n_in, width, n_out, dtype))(seeds)


def init(key, dense: Dense, n_in: int, n_hidden: int, n_out: int, dtype=None) -> UnitParams:
    """One model of `dense` at width n_hidden; `init(jax.random.PRNGKey(seed), ...)` is a sweep's
    model of that seed (`gs.init(key, "mlp2", ...)` calls this)."""
    dtype = check_float_dtype(dtype)
    k_params, k_bias = jax.random.split(key)
    params = dense.init(k_params, n_in, n_hidden, n_out)
    unit = dense.unit_at(n_in, n_hidden, n_out)
    row = jnp.concatenate([jnp.ravel(params[n]) for n in sorted(params)]).astype(dtype)
    return UnitParams(row[None], jax.random.normal(k_bias, (n_out,), dtype), jnp.ones((1,), dtype), unit, n_in)


def _layer(key, fan_out: int, fan_in: int) -> jax.Array:
    """An affine layer's (fan_out, fan_in + 1) weights and biases ~ N(0, 1 / (fan_in + 1))."""
    return jax.random.normal(key, (fan_out, fan_in + 1)) / jnp.sqrt(fan_in + 1.0)


def _affine(w: jax.Array, h: jax.Array) -> jax.Array:
    return w[:, :-1] @ h + w[:, -1]


def _mlp2_init(key, n_in, n, n_out):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"G1": _layer(k1, n, n_in), "G2": _layer(k2, n, n), "D": jax.random.normal(k3, (n_out, n)) / jnp.sqrt(n)}


def _mlp2(p, x):
    return p["D"] @ jax.nn.relu(_affine(p["G2"], jax.nn.relu(_affine(p["G1"], x))))


def _glu2_init(key, n_in, n, n_out):
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    return {"G1": _layer(k1, n, n_in), "U1": _layer(k2, n, n_in), "G2": _layer(k3, n, n), "U2": _layer(k4, n, n),
            "D": jax.random.normal(k5, (n_out, n)) / jnp.sqrt(n)}


def _glu2(p, x):
    h = jax.nn.relu(_affine(p["G1"], x)) * _affine(p["U1"], x)
    return p["D"] @ (jax.nn.relu(_affine(p["G2"], h)) * _affine(p["U2"], h))


MLP2 = register(Dense("mlp2", _mlp2_init, _mlp2, linear=("D",)), built_in=True)
GLU2 = register(Dense("glu2", _glu2_init, _glu2, linear=("D", "U2")), built_in=True)

__all__ = ["GLU2", "MLP2", "Dense", "init"]
