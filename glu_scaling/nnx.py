"""Flax NNX modules for the gated-unit family, built on the pure functions in `models`.

`dense_from_module` goes the other way for any NNX model whose hidden width is a
constructor argument: it becomes a `dense.Dense` that sweeps train by Newton.

`GatedUnits` is a thin stateful wrapper: its `nnx.Param` leaves hold exactly the
arrays of a `models.Params` (G, g, U, u, D, d), its unit mask is a non-trainable
`Mask` variable, and `__call__` is `models.apply`.  There is no second
implementation of the model; `to_params()` / `from_params()` move between the
two worlds, so a module can be trained with NNX and optax and then handed to the
pure-function tools (Newton, sweeps, constructions), or the other way round.

    from flax import nnx
    import optax
    from glu_scaling.nnx import GLU

    layer = GLU(1, 16, 1, rngs=nnx.Rngs(0))             # spline-initialised GLU
    y = layer(x)                                        # x (N, 1) -> y (N, 1)
    opt = nnx.Optimizer(layer, optax.adam(1e-3), wrt=nnx.Param)   # mask is not a Param

Shapes (W = padded width >= n_hidden, k = number of linear factors):
G (W, n_in), g (W,), U (k, W, n_in), u (k, W), D (W, n_out), d (n_out,), mask (W,).
For the MLP (k = 0) U and u are empty Params of shape (0, W, n_in) and (0, W).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from glu_scaling import inits, models
from glu_scaling.dense import Dense
from glu_scaling.errors import UsageError

__all__ = ["GLU", "GQU", "MLP", "GatedUnits", "Mask", "arch_name", "dense_from_module"]

_PARAM_FIELDS = ("G", "g", "U", "u", "D", "d")


class Mask(nnx.Variable):
    """Non-trainable 0/1 mask over hidden units (1 = real unit, 0 = padding).

    A separate Variable type (not an `nnx.Param`), so optimisers built with
    `wrt=nnx.Param` and `nnx.grad` (which differentiates Params by default) leave it alone.
    """


def arch_name(k: int) -> str:
    """Canonical architecture name for k linear factors: mlp, glu, gqu, else gatedK."""
    return {v: name for name, v in models.NAMED_ARCHS.items()}.get(k, f"gated{k}")


class GatedUnits(nnx.Module):
    """One hidden layer of gated units: y = d + D^T [act(Gx+g) * prod_j (U_j x + u_j)].

    Args:
      n_in, n_hidden, n_out: input dimension, number of real hidden units, outputs.
      arch: "mlp", "glu", "gqu" or "gatedK" (see `models.n_factors`).
      activation: gate activation, a name from `models.ACTIVATIONS`.
      spline_init: spline ("MASO") init of the gates, else N(0, 1) like the rest.
      width: padded width W >= n_hidden (default n_hidden); padded units are masked.
      rngs: `nnx.Rngs`; the key comes from its `params` stream (or its default).
      dtype: float dtype (default float64 if jax_enable_x64, else float32).
      params: optional `models.Params` holding the initial values instead of a fresh
        init; then `rngs` is not needed and the activation, dtype and padding come from
        `params` (activation, spline_init, dtype, init_options are ignored).  Prefer
        `GatedUnits.from_params(params)`.
      **init_options: further keywords of `inits.init` (interval, knot_pad,
        facing, gate_scale, x_data).

    Calling the module maps x (..., n_in) -> y (..., n_out) through `models.apply`.
    """

    #: Fixed architecture of an alias subclass (MLP, GLU, GQU); None for GatedUnits.
    ARCH: str | None = None

    def __init__(
        self,
        n_in: int,
        n_hidden: int,
        n_out: int,
        *,
        arch: str = "glu",
        activation: str = "relu",
        spline_init: bool = True,
        width: int | None = None,
        rngs: nnx.Rngs | None = None,
        dtype=None,
        params: models.Params | None = None,
        **init_options,
    ):
        models.n_factors(arch)  # validates the name
        if params is None:
            if not isinstance(rngs, nnx.Rngs):
                raise UsageError(f"{type(self).__name__} needs rngs=nnx.Rngs(...) (or params=...), got rngs={rngs!r}")
            params = inits.init(
                rngs.params(), arch, n_in, n_hidden, n_out, activation=activation,
                spline_init=spline_init, width=width, dtype=dtype, **init_options,
            )
        else:
            _check_params_match(arch, params, n_in, n_out, width)
            models.activation_fn(params.activation)
        self.arch = arch
        self.activation = params.activation
        self.G = nnx.Param(params.G)
        self.g = nnx.Param(params.g)
        self.U = nnx.Param(params.U)
        self.u = nnx.Param(params.u)
        self.D = nnx.Param(params.D)
        self.d = nnx.Param(params.d)
        self.mask = Mask(params.mask)

    # ---------------------------------------------------------------- conversion

    def to_params(self) -> models.Params:
        """The module's current values as a `models.Params` (works inside nnx.jit/grad too)."""
        return models.Params(
            **{name: getattr(self, name)[...] for name in _PARAM_FIELDS},
            mask=self.mask[...],
            activation=self.activation,
        )

    @classmethod
    def from_params(cls, params: models.Params, arch: str | None = None) -> GatedUnits:
        """A module holding `params`.

        The architecture defaults to the alias class's (MLP/GLU/GQU) or, for
        `GatedUnits`, to the one implied by the number of factors in `params`.
        """
        arch = arch or cls.ARCH or arch_name(params.n_factors)
        width = params.width
        kwargs = {}
        if cls.ARCH is None:
            kwargs["arch"] = arch
        elif arch != cls.ARCH:
            raise UsageError(f"{cls.__name__} has architecture {cls.ARCH!r}, got arch={arch!r}")
        # n_hidden only sizes a fresh init; with params given the mask decides.
        return cls(params.n_in, width, params.n_out, width=width, params=params, **kwargs)

    def load_params(self, params: models.Params) -> None:
        """Overwrite the module's values in place with `params` (same shapes).

        The activation name comes along too (it is static metadata of `params`).
        """
        _check_params_match(self.arch, params, self.n_in, self.n_out, self.width)
        models.activation_fn(params.activation)
        for name in _PARAM_FIELDS:
            getattr(self, name)[...] = getattr(params, name)
        self.mask[...] = params.mask
        self.activation = params.activation

    # ---------------------------------------------------------------- evaluation

    def __call__(self, x: jax.Array) -> jax.Array:
        """x (..., n_in) -> y (..., n_out); padded units have no effect."""
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.n_in:
            raise UsageError(f"x must have shape (..., {self.n_in}), got {tuple(x.shape)}")
        lead = x.shape[:-1]
        y = models.apply(self.arch, self.to_params(), x.reshape((-1, x.shape[-1])))
        return y.reshape(lead + (y.shape[-1],))

    def hidden(self, x: jax.Array) -> jax.Array:
        """Masked hidden activations (`models.hidden`): x (N, n_in) -> (N, W)."""
        return models.hidden(self.to_params(), jnp.asarray(x))

    # ---------------------------------------------------------------- shapes

    @property
    def n_in(self) -> int:
        return self.G.shape[-1]

    @property
    def n_out(self) -> int:
        return self.D.shape[-1]

    @property
    def width(self) -> int:
        return self.mask.shape[-1]

    @property
    def n_factors(self) -> int:
        return self.U.shape[-3]

    def count_trainable(self) -> int:
        """Trainable parameters of the unmasked units plus d (host-side, needs concrete mask)."""
        return models.count_trainable(self.to_params())


def _check_params_match(arch: str, params: models.Params, n_in, n_out, width) -> None:
    k = models.n_factors(arch)
    if params.n_factors != k:
        raise UsageError(f"architecture {arch!r} has {k} linear factors but params carry {params.n_factors}")
    for kind, want, got in (("n_in", n_in, params.n_in), ("n_out", n_out, params.n_out),
                            ("width", width, params.width)):
        if want is not None and want != got:
            raise UsageError(f"{kind}={want!r} does not match params ({kind}={got})")


class MLP(GatedUnits):
    """`GatedUnits` with arch="mlp": y = d + D^T act(Gx+g)."""

    ARCH = "mlp"

    def __init__(self, n_in: int, n_hidden: int, n_out: int, **kwargs):
        super().__init__(n_in, n_hidden, n_out, arch=self.ARCH, **kwargs)


class GLU(GatedUnits):
    """`GatedUnits` with arch="glu": y = d + D^T [act(Gx+g) * (Ux+u)]."""

    ARCH = "glu"

    def __init__(self, n_in: int, n_hidden: int, n_out: int, **kwargs):
        super().__init__(n_in, n_hidden, n_out, arch=self.ARCH, **kwargs)


class GQU(GatedUnits):
    """`GatedUnits` with arch="gqu": y = d + D^T [act(Gx+g) * (Ux+u) * (Qx+q)]."""

    ARCH = "gqu"

    def __init__(self, n_in: int, n_hidden: int, n_out: int, **kwargs):
        super().__init__(n_in, n_hidden, n_out, arch=self.ARCH, **kwargs)


# ---------------------------------------------------------------- any NNX model on the dense path


def _signature(flat: dict) -> tuple:
    return tuple(sorted((key, tuple(jnp.shape(value))) for key, value in flat.items()))


def dense_from_module(name: str, make, *, linear: tuple[str, ...] = (), degree: int | None = None) -> Dense:
    """A Flax NNX model as a `dense.Dense`, so that sweeps and Newton training take it.

    make: (n_in, n_hidden, n_out, rngs) -> an `nnx.Module` whose `__call__` maps x (N, n_in)
      to (N, n_out); the hidden width is a constructor argument.  Its `nnx.Param`s are the
      parameters, keyed by their paths ("l1.kernel", "l2.bias", ...); it may hold no other
      state (batch statistics, rng streams).
    linear: parameter keys the output is linear in (the last layer's kernel, say), solved
      first by least squares in `newton-cascade` and `newton-splines`.
    degree: the 1D piecewise-polynomial degree, if the model is a spline of one.

    The engine's output bias d adds to the module's own; the pair is one direction that
    the damped Newton steps and the least-squares fallback handle.
    Example (`tests/test_dense.py`)::

        class TwoLayer(nnx.Module):
            def __init__(self, n_in, n, n_out, rngs):
                self.l1, self.l2 = nnx.Linear(n_in, n, rngs=rngs), nnx.Linear(n, n_out, rngs=rngs)
            def __call__(self, x):
                return self.l2(jax.nn.relu(self.l1(x)))

        arch = dense_from_module("two_layer", TwoLayer, linear=("l2.kernel", "l2.bias"))
        gs.sweep([arch], "2:9", problem="paper_1d")
    """
    built: dict[tuple, tuple] = {}  # parameter shapes (one entry per width) -> (graphdef, treedef, keys)

    def init(key, n_in, n_hidden, n_out):
        module = make(n_in, n_hidden, n_out, nnx.Rngs(key))
        graphdef, params, rest = nnx.split(module, nnx.Param, ...)
        if jax.tree.leaves(rest):
            raise UsageError(f"architecture {name!r}: its module holds state other than nnx.Param "
                             f"({', '.join('.'.join(map(str, p)) for p, _ in nnx.to_flat_state(rest))}); "
                             "the dense path trains modules whose state is their parameters")
        keys = [".".join(map(str, path)) for path, _ in nnx.to_flat_state(params)]
        leaves, treedef = jax.tree.flatten(params)
        flat = dict(zip(keys, leaves))
        built.setdefault(_signature(flat), (graphdef, treedef, keys))
        return flat

    def apply(flat, x):
        graphdef, treedef, keys = built[_signature(flat)]
        params = jax.tree.unflatten(treedef, [flat[key] for key in keys])
        return nnx.merge(graphdef, params)(x[None])[0]

    return Dense(name, init, apply, linear=tuple(linear), degree=degree)
