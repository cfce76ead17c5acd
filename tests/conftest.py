"""Tests run in float64: every convergence-order assertion needs it."""

import jax

jax.config.update("jax_enable_x64", True)
