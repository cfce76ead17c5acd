"""Sweeps: every (architecture, width, seed) of a study, trained bucket by bucket.

For one architecture the requested widths are grouped into a few contiguous
buckets (`plan_buckets`); every model of a bucket is padded to the bucket's
largest width and all of them train in one compiled call (`train.train_batch`).
Finished buckets are appended to results.jsonl at once, so an interrupted sweep
resumes by training only the models that are missing.

With several devices the models of a bucket are split over all of them
(`SweepConfig.devices`, `distributed.make_mesh`, `train.train_batch`); in a
multi-host run (`distributed.initialize`) every process writes the models its own
devices trained to results.host{K}.jsonl, and process 0 alone writes config.json
and slopes.json (`glu-scaling merge DIR` folds the host files into results.jsonl).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from glu_scaling import compilation, distributed, models, newton, problems, results, slopes, spline_init, train
from glu_scaling.errors import MAX_COUNT, UsageError, check_choice, check_positive_int, unknown

MAX_SPEC_LENGTH = 100_000  # values in one widths / seeds spec


def parse_spec(spec: str | int | Sequence[int], kind: str = "widths", minimum: int = 1,
               maximum: int | None = None) -> list[int]:
    """Parse 'lo:hi[:step]' (hi exclusive, as range), 'a,b,c' or an int into a sorted list
    of at most MAX_SPEC_LENGTH values in [minimum, maximum] (maximum None: 2**32 - 1 for
    seeds, which become uint32 PRNG keys, else `errors.MAX_COUNT`)."""
    if maximum is None:
        maximum = SEED_LIMIT - 1 if kind == "seeds" else MAX_COUNT
    if isinstance(spec, int | np.integer) and not isinstance(spec, bool):
        values = [int(spec)]
    elif isinstance(spec, str):
        text = spec.strip()
        try:
            if ":" in text:
                parts = [int(p) for p in text.split(":")]
                if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] <= 0):
                    raise ValueError
                values = range(*parts)  # checked against MAX_COUNT below before it is listed
            else:
                values = [int(p) for p in text.split(",")] if text else []
        except ValueError:
            raise UsageError(f"malformed {kind} spec {spec!r}; use lo:hi[:step] (hi exclusive, step > 0) "
                             f"or a comma list such as 1,2,4") from None
    else:
        try:
            values = [_integer(v) for v in spec]
        except (AttributeError, TypeError, ValueError):
            raise UsageError(f"malformed {kind} {spec!r}; give integers, a lo:hi[:step] string "
                             f"or a comma list such as '1,2,4'") from None
    if not values:
        raise UsageError(f"{kind} spec {spec!r} is empty; use lo:hi[:step] with lo < hi, or a comma list")
    lo, hi = (values[0], values[-1]) if isinstance(values, range) else (min(values), max(values))  # O(1) on a range
    if lo < minimum:
        raise UsageError(f"{kind} must be >= {minimum}, got {lo} in {spec!r}")
    if hi > maximum:
        raise UsageError(f"{kind} must be <= {maximum}, got {hi}")
    if len(values) > MAX_SPEC_LENGTH:
        raise UsageError(f"{kind} spec {spec!r} gives {len(values)} values; at most {MAX_SPEC_LENGTH} are accepted")
    return sorted(set(values))


def _integer(value) -> int:
    """`value` as an int if it is an integer (a bool or a float is not), else TypeError."""
    if isinstance(value, bool):
        raise TypeError(f"{value!r} is not an integer")
    return int(value.__index__())


def plan_buckets(widths: Sequence[int], *, seconds_per_w2: float = 0.0, compile_seconds: float = 3.0,
                 max_buckets: int = 8) -> list[list[int]]:
    """Group sorted widths into contiguous buckets, each padded to its largest width.

    Each bucket costs one compilation (`compile_seconds`) and each model in it
    `seconds_per_w2 * W^2` to train at the padded width W (the J^T J product grows
    like W^2).  Dynamic programming picks the bucketing of least total cost, with
    at most `max_buckets` buckets.  Cheap sweeps get one bucket; expensive ones
    are split so that little work is wasted on padding.
    """
    w = sorted(set(widths))
    m = len(w)
    inf = float("inf")
    kmax = min(max_buckets, m)
    # cost[j][b]: least cost of w[:j] in exactly b buckets
    cost = [[inf] * (kmax + 1) for _ in range(m + 1)]
    back = [[0] * (kmax + 1) for _ in range(m + 1)]
    cost[0][0] = 0.0
    for j in range(1, m + 1):
        for b in range(1, kmax + 1):
            for i in range(b - 1, j):
                c = cost[i][b - 1] + compile_seconds + seconds_per_w2 * (j - i) * w[j - 1] ** 2
                if c < cost[j][b]:
                    cost[j][b], back[j][b] = c, i
    k = min(range(1, kmax + 1), key=lambda b: cost[m][b])
    buckets, j = [], m
    for b in range(k, 0, -1):
        i = back[j][b]
        buckets.append(w[i:j])
        j = i
    return list(reversed(buckets))


# The bucket planner's guesses: sustained Newton flop rate (float64) and seconds to
# compile one bucket, per backend (scripts/bench_gpu.py measures both on a GPU).  On one
# H200 (benchmarks/bench_gpu_h200.json) the paper-scale cascade ran its buckets at 4-11
# TFLOP/s executed (9.4 overall) and compiled its first program in 20 s, the others in
# worker threads behind training (33 s of waiting in a 165 s sweep).  The "gpu" guesses
# stay: with them the planner picks the 11 buckets of least padded work (an estimated
# 127 s of training at 1e13 flop/s, against 143 s for the 8 buckets that 1e13 and 8 s
# would pick and 180 s for the 5 of 1e13 and 20 s).
FLOP_RATE = {"cpu": 2e10, "gpu": 5e12, "tpu": 5e12}
COMPILE_SECONDS = {"cpu": 3.0, "gpu": 8.0, "tpu": 8.0}


def _accelerator() -> bool:
    return jax.default_backend() in ("gpu", "tpu")


@dataclasses.dataclass(frozen=True)
class Planner:
    """The bucket planner's two guesses: sustained Newton flop rate and seconds to compile a bucket."""

    flop_rate: float
    compile_seconds: float

    @classmethod
    def for_backend(cls, backend: str | None = None) -> Planner:
        """The defaults for `backend` (None: JAX's default backend)."""
        backend = jax.default_backend() if backend is None else backend
        return cls(FLOP_RATE.get(backend, FLOP_RATE["cpu"]), COMPILE_SECONDS.get(backend, COMPILE_SECONDS["cpu"]))


def seconds_per_w2(arch: str, n_in: int, n_out: int, n_points: int, n_seeds: int, optimizer: str,
                   steps: int | None, flop_rate: float | None = None, gate_steps: int = 1) -> float:
    """Rough training seconds of the `n_seeds` models of one width per unit of W^2
    (at `flop_rate` flop/s; None: the default backend's guess; `gate_steps`: newton-cascade's)."""
    k = models.n_factors(arch)
    p = models.unit_size(k, n_in, n_out)
    n_steps = (k + 1) if optimizer == "newton-splines" else (train.TrainConfig(optimizer, steps).n_steps + k + 1
                                                             + (gate_steps if optimizer == "newton-cascade" else 1))
    if optimizer == "newton-splines":
        p = n_in + 1  # each stage moves one group of a unit
    if optimizer in train.FIRST_ORDER:
        n_steps = n_steps * 3 / (p * n_out)  # gradient steps cost ~ a forward pass each, not P^2
    flop_rate = Planner.for_backend().flop_rate if flop_rate is None else flop_rate
    return n_seeds * n_steps * 2.0 * n_points * n_out * p * p / flop_rate


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
    factor_init: str = "one"  # how factors 2..k start: the constant 1, or N(0, 1) (models.FACTOR_INITS)
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


SEED_LIMIT = 2**32  # seeds become uint32 PRNG keys
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
    _check_knots(config)
    check_choice("factor_init", config.factor_init, models.FACTOR_INITS)
    ds = config.data_seed
    if isinstance(ds, bool) or not isinstance(ds, int | np.integer) or not 0 <= ds < SEED_LIMIT:
        raise UsageError(f"data_seed (--data-seed) must be an integer in [0, 2**32), got {ds!r}")


def _check_knots(config: SweepConfig) -> None:
    """knots "placed" needs the spline init, a registered 1D target f and spline degrees
    k + 1 <= splines.MAX_PLACED_DEGREE."""
    check_choice("knots", config.knots, spline_init.KNOT_PLACEMENTS)
    if config.knots == "uniform":
        return
    from glu_scaling.splines import MAX_PLACED_DEGREE  # scipy loads only when knots are placed

    if not config.spline_init:
        raise UsageError("knots 'placed' positions the spline init's knots; it cannot go with the random init "
                         "(--random-init)")
    if config.problem not in problems.TARGETS_1D:
        raise UsageError(f"knots 'placed' needs a 1D problem with a known target f (one of "
                         f"{', '.join(problems.TARGETS_1D)}), got problem {config.problem!r}")
    for arch in config.archs:
        if models.n_factors(arch) + 1 > MAX_PLACED_DEGREE:
            raise UsageError(f"knots 'placed' works for spline degrees up to {MAX_PLACED_DEGREE} (mlp, glu, gqu), "
                             f"got arch {arch!r} (degree {models.n_factors(arch) + 1})")


@functools.lru_cache(maxsize=4096)
def _placed_knots(problem: str, degree: int, n: int) -> tuple[float, ...]:
    return tuple(spline_init.placed_knots(problems.scalar_target(problem), n, degree))


def knot_table(config: SweepConfig, arch: str, n_hidden: Sequence[int], width: int) -> np.ndarray | None:
    """The spline init's knots of each model of a bucket, (B, width), for `config.knots`
    "placed" (`spline_init.placed_knots` for f = the problem's target and degree k + 1);
    None for "uniform" (the init spaces them evenly itself)."""
    if config.knots == "uniform":
        return None
    degree = models.n_factors(arch) + 1
    rows = [_placed_knots(config.problem, degree, int(n)) for n in n_hidden]
    return np.stack([spline_init.pad_knots(row, width) for row in rows])


def _init_batch(seeds, n_hidden, *, k, n_in, n_out, width, activation, spline_init, dtype, knots=None,
                factors_to=None, factor_init="one"):
    """Models for (seed_b, n_hidden_b) pairs, each padded to `width`; leaves have a leading B axis.
    knots (B, width): each model's 1D spline-init knots (`knot_table`; None: evenly spaced).
    factors_to: pad them to this many factors with constant ones (`models.with_constant_factors`,
    for a shared program: `shared_factors`), in the same compiled call.
    factor_init: how factors 2..k start (`models.FACTOR_INITS`).

    The random draws are one compiled call shared by every architecture up to the GQU
    (`_draw_batch`, `models.init_draws`), the models another (`_assemble_batch`): a
    sweep over mlp, glu and gqu compiles the random-bit generator once, not three times.
    """
    draws = _draw_batch(seeds, **_draw_kwargs(k, n_in, n_out, width, dtype))
    return _assemble_batch(n_hidden, draws, knots, k=k, n_in=n_in, n_out=n_out, width=width,
                           activation=activation, spline_init=spline_init, dtype=dtype, factors_to=factors_to,
                           factor_init=factor_init)


def _draw_kwargs(k: int, n_in: int, n_out: int, width: int, dtype) -> dict:
    """`_draw_batch`'s static arguments.  Its draw per unit holds enough normals for a GQU
    (k = 2) whenever a draw's first columns do not depend on its length (JAX's
    partitionable threefry), so architectures up to the GQU share it; else exactly unit_size."""
    size = models.unit_size(k, n_in, n_out)
    if jax.config.jax_threefry_partitionable:
        size = max(size, models.unit_size(2, n_in, n_out))
    return dict(n_in=n_in, n_out=n_out, width=width, size=size, dtype=dtype)


@compilation.jit_with(brief=True, static_argnames=("n_in", "n_out", "width", "size", "dtype"))
def _draw_batch(seeds, *, n_in, n_out, width, size, dtype) -> models.InitDraws:
    return models.init_draws_batch(jax.vmap(jax.random.PRNGKey)(seeds), n_in, n_out, width, size, dtype)


@compilation.jit_with(brief=True, static_argnames=("k", "n_in", "n_out", "width", "activation", "spline_init",
                                                  "dtype", "factors_to", "factor_init"))
def _assemble_batch(n_hidden, draws, knots, *, k, n_in, n_out, width, activation, spline_init, dtype,
                    factors_to=None, factor_init="one"):
    def one(n, z, t):
        return models.init_masked(None, k, n_in, n, n_out, width, activation=activation, spline_init=spline_init,
                                  dtype=dtype, draws=z, knots=t, factor_init=factor_init)

    params = jax.vmap(one)(n_hidden, draws, knots)
    return params if factors_to is None else models.with_constant_factors(params, factors_to)


def model_bytes(k: int, n_in: int, n_out: int, width: int, n_points: int, chunk: int, itemsize: int = 8,
                ladder: newton.Ladder = newton.DEFAULT_LADDER) -> int:
    """Rough peak bytes one model of padded width W holds while it trains (vmapped on a device).

    With p = unit_size, P = W p + dy, C = chunk points and N (padded) points:
      Hessian build, per chunk: Ju (C, W, dy, p), its transposed copy Jt (P, C dy) and the
      per-unit blocks ~ 3 C dy P, plus (k + 6) (C, W) activation arrays;
      H, its scaled copy, the Cholesky factor and the solve ~ 6 P^2, and with K damping
      rungs factored per round (`ladder`) 2 (K - 1) P^2 more (K shifted copies and their factors), and
      with a blocked Cholesky 2 K P^2 more (each copy symmetrised, its columns joined);
      the line search's forward passes over all points ~ (k + 3) N W;
    doubled for XLA's temporaries.  GQU (k = 2, 1D), W = 100, C = 2048, N = 10240,
    float64: P = 701, 3 C P = 4.3 M, 8 C W = 1.6 M, 6 P^2 = 2.9 M, 5 N W = 5.1 M
    elements = 112 MB, doubled 224 MB; a paper-scale bucket of 30 widths x 16 seeds
    (480 models) then needs ~107 GB at once, so on a 141 GB H200 (allocator limit 127 GB
    with XLA_PYTHON_CLIENT_MEM_FRACTION=0.9, budget half of it: cap 283 models)
    `default_batch_size` splits it into 2 vmapped groups of 240 (53 GB).  A GLU bucket at
    W = 30 (P = 151) needs ~44 MB a model: all 480 at once (21 GB).
    """
    p = models.unit_size(k, n_in, n_out)
    P = width * p + n_out
    c = min(chunk, n_points)
    n_pad = -(-n_points // c) * c
    K = ladder.rungs_per_round
    square_arrays = 6 + 2 * (K - 1) + (2 * K if ladder.cholesky_block > 0 else 0)  # P x P ones
    elements = 3 * c * n_out * P + (k + 6) * c * width + square_arrays * P * P + (k + 3) * n_pad * width
    return 2 * itemsize * elements


def memory_budget(fraction: float = 0.5) -> float:
    """Bytes one device may spend on a vmapped group: `fraction` of its allocator limit
    (16 GB x fraction when the backend does not report one)."""
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:  # some backends (and CPU) report nothing
        stats = {}
    return fraction * float(stats.get("bytes_limit", 16e9))


# Models vmapped together on a CPU.  Every lane of a vmapped while loop (the Newton steps,
# the damping ladder, the line search) runs until the slowest lane is done, and a CPU
# gains nothing from batching the already large per-model products: one model at a time.
# On the 2-core AVX-512 machine of 2026-11-29, alternating runs: a 3-arch x 7-width x
# 4-seed 30-step newton-cascade sweep 9.6-9.9 s against 9.8-10.9 s with groups of 2
# (and 8.3-8.5 against 9.2-9.9 s for groups of 2 against 4, earlier that day), the cold
# speedrun 4.60-4.65 s against 4.79-4.94 s; the bench.py cascade is within the noise.
CPU_BATCH = 1


def default_batch_size(n_models: int, *, n_devices: int = 1, bytes_per_model: float | None = None) -> int:
    """Models vmapped together on one device: on a CPU `CPU_BATCH` (the per-model work is
    already large matrix products), on an accelerator as many as fit in
    `memory_budget()` (all of them when `bytes_per_model` is None).

    A device holds ceil(n_models / n_devices) models; when they need several groups the
    groups are balanced (7 models, cap 4: two groups of 4, one dummy) so padding stays small.
    A single CPU device takes min(n_models, CPU_BATCH).
    """
    share = -(-n_models // n_devices)
    if not _accelerator():
        if n_devices == 1:
            return min(n_models, CPU_BATCH)
        cap = CPU_BATCH
    else:
        cap = share if bytes_per_model is None else max(1, int(memory_budget() // bytes_per_model))
    groups = -(-share // min(cap, share))
    return -(-share // groups)


def _is_out_of_memory(err: Exception) -> bool:
    text = str(err)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


class _BucketSetup(NamedTuple):
    k: int
    shared: int | None  # factors of the program every architecture shares (`shared_factors`)
    tconf: train.TrainConfig
    data: train.TrainData
    batch: int
    n_devices: int
    mesh: jax.sharding.Mesh | None


def _bucket_setup(arch: str, n_models: int, width: int, dataset: problems.Dataset,
                  config: SweepConfig) -> _BucketSetup:
    """What one bucket's `train.train_batch` call is made of, bar the models themselves."""
    k, shared = models.n_factors(arch), shared_factors(config)
    tconf = train.TrainConfig(config.optimizer, config.steps, config.learning_rate, config.chunk,
                              config.rungs_per_round, config.cholesky_block, config.gate_steps)
    data, chunk = train.prepare_data(dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test, config.chunk)
    tconf = dataclasses.replace(tconf, chunk=chunk)
    n_devices = distributed.resolve_devices(config.devices)
    mesh = distributed.make_mesh(n_devices)
    need = model_bytes(shared or k, dataset.n_in, dataset.n_out, width, dataset.x_train.shape[0], chunk,
                       jnp.dtype(config.dtype).itemsize, config.ladder)
    batch = config.batch_size or default_batch_size(n_models, n_devices=n_devices, bytes_per_model=need)
    return _BucketSetup(k, shared, tconf, distributed.replicate(data, mesh), batch, n_devices, mesh)


MAX_SHARED_FACTORS = 2  # `shared_factors`: architectures up to the GQU share a program


def shared_factors(config: SweepConfig) -> int | None:
    """The factor count of the one training program that every architecture of a
    `newton-splines` sweep over several architectures up to the GQU (k <= 2) shares, or
    None (each compiles its own).  Models with fewer factors are padded with constant ones
    (`models.with_constant_factors`) and skip their stages (`train.train_batch`'s
    `factors`): a speedrun compiles one training program instead of three.  The numbers
    are those of each architecture's own program: bit for bit in 1D on XLA:CPU (the
    speedrun's 102 records, jax 0.10.2); with several inputs XLA may fuse the bigger
    program's multiply-adds differently, a difference at rounding level
    (`tests/test_train.py`)."""
    ks = {models.n_factors(arch) for arch in config.archs}
    # up to the GQU's 2 factors the padding costs little; an mlp padded to a gated-9's
    # factors would carry 9 (and its memory estimate shrink every bucket's batch)
    shared = config.optimizer == "newton-splines" and len(ks) > 1 and max(ks) <= MAX_SHARED_FACTORS
    return max(ks) if shared else None


def _factors(n_models: int, setup: _BucketSetup) -> np.ndarray | None:
    """`train.train_batch`'s `factors` for a bucket: each model's own count in a shared
    program (its params padded by `_init_batch(..., factors_to=setup.shared)`), else None.
    A host array: no compiled call of its own."""
    if setup.shared is None:
        return None
    return np.full(n_models, setup.k, dtype=jax.dtypes.canonicalize_dtype(np.int64))


def _own_factors(params: models.Params, setup: _BucketSetup) -> models.Params:
    """Trained params without the shared program's constant padding factors."""
    return params if setup.shared is None else models.without_constant_factors(params, setup.k)


def _init_kwargs(k: int, width: int, dataset: problems.Dataset, config: SweepConfig) -> dict:
    return dict(k=k, n_in=dataset.n_in, n_out=dataset.n_out, width=width, activation=config.activation,
                spline_init=config.spline_init, dtype=jnp.dtype(config.dtype), factor_init=config.factor_init)


def precompile_bucket(arch: str, n_models: int, width: int, dataset: problems.Dataset, config: SweepConfig,
                      train_program: bool = True) -> None:
    """Compile a bucket's calls (the init's `_draw_batch` and `_assemble_batch`, and
    `train.train_batch` unless `train_program` is False) for `n_models` models without
    running them.

    jit shares its caches with ahead-of-time lowering, so `train_bucket` then finds the
    executable ready.  Runs in a worker thread (XLA compiles without the GIL); a
    thread-local setting such as `jax.default_matmul_precision(...)` used as a context
    manager is not seen there (set it with `jax.config.update` instead).
    """
    setup = _bucket_setup(arch, n_models, width, dataset, config)
    seeds = jax.ShapeDtypeStruct((n_models,), jnp.uint32)
    ns = jax.ShapeDtypeStruct((n_models,), jnp.asarray(0).dtype)
    kwargs = _init_kwargs(setup.k, width, dataset, config)
    draw_kwargs = _draw_kwargs(setup.k, dataset.n_in, dataset.n_out, width, kwargs["dtype"])
    _draw_batch.lower(seeds, **draw_kwargs).compile()
    draws = jax.eval_shape(functools.partial(_draw_batch, **draw_kwargs), seeds)
    knots = None if config.knots == "uniform" else jax.ShapeDtypeStruct((n_models, width), kwargs["dtype"])
    _assemble_batch.lower(ns, draws, knots, **kwargs, factors_to=setup.shared).compile()
    if not train_program:
        return
    shapes = jax.eval_shape(functools.partial(_init_batch, **kwargs, factors_to=setup.shared), seeds, ns, knots=knots)
    factors = _factors(n_models, setup)
    factors = None if factors is None else jax.ShapeDtypeStruct(factors.shape, factors.dtype)
    if setup.mesh is not None:
        replicated = jax.sharding.NamedSharding(setup.mesh, jax.sharding.PartitionSpec())
        shapes, factors = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                                       (shapes, factors))
    train.train_batch.lower(shapes, setup.data, setup.tconf, batch_size=setup.batch, mesh=setup.mesh,
                            factors=factors).compile()


class LaunchedBucket(NamedTuple):
    """A bucket dispatched to its devices, not yet waited for (`launch_bucket`)."""

    arch: str
    pairs: list
    width: int
    trained: models.Params
    info: dict  # device arrays, ready when the computation is
    batch: int
    n_devices: int
    mesh: jax.sharding.Mesh | None
    started: float  # perf_counter at launch


def launch_bucket(arch: str, pairs: list[tuple[int, int]], width: int, dataset: problems.Dataset,
                  config: SweepConfig, batch: int | None = None) -> LaunchedBucket:
    """Initialise and dispatch the (n_hidden, seed) pairs of one bucket in one compiled call,
    the models split over `config.devices` devices (all visible when None), without waiting
    for the result: JAX dispatches asynchronously, so the caller can trace and launch the
    next bucket while this one runs (`collect_bucket` waits).

    `batch`: models vmapped together on a device (None: `default_batch_size`); an
    out-of-memory error already at dispatch is retried with half as many.
    """
    t0 = time.perf_counter()
    setup = _bucket_setup(arch, len(pairs), width, dataset, config)
    batch = setup.batch if batch is None else batch
    seeds = jnp.asarray([s for _, s in pairs], dtype=jnp.uint32)
    ns = jnp.asarray([n for n, _ in pairs])
    kwargs = _init_kwargs(setup.k, width, dataset, config)
    knots = knot_table(config, arch, [n for n, _ in pairs], width)
    knots = None if knots is None else jnp.asarray(knots, kwargs["dtype"])
    params = _init_batch(seeds, ns, **kwargs, knots=knots, factors_to=setup.shared)
    params, factors = distributed.replicate((params, _factors(len(pairs), setup)), setup.mesh)
    while True:
        try:
            trained, info = train.train_batch(params, setup.data, setup.tconf, batch_size=batch, mesh=setup.mesh,
                                              factors=factors)
            return LaunchedBucket(arch, list(pairs), width, _own_factors(trained, setup), info, batch,
                                  setup.n_devices, setup.mesh, t0)
        except jax.errors.JaxRuntimeError as err:
            batch = _halved_batch(err, arch, width, batch)


def _halved_batch(err: Exception, arch: str, width: int, batch: int) -> int:
    """The smaller vmap batch to retry with after `err`; re-raises unless it is an
    out-of-memory error and the batch can still shrink."""
    if not _is_out_of_memory(err) or batch == 1:
        raise err
    half = -(-batch // 2)
    warnings.warn(f"{arch} bucket W={width}: out of memory with {batch} models vmapped together; "
                  f"retrying with {half}", RuntimeWarning, stacklevel=3)
    return half


def collect_bucket(launched: LaunchedBucket, dataset: problems.Dataset,
                   config: SweepConfig) -> tuple[models.Params, dict, float]:
    """Wait for a launched bucket; returns (params with a leading batch axis, info arrays (B,),
    seconds since its launch).  info["process"] is the index of the process whose devices
    trained each model.  An accelerator that runs out of memory is retried with half as
    many models vmapped together."""
    while True:
        try:
            info = jax.tree.map(np.asarray, launched.info)
            break
        except jax.errors.JaxRuntimeError as err:
            half = _halved_batch(err, launched.arch, launched.width, launched.batch)
            retry = launch_bucket(launched.arch, launched.pairs, launched.width, dataset, config, batch=half)
            launched = retry._replace(started=launched.started)
    n_total, _ = train.padded_size(len(launched.pairs), launched.n_devices, launched.batch)
    info["process"] = distributed.device_owners(n_total, launched.mesh)[:len(launched.pairs)]
    return launched.trained, info, time.perf_counter() - launched.started


def train_bucket(arch: str, pairs: list[tuple[int, int]], width: int, dataset: problems.Dataset,
                 config: SweepConfig) -> tuple[models.Params, dict, float]:
    """Train the (n_hidden, seed) pairs of one bucket in one compiled call and wait for it:
    `collect_bucket(launch_bucket(...))`.  Returns (params with a leading batch axis, info
    arrays (B,), wall seconds)."""
    return collect_bucket(launch_bucket(arch, pairs, width, dataset, config), dataset, config)


def _compile_ahead(todo: list[tuple[str, int, list]], dataset: problems.Dataset, config: SweepConfig,
                   workers: int | None = None) -> tuple[concurrent.futures.Executor | None, list]:
    """On an accelerator, start compiling every bucket after the first in worker threads
    (`precompile_bucket`), so that compilation overlaps training and other compilations
    (on a CPU the cores that would compile are the ones training).  Returns (pool, futures
    by bucket; None where nothing was started)."""
    if len(todo) < 2 or not _accelerator():
        return None, [None] * len(todo)
    workers = workers or max(1, min(len(todo) - 1, (os.cpu_count() or 2) // 2))
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="glu_scaling-compile")
    # buckets of a shared program (`shared_factors`) with the same shapes compile it once (the
    # first of them, which launches before the others); each still compiles its own init
    shared = shared_factors(config) is not None
    seen = {(todo[0][1], len(todo[0][2]))}
    futures = [None]
    for arch, width, pairs in todo[1:]:
        first_of_shape = not shared or (width, len(pairs)) not in seen
        seen.add((width, len(pairs)))
        futures.append(pool.submit(precompile_bucket, arch, len(pairs), width, dataset, config,
                                   train_program=first_of_shape))
    return pool, futures


def device_memory() -> float:
    """Bytes of memory of one device: the allocator limit an accelerator reports, else the
    host's physical memory (0 if neither is known)."""
    try:
        limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
    except Exception:  # CPU backends report nothing
        limit = None
    if limit:
        return float(limit)
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return 0.0


def check_memory(config: SweepConfig, dataset: problems.Dataset) -> None:
    """Refuse, before anything is written, a Newton sweep whose widest model alone would not
    fit in one device's memory (`model_bytes`: its Hessian and Jacobian chunks)."""
    if config.optimizer not in train.NEWTON_SCHEDULES:
        return
    memory = device_memory()
    width = max(parse_spec(config.widths, "widths"))
    for arch in config.archs:
        need = model_bytes(models.n_factors(arch), dataset.n_in, dataset.n_out, width, dataset.x_train.shape[0],
                           config.chunk, jnp.dtype(config.dtype).itemsize, config.ladder)
        if memory and need > memory:
            raise UsageError(f"width {width} needs about {need / 1e9:.3g} GB for one {arch} model's Newton step, "
                             f"more than this device's {memory / 1e9:.3g} GB; use smaller --widths")


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
    if isinstance(archs, list | tuple) and not models.has_later_factors(archs):
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


def run_sweep(config: SweepConfig, out: str | Path | None = None, *, progress: bool = True,
              on_bucket: Callable[[list[dict]], None] | None = None, fit_range=None,
              planner: Planner | None = None, trainer: Callable | None = None) -> list[dict]:
    """Train every model of `config` not already in `out`; returns all records.

    `planner` overrides the bucket planner's guesses (`Planner.for_backend()` by default);
    `trainer` replaces `train_bucket` (same signature and returns), e.g. to time or guard
    each bucket as scripts/bench_gpu.py does.

    With `out`, config.json is written (or checked against the existing one),
    records are appended after each bucket, and slopes.json (fitted over
    `fit_range` of n_hidden, default all) is rewritten at the end.  In a multi-host
    run every process appends its own models to results.host{K}.jsonl, all of them
    skip the models process 0 finds done, and process 0 alone writes config.json and
    slopes.json; the records returned are this process's share plus those it found done.
    """
    check_sweep(config)
    dataset = load_dataset(config)
    check_memory(config, dataset)
    folder = None
    done: dict[tuple, dict] = {}
    first = jax.process_index() == 0
    filename = distributed.records_filename()
    if out is not None:
        folder = results.prepare_folder(out)
        # the slope fit range is not part of a model; kept so that `plot` and `merge` refit the same way
        fitted = {"fit_range": None if fit_range is None else [float(v) for v in fit_range]}
        settings = {**config.to_json(), **fitted, **data_fingerprint(config)}
        found = results.unique_records(folder)  # unreadable records are refused before anything is written,
        results.check_config(folder, settings, write=False, effective=effective_settings)  # a folder of other
        for record in found:  # settings, and records the final slope fit could not read
            slopes.check_fit_record(record)
        results.check_config(folder, settings, write=first, effective=effective_settings)
        results.repair(folder, filename)
        done = {results.model_key(rec): rec for rec in results.unique_records(folder)}
    done_keys = _agreed_done(config, done)
    planner = Planner.for_backend() if planner is None else planner
    todo = []
    for arch in config.archs:
        cost = seconds_per_w2(arch, dataset.n_in, dataset.n_out, dataset.x_train.shape[0], len(config.seeds),
                              config.optimizer, config.steps, planner.flop_rate, config.gate_steps)
        for bucket in plan_buckets(config.widths, seconds_per_w2=cost, compile_seconds=planner.compile_seconds):
            pairs = [(n, s) for n in bucket for s in config.seeds if (arch, n, s) not in done_keys]
            if pairs:
                todo.append((arch, max(bucket), pairs))
    bar = _progress(len(todo), progress)
    pool, compiling = _compile_ahead(todo, dataset, config)
    try:
        new_records = _train_todo(todo, bar, compiling, dataset, config, folder, filename, on_bucket, trainer)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if bar is not None:
            bar.close()
    wanted = {(a, n, s) for a in config.archs for n in config.widths for s in config.seeds}
    all_records = [r for r in (list(done.values()) + new_records) if results.model_key(r) in wanted]
    all_records.sort(key=lambda r: (config.archs.index(r["arch"]), r["n_hidden"], r["seed"]))
    distributed.barrier("glu_scaling.run_sweep")  # every host's records are on disk
    if folder is not None and first:
        results.write_json_atomic(folder / "slopes.json",
                                  slopes.slopes_table(results.unique_records(folder), fit_range=fit_range))
    return all_records


def _train_todo(todo: list, bar, compiling: list, dataset: problems.Dataset, config: SweepConfig,
                folder: Path | None, filename: str, on_bucket, trainer: Callable | None) -> list[dict]:
    """Train the (arch, width, pairs) buckets of `todo` in order (each once its ahead-of-time
    compilation is done), appending this process's records after each; returns them.

    On a CPU with no `trainer`, bucket i + 1 is traced and launched before bucket i is
    waited for (`launch_bucket`, `collect_bucket`), so Python's tracing overlaps XLA's
    computing; a bucket's `seconds` are then the wall time since the previous bucket was
    done, which includes tracing and compiling the next bucket (the sum over buckets is
    the sweep's wall time either way).  If launching fails (or is interrupted), the
    bucket already running is still waited for and saved first.  Elsewhere (accelerators,
    whose memory budget assumes one bucket at a time, or a given `trainer`) buckets run
    one by one.
    """
    new_records = []

    def finish(arch, width, pairs, info, seconds):
        owner = info.get("process", np.zeros(len(pairs), int))
        recs = []
        for b, (n, s) in enumerate(pairs):
            if owner[b] != jax.process_index():
                continue  # another host's model: it writes that record
            recs.append({
                "arch": arch, "activation": config.activation, "problem": config.problem,
                "n_in": dataset.n_in, "n_out": dataset.n_out, "n_hidden": n,
                "n_params": models.param_count(arch, dataset.n_in, n, dataset.n_out), "seed": s,
                "optimizer": config.optimizer, "train_rmse": float(info["train_rmse"][b]),
                "test_rmse": float(info["test_rmse"][b]), "status": train.STATUSES[int(info["status"][b])],
                "seconds": seconds / len(pairs), "steps": int(info["steps"][b]), "bucket_width": width,
            })
        if folder is not None:
            results.append_records(folder, recs, filename)
        if on_bucket is not None:
            on_bucket(recs)
        new_records.extend(recs)
        if bar is not None:
            bar.set_postfix_str(f"{arch} W={width}", refresh=False)
            bar.update(1)

    pipelined = trainer is None and not _accelerator()
    trainer = train_bucket if trainer is None else trainer
    running, last_done = None, time.perf_counter()

    def wait_for_running():
        nonlocal running, last_done
        _, info, _ = collect_bucket(running, dataset, config)
        now = time.perf_counter()
        finish(running.arch, running.width, running.pairs, info, now - max(last_done, running.started))
        running, last_done = None, now

    for (arch, width, pairs), ahead in zip(todo, compiling):
        if ahead is not None:
            try:
                ahead.result()
            except Exception:  # the bucket's own call compiles again and reports the error itself
                pass
        if not pipelined:
            _, info, seconds = trainer(arch, pairs, width, dataset, config)
            finish(arch, width, pairs, info, seconds)
            continue
        try:
            launched = launch_bucket(arch, pairs, width, dataset, config)
        except BaseException:
            if running is not None:  # finished models are saved before the error goes on
                wait_for_running()
            raise
        if running is not None:
            wait_for_running()
        running = launched
    if running is not None:
        wait_for_running()
    return new_records


def _agreed_done(config: SweepConfig, done: dict[tuple, dict]) -> set[tuple]:
    """The (arch, n_hidden, seed) keys of `config` to skip: those in `done`, as process 0
    sees them (so every host of a multi-host run plans the same buckets, shared folder or not)."""
    keys = [(a, n, s) for a in config.archs for n in config.widths for s in config.seeds]
    have = distributed.broadcast_from_first(np.asarray([key in done for key in keys], dtype=np.int32))
    return {key for key, h in zip(keys, have) if h}


def _progress(n_buckets: int, enabled: bool):
    """A progress bar over buckets, advanced as each bucket's records are saved (None when
    disabled)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=n_buckets, desc="buckets", unit="bucket", leave=False)


def sweep(archs, widths, seeds=(0,), problem: str = "one_over_1_p_9x2", optimizer: str = "newton-cascade", *,
          out=None, progress: bool = False, **options) -> list[dict]:
    """Python entry point: train every (arch, width, seed) and return one record per model.

    archs: a name or a list; widths, seeds: lists or SPEC strings ('1:104:3', '0,1,2').
    Other keyword options are the fields of `SweepConfig` (steps, n_data, activation, ...).
    """
    archs = (archs,) if isinstance(archs, str) else tuple(archs)
    if "dtype" in options and not isinstance(options["dtype"], str):  # np.float64, jnp.float32, a dtype
        try:
            options["dtype"] = jnp.dtype(options["dtype"]).name
        except TypeError:
            pass  # _check names the bad value
    config = SweepConfig(archs=archs, widths=tuple(parse_spec(widths, "widths")),
                         seeds=tuple(parse_spec(seeds, "seeds", minimum=0)), problem=problem,
                         optimizer=optimizer, **options)
    return run_sweep(config, out, progress=progress)
