"""Target problems: a registry of named regression problems and the data they produce.

`make_dataset(problem, ...)` returns a `Dataset` with x_train (N, n_in), y_train
(N, n_out), x_test (M, n_in), y_test (M, n_out) in the requested dtype.

* Analytic targets on [-1, 1]^n_in (paper.md §6): training inputs uniform-random
  from `seed`, test inputs a uniform grid (M points in 1D, round(sqrt(M))^2 in 2D).
* Friedman #1-#3: generated here from their formulas (noise 0), features and target
  standardised with the training split's statistics; test points are fresh draws.
* Tabular data (`airfoil`, `california`, `file:PATH`): see `glu_scaling.datasets`.
  All rows are used: a seeded 80/20 held-out split, standardised with the training
  split's statistics; n_train / n_test only cap the rows taken from each side.
* A user's JAX-traceable callable f: x (N, n_in) -> (N,) or (N, n_out).

`eval="train"` scores on the training set (x_test = x_train, y_test = y_train), as the
reference did for its real data; for tabular data it also drops the split (all rows
train, standardised with their own statistics).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from glu_scaling import compilation, datasets
from glu_scaling.errors import UsageError, check_choice, check_positive_int, unknown
from glu_scaling.models import check_float_dtype

EVAL_MODES = datasets.EVAL_MODES
DEFAULT_N_TRAIN = 2000  # generated problems when n_train is None (tabular: all rows)
DEFAULT_N_TEST = 2000  # generated problems when n_test is None (tabular: all test rows)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Training and test arrays of one problem.

    `eval` is "test" (held-out / fresh test points) or "train" (x_test is x_train).
    `n_in` and `n_out` are the input and output dimensions a results record carries.
    """

    name: str
    x_train: jax.Array  # (N, n_in)
    y_train: jax.Array  # (N, n_out)
    x_test: jax.Array  # (M, n_in)
    y_test: jax.Array  # (M, n_out)
    eval: str = "test"

    @property
    def n_in(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_out(self) -> int:
        return self.y_train.shape[1]


@dataclasses.dataclass(frozen=True)
class Problem:
    """A registered problem: its name, input dimension, description and generator.

    `make(n_train, n_test, seed, dtype) -> (x_train, y_train, x_test, y_test)` as
    numpy or jax arrays, x (N, n_in), y (N,) or (N, n_out).

    Tabular problems (`tabular=True`: packaged data sets, users' files) take
    `make(n_train, n_test, seed, dtype, eval)` where n_train / n_test are optional
    caps (None: all rows) and eval is one of `EVAL_MODES`.
    """

    name: str
    n_in: int
    description: str
    make: Callable
    tabular: bool = False


REGISTRY: dict[str, Problem] = {}


def register(problem: Problem) -> Problem:
    REGISTRY[problem.name] = problem
    return problem


# ------------------------------------------------------------------ analytic targets

_TARGETS_1D = {
    "x2": ("x^2", lambda x: x**2),
    "x3": ("x^3", lambda x: x**3),
    "cos": ("cos(4x)", lambda x: jnp.cos(4 * x)),
    "sin": ("sin(4x)", lambda x: jnp.sin(4 * x)),
    "sin_x2": ("sin(4(x-1)^2)", lambda x: jnp.sin(4 * (x - 1) ** 2)),
    "one_over_1_p_x2": ("1/(1+x^2)", lambda x: 1 / (1 + x**2)),
    "one_over_1_p_9x2": ("1/(1+9x^2)", lambda x: 1 / (1 + 9 * x**2)),
    "atan": ("atan(x)", jnp.arctan),
    "paper_1d": ("1/(1+cos^2(pi x))", lambda x: 1 / (1 + jnp.cos(jnp.pi * x) ** 2)),
}

_TARGETS_2D = {
    "x2_y2": ("x^2+y^2", lambda x, y: x**2 + y**2),
    "x3_y3": ("x^3+y^3", lambda x, y: x**3 + y**3),
    "cos_x_cos_y": ("cos(4x)cos(4y)", lambda x, y: jnp.cos(4 * x) * jnp.cos(4 * y)),
    "sin_x_sin_y": ("sin(4x)sin(4y)", lambda x, y: jnp.sin(4 * x) * jnp.sin(4 * y)),
    "sin_x_sin_y_x2_y2": ("sin(4x)sin(4y)(x^2+y^2)",
                          lambda x, y: jnp.sin(4 * x) * jnp.sin(4 * y) * (x**2 + y**2)),
    "one_over_1_p_x2_y2": ("1/(1+x^2+y^2)", lambda x, y: 1 / (1 + x**2 + y**2)),
    "one_over_1_p_9x2_9y2": ("1/(1+9x^2+9y^2)", lambda x, y: 1 / (1 + 9 * x**2 + 9 * y**2)),
    "atan_x_atan_y": ("atan(x)+atan(y)", lambda x, y: jnp.arctan(x) + jnp.arctan(y)),
}

TARGETS_1D = tuple(_TARGETS_1D)  # the 1D problems with a known f (knots can be placed for them)


def scalar_target(name: str) -> Callable:
    """The scalar function f(x) of a registered 1D target (JAX-traceable)."""
    if name not in _TARGETS_1D:
        raise unknown("1D target", name, _TARGETS_1D)
    return _TARGETS_1D[name][1]


def uniform_grid(n_points: int, n_in: int, interval=(-1.0, 1.0), dtype=np.float64) -> np.ndarray:
    """A uniform tensor grid on interval^n_in with about n_points points; (M, n_in)."""
    side = n_points if n_in == 1 else max(2, round(n_points ** (1.0 / n_in)))
    axis = np.linspace(interval[0], interval[1], side, dtype=dtype)
    mesh = np.meshgrid(*([axis] * n_in), indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


@compilation.jit_with(brief=True, static_argnames=("shape", "dtype"))
def uniform_points(key: jax.Array, shape: tuple[int, int], dtype) -> jax.Array:
    """`jax.random.uniform(key, shape, dtype, -1, 1)`, the same bits, compiled as a brief
    program (it runs once per data set)."""
    return jax.random.uniform(key, shape, dtype, minval=-1.0, maxval=1.0)


def _analytic(fn_of_x: Callable, n_in: int) -> Callable:
    def make(n_train, n_test, seed, dtype):
        x_train = uniform_points(jax.random.PRNGKey(seed), (n_train, n_in), dtype)
        x_test = jnp.asarray(uniform_grid(n_test, n_in), dtype)
        return x_train, fn_of_x(x_train), x_test, fn_of_x(x_test)

    return make


for _name, (_formula, _f) in _TARGETS_1D.items():
    register(Problem(_name, 1, f"{_formula} on [-1, 1]", _analytic(lambda x, f=_f: f(x[:, :1]), 1)))
for _name, (_formula, _f) in _TARGETS_2D.items():
    register(Problem(_name, 2, f"{_formula} on [-1, 1]^2",
                     _analytic(lambda x, f=_f: f(x[:, :1], x[:, 1:2]), 2)))


# ------------------------------------------------------------------ Friedman #1-#3


def friedman1_target(x: np.ndarray) -> np.ndarray:
    """10 sin(pi x0 x1) + 20 (x2 - 0.5)^2 + 10 x3 + 5 x4, x (N, 5)."""
    return 10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3] + 5 * x[:, 4]


def _friedman23_inputs(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.uniform(size=(n, 4))
    x[:, 0] *= 100
    x[:, 1] = x[:, 1] * 520 * np.pi + 40 * np.pi
    x[:, 3] = x[:, 3] * 10 + 1
    return x


def friedman2_target(x: np.ndarray) -> np.ndarray:
    """sqrt(x0^2 + (x1 x2 - 1/(x1 x3))^2), x (N, 4)."""
    return np.sqrt(x[:, 0] ** 2 + (x[:, 1] * x[:, 2] - 1 / (x[:, 1] * x[:, 3])) ** 2)


def friedman3_target(x: np.ndarray) -> np.ndarray:
    """arctan((x1 x2 - 1/(x1 x3)) / x0), x (N, 4)."""
    return np.arctan((x[:, 1] * x[:, 2] - 1 / (x[:, 1] * x[:, 3])) / x[:, 0])


def _friedman(inputs: Callable, target: Callable) -> Callable:
    def make(n_train, n_test, seed, dtype):
        rng = np.random.default_rng(seed)
        x = inputs(rng, n_train + n_test)
        y = target(x)[:, None]
        return datasets.standardise(x[:n_train], y[:n_train], x[n_train:], y[n_train:])

    return make


register(Problem("friedman1", 5, "Friedman #1: 10 sin(pi x0 x1) + 20 (x2-0.5)^2 + 10 x3 + 5 x4, x ~ U[0,1]^5",
                 _friedman(lambda rng, n: rng.uniform(size=(n, 5)), friedman1_target)))
register(Problem("friedman2", 4, "Friedman #2: sqrt(x0^2 + (x1 x2 - 1/(x1 x3))^2)",
                 _friedman(_friedman23_inputs, friedman2_target)))
register(Problem("friedman3", 4, "Friedman #3: arctan((x1 x2 - 1/(x1 x3)) / x0)",
                 _friedman(_friedman23_inputs, friedman3_target)))


# ------------------------------------------------------------------ tabular data sets


def _packaged(loader: str) -> Callable:
    """`make` of a packaged data set; `datasets.<loader>()` -> (x (N, n_in), y (N, 1)).

    The file is read, checksummed and parsed on first use only (then cached).
    """

    def make(n_train, n_test, seed, dtype, eval="test"):
        x, y = getattr(datasets, loader)()
        return datasets.split_standardise(x, y, seed=seed, n_train=n_train, n_test=n_test, eval=eval)

    return make


register(Problem(
    "airfoil", 5,
    "Airfoil self-noise (NASA; Brooks, Pope & Marcolini 1989; UCI ML Repository #291, CC BY 4.0): "
    "1503 rows, Freq, Angle, Length, Vel, Displ -> Pressure [dB]",
    _packaged("airfoil_arrays"), tabular=True))
register(Problem(
    "california", 8,
    "California housing (1990 census block groups; Pace & Barry 1997, StatLib): 20640 rows, "
    "MedInc, HouseAge, AveRooms, AveBedrms, Population, AveOccup, Latitude, Longitude "
    "-> median house value / 1e5",
    _packaged("california_arrays"), tabular=True))


# ------------------------------------------------------------------ entry point


def accepted_problems() -> list[str]:
    return [*REGISTRY, "file:PATH"]


def _problem_candidates(name) -> list[str]:
    """What to suggest for an unknown problem name: "file:NAME" for a data file's path
    given without its "file:" prefix, else the registered names."""
    if isinstance(name, str) and name.lower().endswith(datasets.FILE_EXTENSIONS):
        return [f"file:{name}"]
    return list(REGISTRY)


def _file_problem(path: str, target: str | None = None) -> Problem:
    """A tabular `Problem` named "file:PATH" for a user's data file (read and checked now)."""
    x, y = datasets.read_file(path, target)
    x.flags.writeable = False
    y.flags.writeable = False
    if path.lower().endswith(".npz"):
        what = f"y ({y.shape[1]} output(s))"
    else:
        what = "last column" if target is None else f"column {target!r}"

    def make(n_train, n_test, seed, dtype, eval="test"):
        return datasets.split_standardise(x, y, seed=seed, n_train=n_train, n_test=n_test, eval=eval)

    return Problem(f"file:{path}", x.shape[1],
                   f"user data {path}: {x.shape[0]} rows, {x.shape[1]} features -> {what}",
                   make, tabular=True)


def get_problem(name: str, *, target: str | None = None) -> Problem:
    """The registered problem `name`, or a user's data file for "file:PATH".

    `target` (a column name) applies to "file:PATH" problems with a .csv / .tsv file only.
    """
    if isinstance(name, str) and name.startswith("file:"):
        return _file_problem(name[len("file:"):], target=target)
    if not isinstance(name, str) or name not in REGISTRY:
        raise unknown("problem", name, accepted_problems(), candidates=_problem_candidates(name))
    if target is not None:
        raise UsageError(f"target={target!r} applies only to file:PATH problems, not to {name!r}")
    return REGISTRY[name]


def _check_cap(kind: str, value) -> int | None:
    """None, or `value` as a positive int of at least 2 (n_train) / 1 (n_test)."""
    if value is None:
        return None
    value = check_positive_int(kind, value)
    if kind == "n_train" and value < 2:
        raise UsageError(f"n_train must be at least 2, got {value}")
    return value


def _as_2d(label: str, a, dtype, n_rows: int | None, name: str) -> jax.Array:
    """`a` as a (N, k) array of `dtype`; a (N,) array becomes (N, 1)."""
    a = jnp.asarray(a, dtype)
    a = a[:, None] if a.ndim == 1 else a
    if a.ndim != 2 or (n_rows is not None and a.shape[0] != n_rows):
        want = "(N, n)" if n_rows is None else f"({n_rows},) or ({n_rows}, n)"
        raise UsageError(f"problem {name!r} produced {label} of shape {tuple(a.shape)}; expected {want}")
    return a


def make_dataset(
    problem: str | Callable,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    n_in: int = 1,
    dtype=None,
    target: str | None = None,
    eval: str = "test",
) -> Dataset:
    """Training and test data of a named problem or a user's callable.

    Args:
      problem: a registered name (see `REGISTRY`), "file:PATH", or a JAX-traceable
        callable mapping x (N, n_in) to (N,) or (N, n_out) on [-1, 1]^n_in.
      n_train, n_test: generated problems: number of training points and (about)
        test points (None: 2000 each). Tabular data (airfoil, california, file:PATH):
        optional caps on the rows taken from the seeded 80/20 split (None: all rows).
      seed: seed of the training inputs (and of splits / generated inputs).
      n_in: input dimension of a callable problem (ignored for names).
      dtype: float dtype of the arrays (default: float64 if x64 is on, else float32).
      target: target column of a file:PATH .csv / .tsv (default: the last column).
      eval: "test" (held-out data) or "train" (score on the training set: x_test is
        x_train; tabular data then uses all rows, with no split).

    Returns:
      A `Dataset` with x_train (N, n_in), y_train (N, n_out), x_test (M, n_in),
      y_test (M, n_out), all finite, of `dtype`.
    """
    dtype = check_float_dtype(dtype)
    n_train = _check_cap("n_train", n_train)
    n_test = _check_cap("n_test", n_test)
    if isinstance(seed, bool) or not hasattr(seed, "__index__") or not 0 <= int(seed.__index__()) < 2**32:
        raise UsageError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    seed = int(seed.__index__())
    eval = check_choice("eval", eval, EVAL_MODES)
    if callable(problem):
        if target is not None:
            raise UsageError(f"target={target!r} applies only to file:PATH problems, not to a callable")
        name = getattr(problem, "__name__", "callable")
        spec = Problem(name, check_positive_int("n_in", n_in), "user callable", _analytic(problem, n_in))
    else:
        spec = get_problem(problem, target=target)
    if spec.tabular:
        x_train, y_train, x_test, y_test = spec.make(n_train, n_test, seed, dtype, eval)
    else:
        x_train, y_train, x_test, y_test = spec.make(
            DEFAULT_N_TRAIN if n_train is None else n_train,
            DEFAULT_N_TEST if n_test is None else n_test, seed, dtype)
    x_train = _as_2d("x_train", x_train, dtype, None, spec.name)
    y_train = _as_2d("y_train", y_train, dtype, x_train.shape[0], spec.name)
    if eval == "train":
        x_test, y_test = x_train, y_train
    x_test = _as_2d("x_test", x_test, dtype, None, spec.name)
    y_test = _as_2d("y_test", y_test, dtype, x_test.shape[0], spec.name)
    if x_test.shape[1] != x_train.shape[1] or y_test.shape[1] != y_train.shape[1]:
        raise UsageError(f"problem {spec.name!r} produced test arrays {tuple(x_test.shape)}, "
                         f"{tuple(y_test.shape)} unlike its training arrays "
                         f"{tuple(x_train.shape)}, {tuple(y_train.shape)}")
    arrays = (x_train, y_train, x_test, y_test)
    for label, a in zip(("x_train", "y_train", "x_test", "y_test"), arrays):
        if not np.isfinite(np.asarray(a)).all():
            raise UsageError(f"problem {spec.name!r} produced non-finite values in {label}")
    return Dataset(spec.name, *arrays, eval=eval)
