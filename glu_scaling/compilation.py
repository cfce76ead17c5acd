"""How the package's big programs are compiled: `jax.jit` plus XLA options that make
compilation faster without changing a bit of what the programs compute.

XLA:CPU compiles loop fusions with its MLIR "fusion emitters" by default.  Its classic
elemental emitters compile this package's Newton programs markedly faster, run them as
fast, and give bit-for-bit the same results (`tests/test_compilation.py`).

Programs compiled for a GPU get GPU_OPTIONS instead: XLA:GPU's fusion autotuner
compiles big fusions a second time, with another emitter, to time the two, and on this
package's Newton programs those compiles took minutes each; without it XLA keeps its
native emitters.  Programs for other accelerators get no options.

Programs that run once and briefly (the init's draws and assembly: `brief=True`) are
also compiled with LLVM's optimisation level 1 instead of 2 (BRIEF_PROGRAM_OPTIONS),
again bit for bit the same (`tests/test_compilation.py`).  Level 0 would change bits;
level 1 in the Newton programs changes their last digits and slows them, so they keep
level 2.  The measurements behind these choices are in docs/design.md and
docs/benchmarks.md.

An XLA that does not know an option rejects it at compile time (it would abort the
process if it came through XLA_FLAGS), so the options are tried once on a trivial
program and dropped if refused.  A user's own XLA_FLAGS setting of an option wins.

    jitted = compilation.jit(fun, static_argnames=(...))   # as jax.jit
    drawn = compilation.jit(draw, brief=True)               # runs once: optimise less
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any

import jax

# option -> value; every entry must leave results bit for bit unchanged (tests/test_compilation.py)
FAST_COMPILE_OPTIONS: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False}
# added for programs that run once and briefly (`jit(..., brief=True)`); also bit for bit
BRIEF_PROGRAM_OPTIONS: dict[str, Any] = {"xla_backend_optimization_level": 1}
# option -> value for every program compiled for a GPU (see the module's docstring)
GPU_OPTIONS: dict[str, Any] = {"xla_gpu_experimental_enable_fusion_autotuner": False}


@functools.cache
def compiler_options(brief: bool = False) -> dict[str, Any]:
    """The options of FAST_COMPILE_OPTIONS (and BRIEF_PROGRAM_OPTIONS if `brief`) this
    XLA accepts and XLA_FLAGS does not set, when the default backend is a CPU; on a GPU
    those of GPU_OPTIONS; elsewhere none.  Options XLA refuses are dropped: all of
    FAST_COMPILE_OPTIONS (or GPU_OPTIONS) together; for a brief program, first the brief
    ones (it then gets the others)."""
    backend = jax.default_backend()
    if backend == "gpu":
        return _accepted(_unset(GPU_OPTIONS))
    if backend != "cpu":
        return {}
    if brief:
        base = compiler_options(False)  # (the cache key of every non-brief call, `jit`'s included)
        return _accepted({**base, **_unset(BRIEF_PROGRAM_OPTIONS)}) or base
    return _accepted(_unset(FAST_COMPILE_OPTIONS))


def _unset(options: dict[str, Any]) -> dict[str, Any]:
    """`options` less those the user's XLA_FLAGS names."""
    user_flags = os.environ.get("XLA_FLAGS", "")
    return {name: value for name, value in options.items() if name not in user_flags}


def _accepted(options: dict[str, Any]) -> dict[str, Any]:
    """`options` if XLA compiles a trivial program with them, else {}."""
    if not options:
        return {}
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(0).compile()
    except Exception:  # noqa: BLE001 -- an older or newer XLA without the option: compile as jax does
        return {}
    return options


class jit:  # noqa: N801 -- used like jax.jit
    """`jax.jit(fun, **jit_kwargs)` compiled with `compiler_options(brief)`, which are
    looked up at the first call (so importing the package never starts a backend).
    Supports calling and `.lower(...)`, as the jitted function does.

    Called inside another transformation it is a plain `jax.jit` (JAX refuses compiler
    options on a nested jit): inside `jax.jit` or `jax.eval_shape` it is inlined into the
    outer program, which JAX compiles with its own options; under a bare `jax.vmap` or
    `jax.grad` it is compiled on its own with XLA's defaults (the same numbers)."""

    def __init__(self, fun: Callable, *, brief: bool = False, **jit_kwargs):
        functools.update_wrapper(self, fun, updated=())  # (not fun.__dict__: a wrapped wrapper keeps its own state)
        self._fun = fun
        self._brief = brief
        self._jit_kwargs = jit_kwargs
        self._top_level = None  # made once, under the lock: threads that compile ahead
        self._lock = threading.Lock()  # (sweeps.precompile_bucket) must share its caches
        self._nested = jax.jit(fun, **jit_kwargs)

    @property
    def _jitted(self):
        if self._top_level is None:
            with self._lock:
                if self._top_level is None:
                    options = compiler_options(self._brief) or None
                    self._top_level = jax.jit(self._fun, compiler_options=options, **self._jit_kwargs)
        return self._top_level

    def __call__(self, *args, **kwargs):
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs))):
            return self._nested(*args, **kwargs)
        try:
            return self._jitted(*args, **kwargs)
        except ValueError as err:  # inside a trace with only concrete arguments (closed-over constants)
            if "compiler_options" not in str(err):
                raise
            return self._nested(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return self._jitted.lower(*args, **kwargs)


def jit_with(**jit_kwargs) -> Callable[[Callable], jit]:
    """Decorator form: `@jit_with(static_argnames=(...))` is `compilation.jit(fun, ...)`."""
    return functools.partial(jit, **jit_kwargs)


__all__ = ["BRIEF_PROGRAM_OPTIONS", "FAST_COMPILE_OPTIONS", "GPU_OPTIONS", "compiler_options", "jit", "jit_with"]
