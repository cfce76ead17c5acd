"""Sweeps: every (architecture, width, seed) of a study, trained bucket by bucket.

For one architecture the requested widths are grouped into a few contiguous
buckets (`planning.plan_buckets`); every model of a bucket is padded to the bucket's
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
import functools
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from glu_scaling import (
    architectures,
    distributed,
    inits,
    knots,
    linsolve,
    models,
    planning,
    problems,
    results,
    slopes,
    specs,
    train,
)
from glu_scaling.config import (
    SweepConfig,
    check_sweep,
    data_fingerprint,
    effective_settings,
    load_dataset,
    sweep_config,
)


def _is_out_of_memory(err: Exception) -> bool:
    text = str(err)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


class _BucketSetup(NamedTuple):
    k: int | None  # the gated family's factors, None for a `units.Unit`
    unit: object | None  # a `units.Unit` or `dense.Dense`; None for the gated family
    shared: int | None  # factors of the program every architecture shares (`shared_factors`)
    data: train.TrainData
    batch: int
    n_devices: int
    mesh: jax.sharding.Mesh | None


def _bucket_setup(arch: str, n_models: int, width: int, dataset: problems.Dataset, config: SweepConfig,
                  ladder: linsolve.Ladder) -> _BucketSetup:
    """What one bucket's `train.train_batch` call is made of, bar the models themselves."""
    unit = architectures.resolve(arch)
    k, shared = (None, None) if unit is not None else (models.n_factors(arch), shared_factors(config))
    data, chunk = train.prepare_data(dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test,
                                     config.train.chunk)
    n_devices = distributed.resolve_devices(config.devices)
    mesh = distributed.make_mesh(n_devices)
    need = planning.model_bytes(shared or arch, dataset.n_in, dataset.n_out, width, dataset.x_train.shape[0], chunk,
                                jnp.dtype(config.dtype).itemsize, ladder)
    batch = config.batch_size or planning.default_batch_size(n_models, n_devices=n_devices, bytes_per_model=need)
    return _BucketSetup(k, unit, shared, distributed.replicate(data, mesh), batch, n_devices, mesh)


MAX_SHARED_FACTORS = 2  # `shared_factors`: architectures up to the GQU share a program


def shared_factors(config: SweepConfig) -> int | None:
    """The factor count of the one training program that every architecture of a
    `newton-splines` sweep over several architectures up to the GQU (k <= 2) shares, or
    None (each compiles its own).  Models with fewer factors are padded with constant ones
    (`models.with_constant_factors`) and skip their stages (`train.train_batch`'s
    `factors`): a speedrun compiles one training program instead of three.  The numbers
    are those of each architecture's own program: bit for bit in 1D on XLA:CPU (the
    speedrun's records); with several inputs XLA may fuse the bigger
    program's multiply-adds differently, a difference at rounding level
    (`tests/test_train.py`)."""
    ks = {models.n_factors(arch) for arch in config.archs if architectures.resolve(arch) is None}
    # up to the GQU's 2 factors the padding costs little; an mlp padded to a gated-9's
    # factors would carry 9 (and its memory estimate shrink every bucket's batch)
    shared = config.train.splines_only and len(ks) > 1 and max(ks) <= MAX_SHARED_FACTORS
    return max(ks) if shared else None


def _factors(n_models: int, setup: _BucketSetup) -> np.ndarray | None:
    """`train.train_batch`'s `factors` for a bucket: each model's own count in a shared
    program (its params padded by `inits.init_batch(..., factors_to=setup.shared)`), else None.
    A host array: no compiled call of its own."""
    if setup.shared is None:
        return None
    return np.full(n_models, setup.k, dtype=jax.dtypes.canonicalize_dtype(np.int64))


def _own_factors(params: models.Params, setup: _BucketSetup) -> models.Params:
    """Trained params without the shared program's constant padding factors."""
    return params if setup.shared is None else models.without_constant_factors(params, setup.k)


def _init_kwargs(setup: _BucketSetup, width: int, dataset: problems.Dataset, config: SweepConfig) -> dict:
    shape = dict(n_in=dataset.n_in, n_out=dataset.n_out, width=width, spline_init=config.init.spline_init,
                 dtype=jnp.dtype(config.dtype))
    if setup.unit is not None:
        return dict(unit=setup.unit, **shape)
    return dict(k=setup.k, activation=config.activation, factor_init=config.init.factor_init,
                factors_to=setup.shared, **shape)


def _init_batch(setup: _BucketSetup, seeds, ns, knots, kwargs):
    """A bucket's models in one compiled call: the gated family's (`inits.init_batch`) or an
    architecture object's own (`units.Unit.init_batch`, `dense.Dense.init_batch`)."""
    if setup.unit is not None:
        kwargs = dict(kwargs)
        return kwargs.pop("unit").init_batch(seeds, ns, knots, **kwargs)
    return inits.init_batch(seeds, ns, **kwargs, knots=knots)


def precompile_bucket(arch: str, n_models: int, width: int, dataset: problems.Dataset, config: SweepConfig,
                      train_program: bool = True, ladder: linsolve.Ladder = linsolve.DEFAULT_LADDER) -> None:
    """Compile a bucket's calls (the init's `inits.draw_batch` and `inits.assemble_batch`, and
    `train.train_batch` unless `train_program` is False) for `n_models` models without
    running them.

    jit shares its caches with ahead-of-time lowering, so `train_bucket` then finds the
    executable ready.  Runs in a worker thread (XLA compiles without the GIL); a
    thread-local setting such as `jax.default_matmul_precision(...)` used as a context
    manager is not seen there (set it with `jax.config.update` instead).
    """
    setup = _bucket_setup(arch, n_models, width, dataset, config, ladder)
    seeds = jax.ShapeDtypeStruct((n_models,), jnp.uint32)
    ns = jax.ShapeDtypeStruct((n_models,), jnp.asarray(0).dtype)
    kwargs = _init_kwargs(setup, width, dataset, config)
    knots = None if config.init.knots == "uniform" else jax.ShapeDtypeStruct((n_models, width), kwargs["dtype"])
    if setup.unit is None:  # (a unit's or dense model's init is one small program, compiled at launch)
        draw_kwargs = inits.draw_kwargs(setup.k, dataset.n_in, dataset.n_out, width, kwargs["dtype"])
        inits.draw_batch.lower(seeds, **draw_kwargs).compile()
        draws = jax.eval_shape(functools.partial(inits.draw_batch, **draw_kwargs), seeds)
        inits.assemble_batch.lower(ns, draws, knots, **kwargs).compile()
    if not train_program:
        return
    shapes = jax.eval_shape(lambda s, n, t: _init_batch(setup, s, n, t, kwargs), seeds, ns, knots)
    factors = _factors(n_models, setup)
    factors = None if factors is None else jax.ShapeDtypeStruct(factors.shape, factors.dtype)
    if setup.mesh is not None:
        replicated = jax.sharding.NamedSharding(setup.mesh, jax.sharding.PartitionSpec())
        shapes, factors = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                                       (shapes, factors))
    train.train_batch.lower(shapes, setup.data, config.train, batch_size=setup.batch, mesh=setup.mesh,
                            factors=factors, ladder=ladder).compile()


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
    ladder: linsolve.Ladder


def launch_bucket(arch: str, pairs: list[tuple[int, int]], width: int, dataset: problems.Dataset,
                  config: SweepConfig, batch: int | None = None,
                  ladder: linsolve.Ladder = linsolve.DEFAULT_LADDER) -> LaunchedBucket:
    """Initialise and dispatch the (n_hidden, seed) pairs of one bucket in one compiled call,
    the models split over `config.devices` devices (all visible when None), without waiting
    for the result: JAX dispatches asynchronously, so the caller can trace and launch the
    next bucket while this one runs (`collect_bucket` waits).

    `batch`: models vmapped together on a device (None: `planning.default_batch_size`); an
    out-of-memory error already at dispatch is retried with half as many.  `ladder`: how the
    Newton solver's damping ladder factors (`linsolve.Ladder`).
    """
    t0 = time.perf_counter()
    setup = _bucket_setup(arch, len(pairs), width, dataset, config, ladder)
    batch = setup.batch if batch is None else batch
    seeds = jnp.asarray([s for _, s in pairs], dtype=jnp.uint32)
    ns = jnp.asarray([n for n, _ in pairs])
    kwargs = _init_kwargs(setup, width, dataset, config)
    knots = inits.knot_table(config.init.knots, config.problem, arch, [n for n, _ in pairs], width,
                             architectures.degree(arch))
    knots = None if knots is None else jnp.asarray(knots, kwargs["dtype"])
    params = _init_batch(setup, seeds, ns, knots, kwargs)
    params, factors = distributed.replicate((params, _factors(len(pairs), setup)), setup.mesh)
    while True:
        try:
            trained, info = train.train_batch(params, setup.data, config.train, batch_size=batch, mesh=setup.mesh,
                                              factors=factors, ladder=ladder)
            return LaunchedBucket(arch, list(pairs), width, _own_factors(trained, setup), info, batch,
                                  setup.n_devices, setup.mesh, t0, ladder)
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
            retry = launch_bucket(launched.arch, launched.pairs, launched.width, dataset, config, batch=half,
                                  ladder=launched.ladder)
            launched = retry._replace(started=launched.started)
    n_total, _ = distributed.padded_size(len(launched.pairs), launched.n_devices, launched.batch)
    info["process"] = distributed.device_owners(n_total, launched.mesh)[:len(launched.pairs)]
    return launched.trained, info, time.perf_counter() - launched.started


def train_bucket(arch: str, pairs: list[tuple[int, int]], width: int, dataset: problems.Dataset,
                 config: SweepConfig, ladder: linsolve.Ladder = linsolve.DEFAULT_LADDER
                 ) -> tuple[models.Params, dict, float]:
    """Train the (n_hidden, seed) pairs of one bucket in one compiled call and wait for it:
    `collect_bucket(launch_bucket(...))`.  Returns (params with a leading batch axis, info
    arrays (B,), wall seconds)."""
    return collect_bucket(launch_bucket(arch, pairs, width, dataset, config, ladder=ladder), dataset, config)


def _compile_ahead(todo: list[tuple[str, int, list]], dataset: problems.Dataset, config: SweepConfig,
                   ladder: linsolve.Ladder, workers: int | None = None
                   ) -> tuple[concurrent.futures.Executor | None, list]:
    """On an accelerator, start compiling every bucket after the first in worker threads
    (`precompile_bucket`), so that compilation overlaps training and other compilations
    (on a CPU the cores that would compile are the ones training).  Returns (pool, futures
    by bucket; None where nothing was started)."""
    if len(todo) < 2 or not planning.accelerator():
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
                                   train_program=first_of_shape, ladder=ladder))
    return pool, futures


def run_sweep(config: SweepConfig, out: str | Path | None = None, *, progress: bool = True,
              on_bucket: Callable[[list[dict]], None] | None = None, fit_range=None,
              planner: planning.Planner | None = None, trainer: Callable | None = None,
              ladder: linsolve.Ladder = linsolve.DEFAULT_LADDER) -> list[dict]:
    """Train every model of `config` not already in `out`; returns all records.

    `planner` overrides the bucket planner's guesses (`planning.Planner.for_backend()` by default);
    `trainer` replaces `train_bucket` (same signature and returns), e.g. to time or guard
    each bucket as scripts/bench_gpu.py does; `ladder` is a Newton solver option
    (`linsolve.Ladder`: the same models, factored another way), not part of a model.

    With `out`, config.json is written (or checked against the existing one),
    records are appended after each bucket, and slopes.json (fitted over
    `fit_range` of n_hidden, default all) is rewritten at the end.  In a multi-host
    run every process appends its own models to results.host{K}.jsonl, all of them
    skip the models process 0 finds done, and process 0 alone writes config.json and
    slopes.json; the records returned are this process's share plus those it found done.
    """
    check_sweep(config)
    dataset = load_dataset(config)
    for arch in config.archs:  # a user's architecture that fails, or gives NaN, ends here, before anything is written
        architectures.check_arch(arch, dataset.x_train, dataset.n_out, min(config.widths), jnp.dtype(config.dtype))
    planning.check_memory(config, dataset, ladder)
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
    planner = planning.Planner.for_backend() if planner is None else planner
    todo = []
    for arch in config.archs:
        cost = planning.seconds_per_w2(arch, dataset.n_in, dataset.n_out, dataset.x_train.shape[0],
                                       len(config.seeds), config.train, planner.flop_rate)
        buckets = planning.plan_buckets(config.widths, seconds_per_w2=cost, compile_seconds=planner.compile_seconds)
        if not getattr(architectures.resolve(arch), "pads", True):  # a dense model: each width compiles on its own
            buckets = [[w] for w in sorted(set(config.widths))]
        for bucket in buckets:
            pairs = [(n, s) for n in bucket for s in config.seeds if (arch, n, s) not in done_keys]
            if pairs:
                todo.append((arch, max(bucket), pairs))
    bar = _progress(len(todo), progress)
    pool, compiling = _compile_ahead(todo, dataset, config, ladder)
    try:
        new_records = _train_todo(todo, bar, compiling, dataset, config, folder, filename, on_bucket, trainer,
                                  ladder)
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
                folder: Path | None, filename: str, on_bucket, trainer: Callable | None,
                ladder: linsolve.Ladder) -> list[dict]:
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
                "n_params": architectures.param_count(arch, dataset.n_in, n, dataset.n_out), "seed": s,
                "optimizer": config.train.optimizer, "train_rmse": float(info["train_rmse"][b]),
                "test_rmse": float(info["test_rmse"][b]), "status": train.STATUSES[int(info["status"][b])],
                "seconds": seconds / len(pairs), "steps": int(info["steps"][b]), "bucket_width": width,
            })
            if "knots" in info and int(info["knots"][b]) >= 0:  # the schedule's knot stage ran: how it went
                recs[-1].update(knot_moves=int(info["knot_moves"][b]),
                                knot_outcome=knots.KNOT_OUTCOMES[int(info["knots"][b])])
        if folder is not None:
            results.append_records(folder, recs, filename)
        if on_bucket is not None:
            on_bucket(recs)
        new_records.extend(recs)
        if bar is not None:
            bar.set_postfix_str(f"{arch} W={width}", refresh=False)
            bar.update(1)

    pipelined = trainer is None and not planning.accelerator()
    trainer = functools.partial(train_bucket, ladder=ladder) if trainer is None else trainer
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
            launched = launch_bucket(arch, pairs, width, dataset, config, ladder=ladder)
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
          out=None, progress: bool = False, **settings) -> list[dict]:
    """Python entry point: train every (arch, width, seed) and return one record per model.

    archs: a name, an architecture object (`units.Unit`, `dense.Dense`) or a list of them;
    widths, seeds: lists or SPEC strings ('1:104:3', '0,1,2').
    Other keywords are flat settings (`config.sweep_config`: steps, n_data, activation,
    knots, ...).  Returns the records of results.jsonl, one dict per model.
    """
    archs = (archs,) if isinstance(archs, str) or architectures.is_architecture(archs) else tuple(archs)
    if "dtype" in settings and not isinstance(settings["dtype"], str):  # np.float64, jnp.float32, a dtype
        try:
            settings["dtype"] = jnp.dtype(settings["dtype"]).name
        except TypeError:
            pass  # check_sweep names the bad value
    config = sweep_config(archs, tuple(specs.parse_spec(widths, "widths")),
                          tuple(specs.parse_spec(seeds, "seeds", minimum=0)), problem=problem,
                          optimizer=optimizer, **settings)
    return run_sweep(config, out, progress=progress)
