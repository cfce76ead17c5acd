"""Derivative tables: f and its first derivatives at many points, by nested `jax.grad`.

The constructions (Taylor coefficients per cell), the knot placement (|f^(p+1)|) and
the spline baselines all need f^(j)(x) for j = 0..MAX_DERIVATIVE on thousands of
points; one compiled call per (f, dtype) evaluates every order on a fixed-size chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from glu_scaling import compilation
from glu_scaling.errors import UsageError
from glu_scaling.models import default_float

MAX_DERIVATIVE = 4  # derivatives 0..4 are computed in one jitted call


_CHUNK = 4096  # points per jitted derivative call (fixed: one compilation per f and dtype)


def _scalar(f: Callable) -> Callable:
    return lambda x: jnp.reshape(f(x), ())


def _nth_derivative(f: Callable, k: int) -> Callable:
    g = _scalar(f)
    for _ in range(k):
        g = jax.grad(g)
    return g


def _derivative_table(f: Callable, x: jax.Array) -> jax.Array:
    """f^(j)(x_i) for j = 0..MAX_DERIVATIVE; x (N,) -> (MAX_DERIVATIVE + 1, N)."""
    return jnp.stack([jax.vmap(_nth_derivative(f, j))(x) for j in range(MAX_DERIVATIVE + 1)])


# f is a static argument: jax caches the compiled table per (f, dtype), keeping a
# reference to f.  A new lambda per call therefore compiles again.
_derivative_chunk = compilation.jit(_derivative_table, static_argnums=(0,))


def _chunk_fn(f: Callable) -> Callable:
    try:
        hash(f)
    except TypeError:  # unhashable callable: compile without caching
        return compilation.jit(partial(_derivative_table, f))
    return partial(_derivative_chunk, f)


def check_dtype(dtype):
    dtype = default_float() if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise UsageError(f"dtype must be a float dtype, got {dtype}")
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise UsageError("dtype float64 needs jax_enable_x64 (jax.config.update('jax_enable_x64', True))")
    return dtype


def derivatives(f: Callable, x, *, dtype=None) -> np.ndarray:
    """Values and first four derivatives of a scalar JAX-traceable f at points x.

    Args:
      f: scalar -> scalar (a size-1 array output is accepted), JAX-traceable.
      x: points, (N,).
      dtype: evaluation dtype (default: float64 if jax_enable_x64, else float32).

    Returns:
      (MAX_DERIVATIVE + 1, N) float64 NumPy array; row j holds f^(j)(x).
      Evaluated in fixed-size padded chunks, so f is compiled once per dtype.
    """
    dtype = check_dtype(dtype)
    if not callable(f):
        raise UsageError(f"f must be a callable scalar function (JAX-traceable), got {f!r}")
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    out = np.empty((MAX_DERIVATIVE + 1, x.size))
    table = _chunk_fn(f) if x.size else None
    for start in range(0, x.size, _CHUNK):
        part = x[start:start + _CHUNK]
        padded = np.full((_CHUNK,), part[0])
        padded[:part.size] = part
        vals = table(jnp.asarray(padded, dtype))
        out[:, start:start + part.size] = np.asarray(vals, dtype=np.float64)[:, :part.size]
    if not np.all(np.isfinite(out)):
        raise UsageError("f or one of its first four derivatives is not finite on the interval")
    return out
