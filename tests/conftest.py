"""Tests run in float64: every convergence-order assertion needs it."""

import jax

jax.config.update("jax_enable_x64", True)

from glu_scaling import sweeps  # noqa: E402


class CountingTrainBucket:
    """Wraps sweeps.train_bucket, recording (arch, width, pairs) per call; the calls
    numbered in `fail_on` (1-based) raise instead, like a crash mid-sweep."""

    def __init__(self, fail_on=()):
        self.calls = []
        self.fail_on = set(fail_on)
        self.inner = sweeps.train_bucket

    def __call__(self, arch, pairs, width, dataset, config):
        self.calls.append((arch, width, list(pairs)))
        if len(self.calls) in self.fail_on:
            raise RuntimeError("simulated crash")
        return self.inner(arch, pairs, width, dataset, config)
