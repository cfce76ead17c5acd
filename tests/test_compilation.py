"""Tests for glu_scaling.compilation: the XLA options that speed up compilation change
no bit of what the programs compute, and are dropped when XLA refuses them or the
user's XLA_FLAGS set them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glu_scaling import compilation, inits, problems, schedules, train


@pytest.fixture
def fresh_options(monkeypatch):
    """compiler_options() recomputed inside the test and again after it."""
    compilation.compiler_options.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    compilation.compiler_options.cache_clear()


def _plain_jit(wrapped: compilation.jit, **jit_kwargs):
    """The same function under jax.jit with XLA's default options (the fusion emitters named
    explicitly: tests/conftest.py turns them off for the session)."""
    return jax.jit(wrapped.__wrapped__, compiler_options={"xla_cpu_use_fusion_emitters": True}, **jit_kwargs)


def _assert_same_bits(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("arch,optimizer", [("gqu", "newton-cascade"), ("mlp", "newton-splines")])
def test_fast_compile_options_change_no_bit_of_training(arch, optimizer):
    if not compilation.compiler_options():
        pytest.skip("this XLA does not take the fast-compile options")
    ds = problems.make_dataset("one_over_1_p_9x2", n_train=64, n_test=64)
    data, chunk = train.prepare_data(ds.x_train, ds.y_train, ds.x_test, ds.y_test, 64)
    params = jax.tree.map(lambda *a: jnp.stack(a), *[
        inits.init(jax.random.PRNGKey(seed), arch, 1, n, 1, width=8) for seed, n in ((0, 3), (1, 5), (2, 8))])
    config = schedules.TrainConfig(optimizer, steps=3, chunk=chunk)
    fast = train.train_batch(params, data, config)
    plain = _plain_jit(train.train_batch, static_argnames=("config", "batch_size", "mesh"))(params, data, config)
    _assert_same_bits(fast, plain)
    assert float(jnp.max(fast[1]["test_rmse"])) < float(jnp.max(jax.vmap(
        lambda p: train.rmse(p, data.x_test, data.t_test))(params)))  # it trained


def test_fast_compile_options_change_no_bit_of_the_initial_draws():
    if not compilation.compiler_options():
        pytest.skip("this XLA does not take the fast-compile options")
    seeds = jnp.asarray([0, 1, 7], jnp.uint32)
    static = ("n_in", "n_out", "width", "size", "dtype")
    for n_in, width in ((1, 6), (5, 4)):
        kwargs = inits.draw_kwargs(2, n_in, 1, width, jnp.float64)
        _assert_same_bits(inits.draw_batch(seeds, **kwargs),
                          _plain_jit(inits.draw_batch, static_argnames=static)(seeds, **kwargs))


def test_brief_programs_compile_with_less_optimisation_and_the_same_bits():
    """The init's draws and assembly and the problems' uniform inputs are compiled as
    brief programs (LLVM level 1): bit for bit what XLA's defaults and jax.random give."""
    if compilation.compiler_options(brief=True) == compilation.compiler_options():
        pytest.skip("this XLA does not take the brief-program options")
    seeds = jnp.asarray([0, 1, 7], jnp.uint32)
    static = ("n_in", "n_out", "width", "size", "dtype")
    for k, n_in, width, dtype in ((2, 1, 6, jnp.float64), (1, 5, 4, jnp.float64), (0, 3, 5, jnp.float32)):
        kwargs = inits.draw_kwargs(k, n_in, 1, width, dtype)
        draws = inits.draw_batch(seeds, **kwargs)
        _assert_same_bits(draws, _plain_jit(inits.draw_batch, static_argnames=static)(seeds, **kwargs))
        knots = jnp.stack([jnp.linspace(-1.0, 1.0, width, dtype=dtype)] * 3)
        assemble = dict(k=k, n_in=n_in, n_out=1, width=width, activation="relu", spline_init=n_in == 1, dtype=dtype)
        n_hidden = jnp.asarray([1, width - 1, width])
        for knots_given, factors_to in ((knots, None), (None, 2)):  # (a sweep's uniform knots, padded factors)
            static_kwargs = {**assemble, "factors_to": factors_to}
            _assert_same_bits(inits.assemble_batch(n_hidden, draws, knots_given, **static_kwargs),
                              _plain_jit(inits.assemble_batch, static_argnames=tuple(static_kwargs))(
                                  n_hidden, draws, knots_given, **static_kwargs))
    for seed, shape, dtype in ((0, (2000, 1), jnp.float64), (5, (300, 5), jnp.float32),
                               (2**32 - 1, (7, 2), jnp.float64)):
        _assert_same_bits(problems.uniform_points(jax.random.PRNGKey(seed), shape, dtype),
                          jax.random.uniform(jax.random.PRNGKey(seed), shape, dtype, minval=-1.0, maxval=1.0))


def test_a_wrapped_function_also_runs_inside_another_trace():
    """JAX refuses compiler options on a nested jit: inside jit or eval_shape the wrapper
    is a plain jit, inlined, with the same result as the top-level call."""
    seeds = jnp.asarray([0, 3], jnp.uint32)
    kwargs = inits.draw_kwargs(1, 1, 1, 5, jnp.float64)
    top = inits.draw_batch(seeds, **kwargs)
    _assert_same_bits(jax.jit(lambda s: inits.draw_batch(s, **kwargs))(seeds), top)
    shapes = jax.eval_shape(lambda s: inits.draw_batch(s, **kwargs), seeds)
    assert [a.shape for a in jax.tree.leaves(shapes)] == [a.shape for a in jax.tree.leaves(top)]
    # inside a trace with concrete arguments only (closed over): no tracer to tell, JAX's refusal is caught
    concrete = np.asarray(seeds)
    _assert_same_bits(jax.jit(lambda: inits.draw_batch(concrete, **kwargs))(), top)
    _assert_same_bits(jax.vmap(lambda s: inits.draw_batch(s[None], **kwargs))(seeds),
                      jax.tree.map(lambda a: a[:, None], top))  # bare vmap: compiled on its own


def test_the_options_reach_the_programs_on_the_jax_this_project_is_measured_with(fresh_options):
    """On a CPU with jax 0.10 (where the gain was measured) XLA takes the option and
    `train_batch` is lowered with it; on other versions it may have gone (then the
    wrapper compiles with XLA's defaults, `test_an_option_this_xla_does_not_know_is_dropped`)."""
    fresh_options.delenv("XLA_FLAGS", raising=False)
    if jax.default_backend() != "cpu" or not jax.__version__.startswith("0.10."):
        pytest.skip(f"measured on CPU with jax 0.10; this is {jax.default_backend()} with jax {jax.__version__}")
    assert compilation.compiler_options() == compilation.FAST_COMPILE_OPTIONS
    wrapped = compilation.jit(lambda x: x * 2)
    lowering = getattr(wrapped.lower(jnp.asarray(1.0)), "_lowering", None)
    if hasattr(lowering, "_compiler_options_kvs"):  # JAX's private record of what the compile will get
        assert dict(lowering._compiler_options_kvs) == compilation.FAST_COMPILE_OPTIONS


def test_brief_programs_get_both_option_sets(fresh_options):
    """On the measured CPU/jax 0.10 a brief program is lowered with the fast-compile and
    the brief options; a user's XLA_FLAGS setting of the level wins; a refused brief
    option leaves the fast-compile ones."""
    fresh_options.delenv("XLA_FLAGS", raising=False)
    if jax.default_backend() != "cpu" or not jax.__version__.startswith("0.10."):
        pytest.skip(f"measured on CPU with jax 0.10; this is {jax.default_backend()} with jax {jax.__version__}")
    both = {**compilation.FAST_COMPILE_OPTIONS, **compilation.BRIEF_PROGRAM_OPTIONS}
    assert compilation.compiler_options(brief=True) == both
    lowering = getattr(compilation.jit(lambda x: x * 2, brief=True).lower(jnp.asarray(1.0)), "_lowering", None)
    if hasattr(lowering, "_compiler_options_kvs"):
        assert dict(lowering._compiler_options_kvs) == both
    fresh_options.setenv("XLA_FLAGS", "--xla_backend_optimization_level=2")
    compilation.compiler_options.cache_clear()
    assert compilation.compiler_options(brief=True) == compilation.FAST_COMPILE_OPTIONS
    fresh_options.delenv("XLA_FLAGS")
    fresh_options.setattr(compilation, "BRIEF_PROGRAM_OPTIONS", {"xla_cpu_no_such_option_anywhere": 1})
    compilation.compiler_options.cache_clear()
    assert compilation.compiler_options(brief=True) == compilation.FAST_COMPILE_OPTIONS


def test_options_named_in_xla_flags_are_left_to_the_user(fresh_options):
    fresh_options.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")
    assert "xla_cpu_use_fusion_emitters" not in compilation.compiler_options()


def test_an_option_this_xla_does_not_know_is_dropped(fresh_options):
    fresh_options.delenv("XLA_FLAGS", raising=False)
    fresh_options.setattr(compilation, "FAST_COMPILE_OPTIONS", {"xla_cpu_no_such_option_anywhere": True})
    assert compilation.compiler_options() == {}
    # and a function compiled through the wrapper still runs, with XLA's defaults
    double = compilation.jit(lambda x: 2 * x)
    assert float(double(jnp.asarray(3.0))) == 6.0
    assert double.lower(jnp.asarray(3.0)).compile()(jnp.asarray(4.0)) == 8.0


def test_programs_for_a_gpu_get_the_gpu_options_only(fresh_options):
    fresh_options.delenv("XLA_FLAGS", raising=False)
    fresh_options.setattr(jax, "default_backend", lambda: "gpu")
    # (tried on this machine's backend, which knows every XLA option by name)
    assert compilation.compiler_options() == {"xla_gpu_experimental_enable_fusion_autotuner": False}
    assert compilation.compiler_options(brief=True) == compilation.compiler_options()
    compilation.compiler_options.cache_clear()
    fresh_options.setenv("XLA_FLAGS", "--xla_gpu_experimental_enable_fusion_autotuner=true")
    assert compilation.compiler_options() == {}


def test_programs_for_other_accelerators_get_no_options(fresh_options):
    fresh_options.delenv("XLA_FLAGS", raising=False)
    fresh_options.setattr(jax, "default_backend", lambda: "tpu")
    assert compilation.compiler_options() == {}
