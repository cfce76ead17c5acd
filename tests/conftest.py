"""Tests run in float64: every convergence-order assertion needs it."""

import jax

jax.config.update("jax_enable_x64", True)

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
