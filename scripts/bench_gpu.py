"""Paper-scale sweep benchmark for one accelerator (a benchmark, not a test); run it through
scripts/bench_gpu.sh.

Measures, in one process:
  1. float64 and float32 matmul GFLOP/s, fastest of 10 runs (the same run's hardware ceiling,
     and their ratio; each sweep below is timed once, so its ratio to them errs low);
  2. a `newton-cascade` sweep (archs mlp, glu, gqu; widths 1..100; 16 seeds; 10 000
     points of paper_1d; 100 all-parameter steps) in float64, then the same in float32
     (x64 stays enabled; the float32 sweep asks for dtype float32 and runs its matmuls
     at --f32-precision, default "highest", i.e. true float32, not TF32):
     wall time, compile time (JAX's own compile events), models per second and the
     achieved GFLOP/s of the all-parameter-size Newton steps each model took
     (`benchlib.full_newton_steps`: the cascade's gate step included, since it builds
     the all-parameter Hessian too; `benchlib.flops_per_newton_step` at the
     model's width: "useful"; at the bucket's padded width: "executed").
With no GPU/TPU the defaults shrink (widths 1..20 step 3, 2 seeds, 2000 points, 10 steps)
so it finishes in a minute or two on a small CPU; every flag overrides.  A time budget
(--budget, default 240 s) stops launching buckets when it is spent (the JSON says how far
each sweep got), the JSON is rewritten after every bucket, and a bucket that fails (e.g.
out of memory even with one model at a time) is reported and skipped.

    python3 scripts/bench_gpu.py [--out benchmarks/bench_gpu.json] [--widths 1:101] [--seeds 0:16] ...
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, without installing it

from benchlib import flops_per_newton_step, full_newton_steps, machine, matmul_gflops  # noqa: E402  (scripts/ is on the path: this script's folder)

import glu_scaling  # noqa: E402,F401  (sets OPENBLAS_NUM_THREADS before jax loads LAPACK)

PAPER = {"archs": "mlp,glu,gqu", "widths": "1:101", "seeds": "0:16", "n_data": 10_000, "steps": 100}
SMALL = {"archs": "mlp,glu,gqu", "widths": "1:21:3", "seeds": "0:2", "n_data": 2000, "steps": 10}
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


class CompileClock:
    """Seconds JAX spent tracing, lowering and compiling (its monitoring events): in all
    threads (`seconds`; compile-ahead threads overlap training) and in the main one (`main`)."""

    def __init__(self, jax):
        self.seconds = 0.0
        self.main = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **_):
        if event in COMPILE_EVENTS:
            self.seconds += duration
            if threading.current_thread() is threading.main_thread():
                self.main += duration


class OutOfTime(Exception):
    pass


@contextlib.contextmanager
def f32_precision(jax, precision: str):
    """Set the default matmul precision globally (not `jax.default_matmul_precision(...)`, which
    is thread-local: the sweep's compile-ahead threads would not see it and compile twice)."""
    old = jax.config.jax_default_matmul_precision
    jax.config.update("jax_default_matmul_precision", None if precision == "default" else precision)
    try:
        yield
    finally:
        jax.config.update("jax_default_matmul_precision", old)


def _drop_failed(folder: str, errors: list[dict]) -> None:
    """Remove the placeholder records of failed buckets from a results folder, so that a rerun
    trains those models instead of counting them as done."""
    from glu_scaling import results

    failed = {(e["arch"], n, s) for e in errors for n, s in e["pairs"]}
    kept = [r for r in results.read_records(Path(folder)) if results.model_key(r) not in failed]
    results.write_records_atomic(Path(folder) / "results.jsonl", kept)


def run_sweep(jax, config, budget_end: float, clock: CompileClock, on_progress, planner, ladder,
              results_dir=None) -> dict:
    """One sweep, bucket by bucket, until done or past `budget_end` (perf_counter seconds);
    with `results_dir`, its records go to results_dir/<dtype>/ as a sweep's results folder."""
    from glu_scaling import models, sweeps, train

    k_of = {a: models.n_factors(a) for a in config.archs}
    n_steps = config.train.n_steps
    row = {"dtype": config.dtype, "complete": False, "buckets": [], "errors": [], "models": 0, "wall_s": 0.0,
           "run_s": 0.0, "compile_s": 0.0, "flops_useful": 0.0, "flops_executed": 0.0, "full_steps": 0,
           "models_planned": len(config.archs) * len(config.widths) * len(config.seeds)}
    t_start = time.perf_counter()
    c_start = clock.seconds
    state = {"t": t_start, "run": 0.0, "compile": 0.0}

    def guarded(arch, pairs, width, dataset, cfg):
        """train_bucket, timed: its seconds less those the main thread spent compiling are the run."""
        if time.perf_counter() > budget_end:
            raise OutOfTime
        t0, c0 = time.perf_counter(), clock.main
        try:
            out = sweeps.train_bucket(arch, pairs, width, dataset, cfg, ladder)
            state["compile"] = clock.main - c0
            state["run"] = time.perf_counter() - t0 - state["compile"]
            return out
        except Exception as err:  # report the bucket (e.g. out of memory) and keep going
            row["errors"].append({"arch": arch, "width": width, "models": len(pairs),
                                  "pairs": [list(p) for p in pairs],
                                  "error": f"{type(err).__name__}: {str(err)[:400]}"})
            print(f"  bucket {arch} W={width} ({len(pairs)} models) FAILED: {type(err).__name__}: "
                  f"{str(err).splitlines()[0][:200]}", flush=True)
            nan = np.full(len(pairs), np.nan)
            info = {"status": np.full(len(pairs), train.DIVERGED), "train_rmse": nan, "test_rmse": nan,
                    "steps": np.zeros(len(pairs), int), "loss": nan}
            return None, info, 0.0

    def on_bucket(recs):
        now = time.perf_counter()
        wall, run, compile_s = now - state["t"], state["run"], state["compile"]
        state.update(t=now, run=0.0, compile=0.0)
        if not recs or all(r["test_rmse"] is None or np.isnan(r["test_rmse"]) for r in recs):
            return
        arch, width = recs[0]["arch"], recs[0]["bucket_width"]
        k = k_of[arch]
        useful = executed = 0.0
        steps = 0
        for r in recs:
            s = full_newton_steps(r["steps"], config.train.optimizer, k, n_steps)
            steps += s
            useful += s * flops_per_newton_step(r["n_hidden"], k, 1, 1, config.n_data)
            executed += s * flops_per_newton_step(width, k, 1, 1, config.n_data)
        rmse = [r["test_rmse"] for r in recs if r["test_rmse"] is not None]
        bucket = {"arch": arch, "width": width, "n_hidden": sorted({r["n_hidden"] for r in recs}),
                  "models": len(recs), "wall_s": wall, "run_s": run, "compile_main_thread_s": compile_s,
                  "full_steps": steps, "gflops_useful_run": useful / max(run, 1e-9) / 1e9,
                  "gflops_executed_run": executed / max(run, 1e-9) / 1e9,
                  "test_rmse_median": float(np.median(rmse)) if rmse else None,
                  "statuses": {s: sum(r["status"] == s for r in recs) for s in train.STATUSES}}
        row["buckets"].append(bucket)
        row["models"] += len(recs)
        row["flops_useful"] += useful
        row["flops_executed"] += executed
        row["full_steps"] += steps
        row["run_s"] += run
        print(f"  {config.dtype} {arch} W={width:<4d} {len(recs):4d} models  {wall:7.2f} s since the last "
              f"(run {run:6.2f} s, compile in this thread {compile_s:5.2f} s)  "
              f"{bucket['gflops_executed_run']:9.1f} GFLOP/s  median test RMSE {bucket['test_rmse_median']:.2e}",
              flush=True)
        on_progress()

    try:
        out = None if results_dir is None else f"{results_dir}/{config.dtype}"
        sweeps.run_sweep(config, out, progress=False, on_bucket=on_bucket, planner=planner, trainer=guarded,
                         ladder=ladder)
        row["complete"] = not row["errors"]
    except OutOfTime:
        row["stopped"] = "time budget spent"
    finally:
        if results_dir is not None and row["errors"]:
            _drop_failed(f"{results_dir}/{config.dtype}", row["errors"])
    row["wall_s"] = time.perf_counter() - t_start
    row["compile_s"] = clock.seconds - c_start  # all threads: can exceed the wall time
    run_s = max(row["run_s"], 1e-9)
    row.update({
        "waiting_s": row["wall_s"] - row["run_s"],  # compilation not hidden, data, records
        "models_per_s": row["models"] / row["wall_s"],
        "models_per_s_run": row["models"] / run_s,
        "gflops_useful": row["flops_useful"] / row["wall_s"] / 1e9,
        "gflops_useful_run": row["flops_useful"] / run_s / 1e9,
        "gflops_executed_run": row["flops_executed"] / run_s / 1e9,
    })
    return row


def parse_args(accelerator: bool) -> argparse.Namespace:
    d = PAPER if accelerator else SMALL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/bench_gpu.json")
    parser.add_argument("--results-dir", default=None,
                        help="also keep every model's record: DIR/float64 and DIR/float32 results folders")
    parser.add_argument("--archs", default=d["archs"])
    parser.add_argument("--widths", default=d["widths"], help="SPEC, lo:hi[:step] (hi exclusive)")
    parser.add_argument("--seeds", default=d["seeds"])
    parser.add_argument("--n-data", type=int, default=d["n_data"])
    parser.add_argument("--steps", type=int, default=d["steps"])
    parser.add_argument("--problem", default="paper_1d")
    parser.add_argument("--optimizer", default="newton-cascade")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--f32-precision", default="highest", choices=["highest", "high", "default"],
                        help="matmul precision of the float32 sweep and matmul (highest: no TF32)")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for everything (default 240)")
    parser.add_argument("--batch-size", type=int, default=None, help="models vmapped together (default: auto)")
    parser.add_argument("--devices", type=int, default=None, help="devices to shard over (default: all)")
    parser.add_argument("--rungs-per-round", type=int, default=1,
                        help="damping rungs factored per round (linsolve.damped_cholesky_solve; same models)")
    parser.add_argument("--cholesky-block", type=int, default=0,
                        help="> 0: factor by linsolve.blocked_cholesky with blocks of this many columns (0: unblocked)")
    parser.add_argument("--flop-rate", type=float, default=None, help="override the bucket planner's flop rate")
    parser.add_argument("--compile-seconds", type=float, default=None,
                        help="override the bucket planner's compile seconds per bucket")
    parser.add_argument("--matmul-n", type=int, default=8192 if accelerator else 1024)
    parser.add_argument("--no-cache", action="store_true", help="no persistent XLA compilation cache")
    return parser.parse_args()


def main() -> None:
    t_begin = time.perf_counter()
    import jax
    import jax.numpy as jnp

    print(f"jax {jax.__version__}, devices: {jax.devices()}", flush=True)
    jax.config.update("jax_enable_x64", True)
    backend = jax.default_backend()
    accelerator = backend in ("gpu", "tpu")
    args = parse_args(accelerator)
    budget_end = t_begin + args.budget
    cache = os.environ.get("GLU_SCALING_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "glu_scaling", "xla"))
    if not args.no_cache and cache.lower() not in ("off", "0", "none", ""):
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    else:
        cache = None
    from glu_scaling import compilation, linsolve, planning, specs
    from glu_scaling.config import sweep_config

    planner = planning.Planner.for_backend(backend)
    if args.flop_rate:
        planner = dataclasses.replace(planner, flop_rate=args.flop_rate)
    if args.compile_seconds is not None:
        planner = dataclasses.replace(planner, compile_seconds=args.compile_seconds)
    clock = CompileClock(jax)
    device = jax.devices()[0]
    result = {
        "machine": {**machine(), "backend": backend,
                    "devices": [str(d) for d in jax.devices()], "device_kind": device.device_kind,
                    "jax": jax.__version__, "python": platform.python_version()},
        "settings": {**{k: v for k, v in vars(args).items() if k != "out"}, "cache": cache,
                     "planner_flop_rate": planner.flop_rate, "defaults": "paper" if accelerator else
                     "small (no accelerator)",
                     "planner_compile_seconds": planner.compile_seconds,
                     "compiler_options": compilation.compiler_options(), "xla_flags": os.environ.get("XLA_FLAGS")},
        "sweeps": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        result["total_wall_s"] = time.perf_counter() - t_begin
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    repeats = 10 if accelerator else 3
    result["matmul_gflops"] = {"n": args.matmul_n, "float64": matmul_gflops(jnp.float64, args.matmul_n,
                                                                            repeats)}
    with f32_precision(jax, args.f32_precision):
        result["matmul_gflops"]["float32"] = matmul_gflops(jnp.float32, args.matmul_n, repeats)
    mm = result["matmul_gflops"]
    mm["float32_over_float64"] = mm["float32"] / mm["float64"]
    print(f"matmul {args.matmul_n}^2: float64 {mm['float64']:.1f} GFLOP/s, float32 ({args.f32_precision}) "
          f"{mm['float32']:.1f} GFLOP/s, ratio {mm['float32_over_float64']:.2f}", flush=True)
    save()

    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for i, dtype in enumerate(dtypes):
        config = sweep_config(
            archs=tuple(a.strip() for a in args.archs.split(",")), widths=tuple(specs.parse_spec(args.widths)),
            seeds=tuple(specs.parse_spec(args.seeds, "seeds", minimum=0)), problem=args.problem,
            optimizer=args.optimizer, steps=args.steps, n_data=args.n_data, dtype=dtype,
            batch_size=args.batch_size, devices=args.devices)
        ladder = linsolve.Ladder(args.rungs_per_round, args.cholesky_block)
        # share what is left between the sweeps still to run (float64 first)
        left = budget_end - time.perf_counter()
        sweep_end = time.perf_counter() + left * (0.55 if i < len(dtypes) - 1 else 1.0)
        print(f"{dtype} sweep: {len(config.archs)} archs x {len(config.widths)} widths x {len(config.seeds)} seeds, "
              f"{config.n_data} points, {config.train.optimizer} {config.train.steps} steps; "
              f"{sweep_end - time.perf_counter():.0f} s of budget", flush=True)
        try:
            if dtype == "float32":
                with f32_precision(jax, args.f32_precision):
                    row = run_sweep(jax, config, sweep_end, clock, save, planner, ladder, args.results_dir)
            else:
                row = run_sweep(jax, config, sweep_end, clock, save, planner, ladder, args.results_dir)
        except Exception as err:  # keep the other dtype's numbers
            traceback.print_exc()
            row = {"dtype": dtype, "error": f"{type(err).__name__}: {str(err)[:1000]}"}
        if "matmul_gflops" in result and "gflops_useful_run" in row:
            row["ratio_to_matmul"] = row["gflops_executed_run"] / result["matmul_gflops"][dtype]
        result["sweeps"][dtype] = row
        save()
        if "error" not in row:
            print(f"{dtype}: {row['models']}/{row['models_planned']} models in {row['wall_s']:.1f} s "
                  f"(training {row['run_s']:.1f} s; compilation {row['compile_s']:.1f} s over all threads)"
                  f"{'' if row['complete'] else ' INCOMPLETE'}; "
                  f"{row['models_per_s']:.1f} models/s ({row['models_per_s_run']:.1f} without compile); "
                  f"{row['gflops_useful_run']:.1f} GFLOP/s useful, {row['gflops_executed_run']:.1f} executed "
                  f"(= {row['ratio_to_matmul']:.2f} x matmul)", flush=True)
    s = result["sweeps"]
    if all("gflops_executed_run" in s.get(d, {}) for d in ("float32", "float64")):
        result["float32_over_float64_sweep"] = s["float32"]["gflops_executed_run"] / s["float64"]["gflops_executed_run"]
        print(f"float32 / float64 sweep GFLOP/s: {result['float32_over_float64_sweep']:.2f} "
              f"(matmul: {result['matmul_gflops']['float32_over_float64']:.2f})")
    save()
    print(f"wrote {out} ({result['total_wall_s']:.0f} s in all)")


if __name__ == "__main__":
    main()
