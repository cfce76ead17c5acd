"""Tests run in float64: every convergence-order assertion needs it.

Most of the suite's time is XLA compiling; many tests compile the same program through
their own `jax.jit` wrappers (one per test), which the in-memory caches do not share.
A persistent compilation cache in a fresh folder for this session serves those from
disk: the same executables, so the same bits, only not compiled twice.  A user's own
JAX_COMPILATION_CACHE_DIR is left alone.
"""

import atexit
import os
import shutil
import tempfile

# XLA:CPU's classic (non-MLIR) fusion emitters compile faster and give the same bits
# (glu_scaling/compilation.py); the package's own programs already use them, this gives
# them to the tests' own jax.jit programs and eager ops too.  XLA reads XLA_FLAGS once,
# when the CPU client starts: set the option, start the client, then put XLA_FLAGS back
# (subprocesses, and compilation's check of a user's flags, see the user's own).
_user_flags = os.environ.get("XLA_FLAGS")
if "xla_cpu_use_fusion_emitters" not in (_user_flags or ""):
    os.environ["XLA_FLAGS"] = f"{_user_flags or ''} --xla_cpu_use_fusion_emitters=false".strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # before the first compilation
    _cache = tempfile.mkdtemp(prefix="glu_scaling-test-xla-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    jax.config.update("jax_compilation_cache_dir", _cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
jax.jit(lambda x: x + 1)(0.0).block_until_ready()  # the CPU client reads XLA_FLAGS now
if _user_flags is None:
    os.environ.pop("XLA_FLAGS", None)
else:
    os.environ["XLA_FLAGS"] = _user_flags

import jax.numpy as jnp  # noqa: E402

from glu_scaling import sweeps  # noqa: E402
from glu_scaling.problems import scalar_target  # noqa: E402

# Smooth 1D targets for construction and spline convergence tests: three
# registered ones and two that are not in the registry.
SMOOTH_TARGETS = {
    "paper_1d": scalar_target("paper_1d"),
    "sin": scalar_target("sin"),
    "one_over_1_p_9x2": scalar_target("one_over_1_p_9x2"),
    "exp_sin_2x": lambda x: jnp.exp(jnp.sin(2 * x)),
    "one_over_2_p_x": lambda x: 1 / (2 + x),
}


class CountingTrainBucket:
    """Wraps sweeps.launch_bucket (what a CPU sweep calls per bucket), recording
    (arch, width, pairs) per call; the calls numbered in `fail_on` (1-based) raise
    instead, like a crash mid-sweep."""

    def __init__(self, fail_on=()):
        self.calls = []
        self.fail_on = set(fail_on)
        self.inner = sweeps.launch_bucket

    def __call__(self, arch, pairs, width, dataset, config, batch=None, **kwargs):
        self.calls.append((arch, width, list(pairs)))
        if len(self.calls) in self.fail_on:
            raise RuntimeError("simulated crash")
        return self.inner(arch, pairs, width, dataset, config, batch=batch, **kwargs)
