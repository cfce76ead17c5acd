"""Sweeps: every (architecture, width, seed) of a study, trained bucket by bucket.

For one architecture the requested widths are grouped into a few contiguous
buckets (`plan_buckets`); every model of a bucket is padded to the bucket's
largest width and all of them train in one compiled call (`train.train_batch`).
Finished buckets are appended to results.jsonl at once, so an interrupted sweep
resumes by training only the models that are missing.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from glu_scaling import models, problems, results, slopes, train
from glu_scaling.errors import UsageError, check_positive_int, unknown


def parse_spec(spec: str | int | Sequence[int], kind: str = "widths", minimum: int = 1) -> list[int]:
    """Parse 'lo:hi[:step]' (hi exclusive, as range), 'a,b,c' or an int into a sorted list."""
    if isinstance(spec, int | np.integer) and not isinstance(spec, bool):
        values = [int(spec)]
    elif isinstance(spec, str):
        text = spec.strip()
        try:
            if ":" in text:
                parts = [int(p) for p in text.split(":")]
                if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] <= 0):
                    raise ValueError
                values = list(range(*parts))
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
    bad = [v for v in values if v < minimum]
    if bad:
        raise UsageError(f"{kind} must be >= {minimum}, got {bad[0]} in {spec!r}")
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


def seconds_per_w2(arch: str, n_in: int, n_out: int, n_points: int, n_seeds: int, optimizer: str,
                   steps: int | None) -> float:
    """Rough training seconds of the `n_seeds` models of one width per unit of W^2."""
    k = models.n_factors(arch)
    p = models.unit_size(k, n_in, n_out)
    n_steps = (k + 1) if optimizer == "newton-splines" else (train.TrainConfig(optimizer, steps).n_steps + k + 2)
    if optimizer == "newton-splines":
        p = n_in + 1  # each stage moves one group of a unit
    if optimizer in train.FIRST_ORDER:
        n_steps = n_steps * 3 / (p * n_out)  # gradient steps cost ~ a forward pass each, not P^2
    flop_rate = 2e12 if jax.default_backend() in ("gpu", "tpu") else 2e10
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
    learning_rate: float | None = None
    n_data: int | None = None
    n_test: int | None = None
    data_seed: int = 0
    activation: str = "relu"
    spline_init: bool = True
    eval: str = "test"
    target: str | None = None
    dtype: str = "float64"
    chunk: int = 2048
    batch_size: int | None = None

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("archs", "widths", "seeds"):
            d[key] = list(d[key])
        return d


SEED_LIMIT = 2**32  # seeds become uint32 PRNG keys


def _check(config: SweepConfig) -> None:
    if isinstance(config.archs, str) or not config.archs:
        raise UsageError(f"archs must be a non-empty list of names such as ('mlp', 'glu'), got {config.archs!r}")
    for arch in config.archs:
        try:
            models.n_factors(arch)
        except UsageError:
            raise unknown("architecture", arch, models.accepted_archs(),
                          candidates=[*models.NAMED_ARCHS, *(f"gated{k}" for k in range(10))]) from None
    models.activation_fn(config.activation)
    train.TrainConfig(config.optimizer)
    if config.dtype not in ("float32", "float64"):
        raise unknown("dtype", config.dtype, ("float32", "float64"))
    if config.dtype == "float64" and not jax.config.jax_enable_x64:
        raise UsageError("dtype float64 needs jax_enable_x64; call jax.config.update('jax_enable_x64', True) "
                         "first (the CLI does), or pass dtype='float32'")
    if config.batch_size is not None:
        check_positive_int("batch_size", config.batch_size)
    if config.steps is not None and (isinstance(config.steps, bool) or not isinstance(config.steps, int | np.integer)
                                     or config.steps < 0):
        raise UsageError(f"steps must be >= 0 (an integer), got {config.steps!r}")
    lr = config.learning_rate
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float | np.number)
                           or not np.isfinite(lr) or lr <= 0):
        raise UsageError(f"learning rate (--lr) must be a positive finite number, got {lr!r}")
    for name in ("n_data", "n_test"):
        value = getattr(config, name)
        if value is not None:
            check_positive_int(name, value)
    if config.n_data is not None and config.n_data < 2:
        raise UsageError(f"n_data must be at least 2, got {config.n_data}")
    parse_spec(config.widths, "widths")
    for seed in parse_spec(config.seeds, "seeds", minimum=0):
        if seed >= SEED_LIMIT:
            raise UsageError(f"seeds must be < 2**32, got {seed}")
    ds = config.data_seed
    if isinstance(ds, bool) or not isinstance(ds, int | np.integer) or not 0 <= ds < SEED_LIMIT:
        raise UsageError(f"data_seed (--data-seed) must be an integer in [0, 2**32), got {ds!r}")


@functools.partial(jax.jit, static_argnames=("k", "n_in", "n_out", "width", "activation", "spline_init", "dtype"))
def _init_batch(seeds, n_hidden, *, k, n_in, n_out, width, activation, spline_init, dtype):
    """Models for (seed_b, n_hidden_b) pairs, each padded to `width`; leaves have a leading B axis."""

    def one(seed, n):
        return models.init_masked(jax.random.PRNGKey(seed), k, n_in, n, n_out, width,
                                  activation=activation, spline_init=spline_init, dtype=dtype)

    return jax.vmap(one)(seeds, n_hidden)


def default_batch_size(n_models: int) -> int:
    """Models vmapped together inside a bucket: all of them on an accelerator; on a
    CPU a few (the per-model work is already large matrix products)."""
    if jax.default_backend() in ("gpu", "tpu"):
        return n_models
    return min(n_models, 4)


def train_bucket(arch: str, pairs: list[tuple[int, int]], width: int, dataset: problems.Dataset,
                 config: SweepConfig) -> tuple[models.Params, dict, float]:
    """Train the (n_hidden, seed) pairs of one bucket in one compiled call.

    Returns (params with a leading batch axis, info arrays (B,), wall seconds).
    """
    dtype = jnp.dtype(config.dtype)
    t0 = time.perf_counter()
    seeds = jnp.asarray([s for _, s in pairs], dtype=jnp.uint32)
    ns = jnp.asarray([n for n, _ in pairs])
    params = _init_batch(seeds, ns, k=models.n_factors(arch), n_in=dataset.n_in, n_out=dataset.n_out,
                         width=width, activation=config.activation, spline_init=config.spline_init, dtype=dtype)
    tconf = train.TrainConfig(config.optimizer, config.steps, config.learning_rate, config.chunk)
    data, chunk = train.prepare_data(dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test, config.chunk)
    tconf = dataclasses.replace(tconf, chunk=chunk)
    batch = config.batch_size or default_batch_size(len(pairs))
    params, info = train.train_batch(params, data, tconf, batch_size=batch)
    info = jax.tree.map(np.asarray, info)
    return params, info, time.perf_counter() - t0


def load_dataset(config: SweepConfig) -> problems.Dataset:
    return problems.make_dataset(config.problem, n_train=config.n_data, n_test=config.n_test,
                                 seed=config.data_seed, dtype=config.dtype, eval=config.eval,
                                 target=config.target)


def run_sweep(config: SweepConfig, out: str | Path | None = None, *, progress: bool = True,
              on_bucket: Callable[[list[dict]], None] | None = None, fit_range=None) -> list[dict]:
    """Train every model of `config` not already in `out`; returns all records.

    With `out`, config.json is written (or checked against the existing one),
    records are appended after each bucket, and slopes.json (fitted over
    `fit_range` of n_hidden, default all) is rewritten at the end.
    """
    _check(config)
    dataset = load_dataset(config)
    folder = None
    done: dict[tuple, dict] = {}
    if out is not None:
        folder = results.prepare_folder(out)
        results.check_config(folder, config.to_json())
        results.repair(folder)
        done = {results.model_key(rec): rec for rec in results.unique_records(folder)}
    todo = []
    for arch in config.archs:
        cost = seconds_per_w2(arch, dataset.n_in, dataset.n_out, dataset.x_train.shape[0], len(config.seeds),
                              config.optimizer, config.steps)
        for bucket in plan_buckets(config.widths, seconds_per_w2=cost):
            pairs = [(n, s) for n in bucket for s in config.seeds if (arch, n, s) not in done]
            if pairs:
                todo.append((arch, max(bucket), pairs))
    new_records = []
    bar = _progress(todo, progress)
    for arch, width, pairs in bar:
        _, info, seconds = train_bucket(arch, pairs, width, dataset, config)
        recs = []
        for b, (n, s) in enumerate(pairs):
            recs.append({
                "arch": arch, "activation": config.activation, "problem": config.problem,
                "n_in": dataset.n_in, "n_out": dataset.n_out, "n_hidden": n,
                "n_params": models.param_count(arch, dataset.n_in, n, dataset.n_out), "seed": s,
                "optimizer": config.optimizer, "train_rmse": float(info["train_rmse"][b]),
                "test_rmse": float(info["test_rmse"][b]), "status": train.STATUSES[int(info["status"][b])],
                "seconds": seconds / len(pairs), "steps": int(info["steps"][b]), "bucket_width": width,
            })
        if folder is not None:
            results.append_records(folder, recs)
        if on_bucket is not None:
            on_bucket(recs)
        new_records += recs
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"{arch} W={width}")
    wanted = {(a, n, s) for a in config.archs for n in config.widths for s in config.seeds}
    all_records = [r for r in (list(done.values()) + new_records) if results.model_key(r) in wanted]
    all_records.sort(key=lambda r: (config.archs.index(r["arch"]), r["n_hidden"], r["seed"]))
    if folder is not None:
        results.write_json_atomic(folder / "slopes.json",
                                  slopes.slopes_table(results.unique_records(folder), fit_range=fit_range))
    return all_records


def _progress(items, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="buckets", unit="bucket", leave=False)


def sweep(archs, widths, seeds=(0,), problem: str = "one_over_1_p_9x2", optimizer: str = "newton-cascade", *,
          out=None, progress: bool = False, **options) -> list[dict]:
    """Python entry point: train every (arch, width, seed) and return one record per model.

    archs: a name or a list; widths, seeds: lists or SPEC strings ('1:104:3', '0,1,2').
    Other keyword options are the fields of `SweepConfig` (steps, n_data, activation, ...).
    """
    archs = (archs,) if isinstance(archs, str) else tuple(archs)
    config = SweepConfig(archs=archs, widths=tuple(parse_spec(widths, "widths")),
                         seeds=tuple(parse_spec(seeds, "seeds", minimum=0)), problem=problem,
                         optimizer=optimizer, **options)
    return run_sweep(config, out, progress=progress)
