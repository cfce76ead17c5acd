"""Problem registry and make_dataset: shapes, dtypes, grids, seeds, Friedman formulas, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glu_scaling import problems
from glu_scaling.errors import UsageError
from glu_scaling.problems import REGISTRY, make_dataset


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_problem_shapes_dtype_finite(name, dtype):
    ds = make_dataset(name, n_train=16, n_test=25, seed=0, dtype=dtype)
    n_in = REGISTRY[name].n_in
    assert ds.name == name and ds.n_in == n_in and ds.n_out == 1
    assert ds.x_train.shape == (16, n_in) and ds.y_train.shape == (16, 1)
    assert ds.x_test.shape == (25, n_in) and ds.y_test.shape == (25, 1)  # 25 = 5^2 in 2D
    for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        assert a.dtype == dtype
        assert bool(jnp.all(jnp.isfinite(a)))


def test_input_dimensions_of_named_problems():
    want = {"paper_1d": 1, "sin_x_sin_y": 2, "friedman1": 5, "friedman2": 4, "friedman3": 4,
            "airfoil": 5, "california": 8}
    assert {k: REGISTRY[k].n_in for k in want} == want
    assert all(p.n_in == 1 for k, p in REGISTRY.items() if k in problems._TARGETS_1D)
    assert all(p.n_in == 2 for k, p in REGISTRY.items() if k in problems._TARGETS_2D)


def test_1d_test_grid_is_uniform_on_minus1_1():
    ds = make_dataset("paper_1d", n_train=8, n_test=11)
    np.testing.assert_allclose(ds.x_test[:, 0], np.linspace(-1, 1, 11), rtol=0, atol=1e-15)
    f = problems.scalar_target("paper_1d")
    np.testing.assert_allclose(ds.y_test[:, 0], f(ds.x_test[:, 0]), rtol=1e-15)


def test_2d_test_grid_is_a_tensor_grid():
    ds = make_dataset("x2_y2", n_train=8, n_test=25)
    assert ds.x_test.shape == (25, 2)
    assert set(np.round(np.asarray(ds.x_test[:, 0]), 12)) == set(np.round(np.linspace(-1, 1, 5), 12))
    np.testing.assert_allclose(ds.y_test[:, 0], ds.x_test[:, 0] ** 2 + ds.x_test[:, 1] ** 2)


def test_training_inputs_deterministic_per_seed():
    a = make_dataset("sin", n_train=32, n_test=4, seed=3)
    b = make_dataset("sin", n_train=32, n_test=4, seed=3)
    c = make_dataset("sin", n_train=32, n_test=4, seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.allclose(a.x_train, c.x_train)
    assert float(jnp.min(a.x_train)) >= -1 and float(jnp.max(a.x_train)) <= 1
    np.testing.assert_allclose(a.y_train[:, 0], jnp.sin(4 * a.x_train[:, 0]))


def test_default_sizes_of_generated_problems():
    ds = make_dataset("x2")
    assert ds.x_train.shape == (problems.DEFAULT_N_TRAIN, 1)
    assert ds.x_test.shape == (problems.DEFAULT_N_TEST, 1)


def test_friedman_formulas_match_scikit_learn():
    datasets = pytest.importorskip("sklearn.datasets")
    for make, target, n_features in ((datasets.make_friedman1, problems.friedman1_target, 5),
                                     (datasets.make_friedman2, problems.friedman2_target, 4),
                                     (datasets.make_friedman3, problems.friedman3_target, 4)):
        kw = {"n_features": 5} if n_features == 5 else {}
        x, y = make(n_samples=200, noise=0.0, random_state=0, **kw)
        assert x.shape[1] == n_features
        np.testing.assert_allclose(target(x), y, rtol=1e-12, atol=1e-12)


def test_friedman23_inputs_cover_scikit_learn_box():
    x = problems._friedman23_inputs(np.random.default_rng(0), 5000)
    lo, hi = x.min(axis=0), x.max(axis=0)
    box = np.array([[0, 100], [40 * np.pi, 560 * np.pi], [0, 1], [1, 11]])
    assert np.all(lo >= box[:, 0]) and np.all(hi <= box[:, 1])
    assert np.all(lo - box[:, 0] < 0.01 * (box[:, 1] - box[:, 0]))
    assert np.all(box[:, 1] - hi < 0.01 * (box[:, 1] - box[:, 0]))


def test_friedman_standardised_with_training_statistics():
    ds = make_dataset("friedman1", n_train=200, n_test=100, seed=1)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1, rtol=1e-12)
    np.testing.assert_allclose(ds.y_train.std(axis=0), 1, rtol=1e-12)
    assert abs(float(ds.y_test.mean())) > 1e-6


def test_eval_train_scores_on_training_set():
    for name in ("sin", "friedman2", "airfoil"):
        ds = make_dataset(name, n_train=20, n_test=7, eval="train")
        assert ds.eval == "train"
        np.testing.assert_array_equal(ds.x_test, ds.x_train)
        np.testing.assert_array_equal(ds.y_test, ds.y_train)
    assert make_dataset("sin", n_train=4, n_test=4).eval == "test"


def test_unknown_problem_lists_accepted():
    with pytest.raises(UsageError, match="unknown problem 'nope'; accepted: .*airfoil.*california.*file:PATH"):
        make_dataset("nope")
    with pytest.raises(UsageError, match="unknown problem"):
        problems.get_problem(None)


@pytest.mark.parametrize("kwargs, needle", [
    ({"eval": "bogus"}, "'bogus'; accepted: test, train"),
    ({"n_train": 1}, "n_train must be at least 2, got 1"),
    ({"n_train": 0}, "n_train must be a positive integer, got 0"),
    ({"n_test": -3}, "n_test must be a positive integer, got -3"),
    ({"target": "y"}, "target='y' applies only to file:PATH"),
    ({"seed": -1}, "seed must be an integer in [0, 2**32), got -1"),
    ({"seed": 1.5}, "seed must be an integer in [0, 2**32), got 1.5"),
    ({"seed": 2**64}, f"seed must be an integer in [0, 2**32), got {2**64}"),
    ({"dtype": "int32"}, "dtype must be float32 or float64"),
])
def test_bad_arguments(kwargs, needle):
    with pytest.raises(UsageError) as err:
        make_dataset("sin", **kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_float64_request_without_x64_is_refused():
    with jax.enable_x64(False):
        with pytest.raises(UsageError, match="float64"):
            make_dataset("sin", n_train=4, n_test=4, dtype=jnp.float64)
        assert make_dataset("sin", n_train=4, n_test=4).x_train.dtype == jnp.float32


def test_user_callable_problem():
    def bump(x):
        return jnp.exp(-jnp.sum(x**2, axis=1))

    ds = make_dataset(bump, n_in=2, n_train=10, n_test=16, seed=2)
    assert ds.name == "bump" and ds.n_in == 2 and ds.n_out == 1
    assert ds.x_train.shape == (10, 2) and ds.x_test.shape == (16, 2)
    np.testing.assert_allclose(ds.y_train[:, 0], bump(ds.x_train))

    two = make_dataset(lambda x: jnp.concatenate([x, x**2], axis=1), n_in=1, n_train=5, n_test=9)
    assert two.y_train.shape == (5, 2) and two.y_test.shape == (9, 2)

    with pytest.raises(UsageError, match="shape"):
        make_dataset(lambda x: x[:, :, None], n_in=1, n_train=5, n_test=5)
    with pytest.raises(UsageError, match="non-finite"):
        make_dataset(lambda x: jnp.log(x[:, 0] - 2), n_in=1, n_train=5, n_test=5)
    with pytest.raises(UsageError, match="n_in must be a positive integer"):
        make_dataset(bump, n_in=0)
    with pytest.raises(UsageError, match="not to a callable"):
        make_dataset(bump, n_in=2, target="y")
