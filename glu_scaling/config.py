"""A sweep's settings (`SweepConfig`, what config.json holds) and their checks, made once
where a sweep enters (`check_sweep`), before any data is loaded or anything written."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import jax
import numpy as np

from glu_scaling import distributed, inits, models, newton, problems, splines, train
from glu_scaling.errors import MAX_COUNT, UsageError, check_choice, check_positive_int, unknown
from glu_scaling.specs import SEED_LIMIT, parse_spec


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Everything that defines a sweep (written to config.json)."""

    archs: tuple[str, ...]
    widths: tuple[int, ...]
    seeds: tuple[int, ...]
    problem: str = "one_over_1_p_9x2"
    optimizer: str = "newton-cascade"
    steps: int | None = None
    gate_steps: int = 1  # newton-cascade's Newton steps on {G, g} (the reference's code takes 3)
    learning_rate: float | None = None
    n_data: int | None = None
    n_test: int | None = None
    data_seed: int = 0
    activation: str = "relu"
    spline_init: bool = True
    knots: str = "uniform"  # the 1D spline init's knots: evenly spaced, or placed for the target
    factor_init: str = "one"  # how factors 2..k start: the constant 1, or N(0, 1) (inits.FACTOR_INITS)
    eval: str = "test"
    target: str | None = None
    dtype: str = "float64"
    chunk: int = 2048
    batch_size: int | None = None  # models vmapped together on one device (None: auto)
    devices: int | None = None  # devices the batch is sharded over (None: all visible); not part of a model
    rungs_per_round: int = 1  # damping rungs factored per round (`newton.damped_cholesky_solve`); not part of a model
    cholesky_block: int = 0  # > 0: blocked Cholesky, blocks of this many columns (`newton.Ladder`); not part of a model

    @property
    def ladder(self) -> newton.Ladder:
        return newton.Ladder(self.rungs_per_round, self.cholesky_block)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("archs", "widths", "seeds"):
            d[key] = list(d[key])
        return d


MAX_POINTS = 10**8  # training or test points of one sweep (1e8 1D points are 1.6 GB of float64 data)


def check_sweep(config: SweepConfig) -> None:
    """Refuse (UsageError, one line) any setting of `config` a sweep cannot run: names,
    counts and their limits, SPECs, seeds, knots, devices.  Needs no data."""
    if isinstance(config.archs, str) or not config.archs:
        raise UsageError(f"archs must be a non-empty list of names such as ('mlp', 'glu'), got {config.archs!r}")
    for arch in config.archs:
        models.n_factors(arch)  # "unknown architecture ... (did you mean ...)" for a bad name
    models.activation_fn(config.activation)
    train.TrainConfig(config.optimizer, rungs_per_round=config.rungs_per_round, cholesky_block=config.cholesky_block,
                      gate_steps=config.gate_steps)
    if config.dtype not in ("float32", "float64"):
        raise unknown("dtype", config.dtype, ("float32", "float64"))
    if config.dtype == "float64" and not jax.config.jax_enable_x64:
        raise UsageError("dtype float64 needs jax_enable_x64; call jax.config.update('jax_enable_x64', True) "
                         "first (the CLI does), or pass dtype='float32'")
    if not isinstance(config.problem, str):
        raise UsageError(f"problem must be a registered name or 'file:PATH', got {config.problem!r}; register "
                         "your own target with problems.register(problems.Problem(name, n_in, description, make))")
    if config.batch_size is not None:
        check_positive_int("batch_size", config.batch_size)
    check_positive_int("chunk", config.chunk)
    distributed.resolve_devices(config.devices)
    if config.steps is not None and (isinstance(config.steps, bool) or not isinstance(config.steps, int | np.integer)
                                     or not 0 <= config.steps <= MAX_COUNT):
        raise UsageError(f"steps must be an integer in [0, {MAX_COUNT}], got {config.steps!r}")
    lr = config.learning_rate
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float | np.number)
                           or not np.isfinite(lr) or lr <= 0):
        raise UsageError(f"learning rate (--lr) must be a positive finite number, got {lr!r}")
    for name in ("n_data", "n_test"):
        value = getattr(config, name)
        if value is not None:
            check_positive_int(name, value, maximum=MAX_POINTS)
    if config.n_data is not None and config.n_data < 2:
        raise UsageError(f"n_data must be at least 2, got {config.n_data}")
    parse_spec(config.widths, "widths")
    parse_spec(config.seeds, "seeds", minimum=0)
    check_knots(config)
    check_choice("factor_init", config.factor_init, inits.FACTOR_INITS)
    ds = config.data_seed
    if isinstance(ds, bool) or not isinstance(ds, int | np.integer) or not 0 <= ds < SEED_LIMIT:
        raise UsageError(f"data_seed (--data-seed) must be an integer in [0, 2**32), got {ds!r}")


def check_knots(config: SweepConfig) -> None:
    """knots "placed" needs the spline init, a registered 1D target f and spline degrees
    k + 1 <= splines.MAX_PLACED_DEGREE."""
    check_choice("knots", config.knots, inits.KNOT_PLACEMENTS)
    if config.knots == "uniform":
        return
    if not config.spline_init:
        raise UsageError("knots 'placed' positions the spline init's knots; it cannot go with the random init "
                         "(--random-init)")
    if config.problem not in problems.TARGETS_1D:
        raise UsageError(f"knots 'placed' needs a 1D problem with a known target f (one of "
                         f"{', '.join(problems.TARGETS_1D)}), got problem {config.problem!r}")
    for arch in config.archs:
        if models.n_factors(arch) + 1 > splines.MAX_PLACED_DEGREE:
            raise UsageError(f"knots 'placed' works for spline degrees up to {splines.MAX_PLACED_DEGREE} (mlp, glu, gqu), "
                             f"got arch {arch!r} (degree {models.n_factors(arch) + 1})")


def effective_settings(settings: dict) -> dict:
    """A config's model-defining settings (`results.MODEL_KEYS`) as its models were made:
    None replaced by the default it stands for (steps, learning rate, a generated problem's
    n_data and n_test) and a setting the run ignores set to None (steps for
    `newton-splines`, the learning rate for Newton, n_test with eval "train", gate_steps
    but for newton-cascade, factor_init when no architecture has a second factor:
    `results.MAY_NOT_APPLY`), so that resuming
    with an explicit default, or with an ignored setting, is not a different run."""
    s = dict(settings)
    optimizer = s.get("optimizer")
    if optimizer == "newton-splines":  # one step per layer: there is no step count
        s["steps"] = None
    elif s.get("steps") is None:
        s["steps"] = train.DEFAULT_STEPS.get(optimizer)
    if optimizer != "newton-cascade":  # only the cascade has a gate stage
        s["gate_steps"] = None
    if optimizer in train.NEWTON_SCHEDULES:
        s["learning_rate"] = None
    elif s.get("learning_rate") is None:
        s["learning_rate"] = train.DEFAULT_LR.get(optimizer)
    spec = problems.REGISTRY.get(s.get("problem")) if isinstance(s.get("problem"), str) else None
    if spec is not None and not spec.tabular:  # generated data: None means the default count
        s["n_data"] = problems.DEFAULT_N_TRAIN if s.get("n_data") is None else s["n_data"]
        s["n_test"] = problems.DEFAULT_N_TEST if s.get("n_test") is None else s["n_test"]
    if s.get("eval") == "train":  # the test points are the training points
        s["n_test"] = None
    archs = s.get("archs")
    if isinstance(archs, list | tuple) and not inits.has_later_factors(archs):
        s["factor_init"] = None  # mlp and glu have no factor 2 to start
    return s


def data_fingerprint(config: SweepConfig) -> dict:
    """{"data_sha256": ...} of a file:PATH problem's file (so that a folder never mixes models
    trained on two versions of it), {} for the package's own problems."""
    if not config.problem.startswith("file:"):
        return {}
    path = Path(config.problem[len("file:"):])
    try:
        return {"data_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    except OSError:  # load_dataset already read it; a file gone since then is refused there next time
        return {}


def load_dataset(config: SweepConfig) -> problems.Dataset:
    return problems.make_dataset(config.problem, n_train=config.n_data, n_test=config.n_test,
                                 seed=config.data_seed, dtype=config.dtype, eval=config.eval,
                                 target=config.target)
