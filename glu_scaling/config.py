"""A sweep's settings (`SweepConfig`, what config.json holds) and their checks, made once
where a sweep enters (`check_sweep`), before any data is loaded or anything written."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import jax
import numpy as np

from glu_scaling import architectures, distributed, models, problems
from glu_scaling.errors import UsageError, check_positive_int, unknown
from glu_scaling.inits import InitConfig, has_later_factors
from glu_scaling.knots import MAX_PLACED_DEGREE
from glu_scaling.schedules import OPTIMIZERS, TrainConfig
from glu_scaling.specs import SEED_LIMIT, parse_spec


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Everything that defines a sweep: which models, how they start and train, on what data.

    config.json holds it flat (`to_json`); `sweep_config` and `replace` take the same flat
    names and route each to the one place it belongs.
    """

    archs: tuple[str, ...]
    widths: tuple[int, ...]
    seeds: tuple[int, ...]
    problem: str = "one_over_1_p_9x2"  # a registered name or "file:PATH"
    train: TrainConfig = TrainConfig()  # optimizer, steps, learning rate, gate steps, chunk
    init: InitConfig = InitConfig()  # spline or random gates, their knots, later factors
    n_data: int | None = None  # training points of a generated problem, or a cap on a table's rows
    n_test: int | None = None  # test points likewise
    data_seed: int = 0  # seed of the data (generated inputs, a table's split)
    activation: str = "relu"
    eval: str = "test"  # score on held-out data, or on the training data ("train", as the reference)
    target: str | None = None  # a file:PATH table's target column (None: the last)
    dtype: str = "float64"
    batch_size: int | None = None  # models vmapped together on one device (None: planned); not part of a model
    devices: int | None = None  # devices a bucket is sharded over (None: all visible); not part of a model

    def __post_init__(self):
        # an architecture object (`units.Unit`, `dense.Dense`) is registered and kept by its name, as in config.json
        if isinstance(self.archs, list | tuple) and any(architectures.is_architecture(a) for a in self.archs):
            named = [architectures.arch_name(architectures.register(a)) if architectures.is_architecture(a) else a
                     for a in self.archs]
            object.__setattr__(self, "archs", tuple(named))

    def replace(self, **settings) -> SweepConfig:
        """A copy with the given flat settings changed (steps=0, knots="placed", n_data=..., ...)."""
        own, train, init = _route(settings)
        return dataclasses.replace(self, **own, train=dataclasses.replace(self.train, **train),
                                   init=dataclasses.replace(self.init, **init))

    def to_json(self) -> dict:
        """The flat settings of config.json."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("train", "init")}
        for key in ("archs", "widths", "seeds"):
            d[key] = list(d[key])
        return {**d, **dataclasses.asdict(self.train), **dataclasses.asdict(self.init)}


_TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))
_INIT_KEYS = tuple(f.name for f in dataclasses.fields(InitConfig))
_OWN_KEYS = tuple(f.name for f in dataclasses.fields(SweepConfig) if f.name not in ("train", "init"))


def _route(settings: dict) -> tuple[dict, dict, dict]:
    """Flat settings split into (SweepConfig's own, TrainConfig's, InitConfig's)."""
    groups = ({}, {}, {})
    for key, value in settings.items():
        place = next((i for i, keys in enumerate((_OWN_KEYS, _TRAIN_KEYS, _INIT_KEYS)) if key in keys), None)
        if place is None:  # a TypeError, as Python's own for an unexpected keyword argument
            raise TypeError(str(unknown("sweep setting", key, (*_OWN_KEYS[3:], *_TRAIN_KEYS, *_INIT_KEYS))))
        groups[place][key] = value
    return groups


def sweep_config(archs, widths, seeds, **settings) -> SweepConfig:
    """A SweepConfig from flat settings (the names of config.json and `gs.sweep`'s keywords):
    optimizer, steps, learning_rate, gate_steps, knot_moves and chunk make its TrainConfig; spline_init,
    knots and factor_init its InitConfig; the rest are its own."""
    own, train, init = _route(settings)
    return SweepConfig(archs=archs, widths=widths, seeds=seeds, **own, train=TrainConfig(**train),
                       init=InitConfig(**init))


MAX_POINTS = 10**8  # training or test points of one sweep (1e8 1D points are 1.6 GB of float64 data)


def check_sweep(config: SweepConfig) -> None:
    """Refuse (UsageError, one line) any setting of `config` a sweep cannot run: names,
    counts and their limits, SPECs, seeds, knots, devices.  Needs no data."""
    if isinstance(config.archs, str) or not config.archs:
        raise UsageError(f"archs must be a non-empty list of names such as ('mlp', 'glu'), got {config.archs!r}")
    for arch in config.archs:
        architectures.resolve(arch)  # "unknown architecture ... (did you mean ...)" for a bad name; loads module:NAME
    models.activation_fn(config.activation)
    if not isinstance(config.train, TrainConfig) or not isinstance(config.init, InitConfig):
        raise UsageError("SweepConfig.train and .init must be a TrainConfig and an InitConfig; build a SweepConfig "
                         "from flat settings with config.sweep_config(archs, widths, seeds, optimizer=..., ...)")
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
    distributed.resolve_devices(config.devices)
    for name in ("n_data", "n_test"):
        value = getattr(config, name)
        if value is not None:
            check_positive_int(name, value, maximum=MAX_POINTS)
    if config.n_data is not None and config.n_data < 2:
        raise UsageError(f"n_data must be at least 2, got {config.n_data}")
    parse_spec(config.widths, "widths")
    parse_spec(config.seeds, "seeds", minimum=0)
    check_knots(config)
    ds = config.data_seed
    if isinstance(ds, bool) or not isinstance(ds, int | np.integer) or not 0 <= ds < SEED_LIMIT:
        raise UsageError(f"data_seed (--data-seed) must be an integer in [0, 2**32), got {ds!r}")


def check_knots(config: SweepConfig) -> None:
    """knots "placed" needs a registered 1D target f and spline degrees k + 1 <=
    MAX_PLACED_DEGREE (the init's own settings are checked by InitConfig)."""
    if config.init.knots == "uniform":
        return
    if config.problem not in problems.TARGETS_1D:
        raise UsageError(f"knots 'placed' needs a 1D problem with a known target f (one of "
                         f"{', '.join(problems.TARGETS_1D)}), got problem {config.problem!r}")
    for arch in config.archs:
        degree, obj = architectures.degree(arch), architectures.resolve(arch)
        if degree is None or degree > MAX_PLACED_DEGREE or (obj is not None and obj.gate is None):
            raise UsageError(f"knots 'placed' works for gated spline degrees up to {MAX_PLACED_DEGREE} "
                             f"(mlp, glu, gqu, or a unit with a gate and a degree), got arch {arch!r} "
                             f"(degree {degree})")


def effective_settings(settings: dict) -> dict:
    """A config's model-defining settings (`results.MODEL_KEYS`) as its models were made:
    None replaced by the default it stands for (steps, learning rate, a generated problem's
    n_data and n_test) and a setting the run ignores set to None (steps for
    `newton-splines`, the learning rate for Newton, n_test with eval "train", gate_steps
    but for newton-cascade, knot_moves without a knot stage or for a registered problem
    of more than one input, factor_init when no architecture has a second factor:
    `results.MAY_NOT_APPLY`), so that resuming
    with an explicit default, or with an ignored setting, is not a different run."""
    s = dict(settings)
    spec = problems.REGISTRY.get(s.get("problem")) if isinstance(s.get("problem"), str) else None
    optimizer = s.get("optimizer")
    if optimizer in OPTIMIZERS:  # (a hand-edited config may name none: compared as it is)
        train = TrainConfig(optimizer)
        s["steps"] = (train.n_steps if s.get("steps") is None else s["steps"]) if train.uses_steps else None
        if not train.has_gate_stage:
            s["gate_steps"] = None
        if not train.has_knot_stage or (spec is not None and spec.n_in != 1):
            s["knot_moves"] = None
        s["learning_rate"] = (train.lr if s.get("learning_rate") is None else s["learning_rate"]) \
            if not train.newton else None
    else:
        s["gate_steps"] = s["knot_moves"] = None
    if spec is not None and not spec.tabular:  # generated data: None means the default count
        s["n_data"] = problems.DEFAULT_N_TRAIN if s.get("n_data") is None else s["n_data"]
        s["n_test"] = problems.DEFAULT_N_TEST if s.get("n_test") is None else s["n_test"]
    if s.get("eval") == "train":  # the test points are the training points
        s["n_test"] = None
    archs = s.get("archs")
    if isinstance(archs, list | tuple) and not has_later_factors(archs):
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
