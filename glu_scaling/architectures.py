"""Architectures by name: the registry, "module:NAME" loading, and what a sweep asks of
any architecture (its parameter count, unit shape, degree, checks, init and apply).

An architecture is the gated family's name (mlp, glu, gqu, gatedK: `models`, closed-form
fast path), an architecture object (`units.Unit`, a sum of units; `dense.Dense`, a model
that is not), a registered object's name (`register`; `relu2`, `swiglu`, `bilinear` here,
`mlp2` and `glu2` in `dense`) or "module:PKG.MOD:NAME" for an object an importable module
defines.  `resolve` turns any of them into the object, or None for the gated family.
"""

from __future__ import annotations

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np

from glu_scaling import inits, models
from glu_scaling.errors import UsageError, unknown
from glu_scaling.models import NAMED_ARCHS, Params, accepted_archs, n_factors
from glu_scaling.units import Unit, UnitParams, affine, check_finite, check_unit


@functools.lru_cache(maxsize=64)
def gated(k: int, activation: str = "relu") -> Unit:
    """The gated family's unit with k factors as a `Unit` (autodiff path): the same rows,
    groups and cascade as `models.Params` (whose closed-form derivatives are the fast path)."""
    groups = (("gate", "affine"), *((f"factor{j}", "affine") for j in range(1, k + 1)), ("out", "out"))

    act = models.activation_fn(activation)

    def unit(parts, x):  # `models.unit_output`'s operations, on the row's parts
        h = act(affine(parts["gate"], x))
        for j in range(1, k + 1):
            h = h * affine(parts[f"factor{j}"], x)
        return h * parts["out"]

    return Unit(f"autodiff_gated{k}_{activation}", unit, groups,
                linear=("out", *(f"factor{j}" for j in range(1, k + 1))), gate="gate",
                degree=k + 1 if activation == "relu" else None)


def from_params(params: Params) -> UnitParams:
    """A gated model on the autodiff path: the same model (rows, d, mask) as a `UnitParams`
    of `gated(k, activation)`; leaves may carry leading batch axes."""
    return UnitParams(params.rows() if params.G.ndim == 2 else jax.vmap(Params.rows)(params),
                      params.d, params.mask, gated(params.n_factors, params.activation), params.n_in)


# ---------------------------------------------------------------- the registry


def _relu2(parts, x):
    return jax.nn.relu(affine(parts["gate"], x)) ** 2 * parts["out"]


def _swiglu(parts, x):
    return jax.nn.silu(affine(parts["gate"], x)) * affine(parts["up"], x) * parts["out"]


def _bilinear(parts, x):
    return affine(parts["left"], x) * affine(parts["right"], x) * parts["out"]


ARCHITECTURES: dict[str, Unit] = {}


def is_architecture(arch) -> bool:
    """Whether `arch` is an architecture object: a `Unit` or a `dense.Dense` (anything with a
    name, `init_batch`, `param_count`, `unit_at` and `pads`)."""
    return all(hasattr(arch, a) for a in ("name", "init_batch", "param_count", "unit_at", "pads"))


BUILT_IN: set[str] = set()  # names the package registers, which a user's architecture cannot take


def register(unit: Unit, *, built_in: bool = False) -> Unit:
    """Make an architecture object (`Unit`, `dense.Dense`) known to sweeps, the CLI and resumes
    by its name; returns it.  A later one under a user's name replaces it (a notebook cell run
    again); a built-in name (relu2, swiglu, bilinear, mlp2, glu2) cannot be taken."""
    if not is_architecture(unit):
        raise UsageError(f"register takes a glu_scaling.units.Unit or dense.Dense, got {type(unit).__name__}")
    if unit.name in BUILT_IN and ARCHITECTURES[unit.name] is not unit:
        raise UsageError(f"{unit.name!r} is a built-in architecture; give yours another name")
    ARCHITECTURES[unit.name] = unit
    if built_in:
        BUILT_IN.add(unit.name)
    return unit


RELU2 = register(Unit("relu2", _relu2, (("gate", "affine"), ("out", "out")), linear=("out",), gate="gate",
                      degree=2), built_in=True)
SWIGLU = register(Unit("swiglu", _swiglu, (("gate", "affine"), ("up", "affine"), ("out", "out")),
                       linear=("out", "up"), gate="gate"), built_in=True)
BILINEAR = register(Unit("bilinear", _bilinear, (("left", "affine"), ("right", "affine"), ("out", "out")),
                         linear=("out", "right", "left")), built_in=True)


def all_accepted() -> list[str]:
    return [*accepted_archs(), *ARCHITECTURES, "module:NAME"]


def _load(spec: str) -> Unit:
    """The `Unit` that "module:NAME" names (imported now), registered under its own name."""
    text = spec[len("module:"):]
    module_name, _, attr = text.rpartition(":") if ":" in text else text.rpartition(".")
    if not module_name or not attr:
        raise UsageError(f"--arch {spec!r}: write module:PACKAGE.MODULE:NAME (or module:MODULE.NAME) for a Unit "
                         "that an importable module defines")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or whatever the module raises while it loads
        raise UsageError(f"--arch {spec!r}: cannot import module {module_name!r} "
                         f"({type(err).__name__}: {err}); is it on PYTHONPATH?") from None
    if not hasattr(module, attr):
        raise UsageError(f"--arch {spec!r}: module {module_name!r} has no attribute {attr!r}")
    unit = getattr(module, attr)
    if not is_architecture(unit):
        raise UsageError(f"--arch {spec!r}: {module_name}.{attr} is a {type(unit).__name__}, "
                         "not a glu_scaling.units.Unit (or dense.Dense)")
    return register(unit)


def resolve(arch):
    """The `Unit` an architecture names, or None for the gated family (mlp, glu, gqu,
    gatedK: the closed-form fast path).  `arch`: a `Unit`, a registered name, or
    "module:NAME"; anything else is a one-line UsageError that lists what is accepted."""
    if is_architecture(arch):
        return arch
    if isinstance(arch, str):
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
        if arch.startswith("module:"):
            return _load(arch)
    try:
        n_factors(arch)
        return None
    except UsageError:
        raise unknown("architecture", arch, all_accepted(),
                      candidates=[*NAMED_ARCHS, *(f"gated{k}" for k in range(10)), *ARCHITECTURES]) from None


def arch_name(arch) -> str:
    """The name records and config.json use for `arch` (a Unit's own name; "module:NAME" as given)."""
    return arch.name if is_architecture(arch) else arch


def unit_shape(arch, n_in: int, n_out: int, width: int) -> tuple[int, int, int]:
    """(units W, row length p, parameter groups) of a model of padded width `width`: W = width
    for a sum of units, 1 for a dense model (whose one row is every parameter)."""
    unit = resolve(arch)
    if unit is None:
        k = n_factors(arch)
        return width, models.unit_size(k, n_in, n_out), k + 2
    one = unit.unit_at(n_in, width, n_out)
    return (width if unit.pads else 1), one.row_size(n_in, n_out), len(one.groups)


def param_count(arch, n_in: int, n_hidden: int, n_out: int) -> int:
    """Trainable parameters of an unpadded model of any architecture."""
    unit = resolve(arch)
    return models.param_count(arch, n_in, n_hidden, n_out) if unit is None else unit.param_count(n_in, n_hidden, n_out)


def degree(arch) -> int | None:
    """The 1D piecewise-polynomial degree p (theoretical order -(p + 1)); None if not piecewise."""
    unit = resolve(arch)
    return n_factors(arch) + 1 if unit is None else unit.degree


# ---------------------------------------------------------------- initialisation


def check_arch(arch, x, n_out: int, width: int, dtype=jnp.float64) -> None:
    """`check_unit` and `check_finite` for any architecture a sweep names (nothing for the
    gated family), on the data x (N, n_in), at `width` for a dense model."""
    unit = resolve(arch)
    if unit is None:
        return
    n_in, n = np.shape(x)[1], (2 if unit.pads else width)  # a unit's 2-unit model, a dense model's own width
    try:
        one = unit.unit_at(n_in, n, n_out)
    except UsageError:
        raise
    except Exception as err:  # a dense model's init that fails at these sizes
        raise UsageError(f"architecture {unit.name!r}: its init fails at n_in={n_in}, width={n}, "
                         f"n_out={n_out}: {type(err).__name__}: {str(err).strip().splitlines()[0]}") from None
    check_unit(one, n_in, n_out, dtype)
    check_finite(unit.name, unit.model(jax.random.PRNGKey(0), n_in, n, n_out, dtype=dtype), x)


def init_model(key, arch, n_in: int, n_hidden: int, n_out: int, **options):
    """`gs.init` for any architecture: the gated family's `inits.init` (Params; every option
    of it), a unit's `init` (UnitParams; width, spline_init, dtype, knots) or a dense model's
    (UnitParams of one row; dtype)."""
    unit = resolve(arch)
    if unit is None:
        return inits.init(key, arch, n_in, n_hidden, n_out, **options)
    try:
        return unit.model(key, n_in, n_hidden, n_out, **options)
    except TypeError as err:  # an option the gated family has and this architecture has not
        raise UsageError(f"init of {unit.name!r}: {err}") from None


def apply_model(arch, params, x) -> jax.Array:
    """`gs.apply` for any architecture: one model's outputs, x (N, n_in) -> (N, n_out)."""
    unit = resolve(arch)
    if unit is None:
        return models.apply(arch, params, x)
    if not isinstance(params, UnitParams) or params.unit.name != unit.name:
        got = params.unit.name if isinstance(params, UnitParams) else type(params).__name__
        raise UsageError(f"params are not a {unit.name!r} model (got {got}); make them with "
                         f"gs.init(key, {arch_name(arch)!r}, ...)")
    if params.rows_.ndim != 2:
        raise UsageError(f"apply evaluates one model, but params carry leading batch axes "
                         f"{tuple(params.rows_.shape[:-2])}; for a batch use jax.vmap")
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != params.n_in:
        raise UsageError(f"x must have shape (N, {params.n_in}), got {tuple(x.shape)}")
    return params.output(x)


__all__ = [
    "ARCHITECTURES", "BILINEAR", "RELU2", "SWIGLU", "all_accepted", "apply_model", "arch_name", "check_arch", "degree",
    "from_params", "gated", "init_model", "is_architecture", "param_count", "register", "resolve", "unit_shape",
]
