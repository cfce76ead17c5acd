"""Where one batched all-parameter Newton step spends its time (a benchmark, not a test).

On one H200 (2026-11-29, benchmarks/bench_gpu_h200.json) the paper-scale sweep's widest
GQU bucket (240 models of width 100, 10 000 points) took 0.22 s per Newton step, where
its J^T J products need 0.04 s at the same run's float64 matmul rate.  This script
times the parts of that step on one vmapped batch of models brought to mid-training
by the cascade's stages and --warm-steps all-parameter steps, each part compiled on
its own and timed as the fastest of --repeats runs after a warm-up:

  hessian     the exact Hessian and gradient (`newton.hessian_and_gradient`: J^T J in chunks)
  scale       Jacobi scaling (`linsolve.jacobi_scaled`)
  cholesky    one factorisation that succeeds (`jnp.linalg.cholesky` of Hs + lambda I at
              the rung the ladder found for each lane)
  chol_fail   one that fails at its first pivot (what a lane already factored pays
              under vmap on every further rung of the damping ladder)
  blocked     a right-looking blocked Cholesky from batched matrix products and
              triangular solves (`linsolve.blocked_cholesky`, --block columns a block: a
              candidate for accelerators)
  ladder      `linsolve.damped_cholesky_solve` from rung 0, with the rungs it took per lane
              (ladder_2below: from two rungs below each lane's rung, as training starts it)
  ladder_k4   the same with 4 rungs factored per round (`rungs_per_round=4`: the same
              rungs and bits in a quarter of the rounds, for up to 3 more factorisations)
  step        one whole `newton.newton_step` from rung 0 (line search included); step_k4
              with 4 rungs per round, step_blocked with the blocked Cholesky
              (`linsolve.Ladder(cholesky_block=--block)`, as `bench_gpu.py --cholesky-block`)

and writes them with flop rates to JSON, after every part (the whole steps first; "complete"
is false until the last part is timed).  Defaults: GQU, width 100, 240 models, 10 000
points on an accelerator; width 30, 4 models, 2000 points on a CPU.

    python3 scripts/bench_gpu_step.py [--arch gqu] [--width 100] [--models 240] [--n-data 10000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, without installing it

from benchlib import machine, matmul_gflops  # noqa: E402

import glu_scaling  # noqa: E402,F401  (sets OPENBLAS_NUM_THREADS before jax loads LAPACK)


def best_seconds(fn, args, repeats: int) -> tuple[float, float, object]:
    """(compile + first run seconds, fastest of `repeats` runs, the output)."""
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return first, best, out


def main() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    from glu_scaling import compilation, inits, linsolve, models, newton, problems, schedules, train

    accelerator = jax.default_backend() in ("gpu", "tpu")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="gqu")
    parser.add_argument("--width", type=int, default=100 if accelerator else 30)
    parser.add_argument("--models", type=int, default=240 if accelerator else 4)
    parser.add_argument("--n-data", type=int, default=10_000 if accelerator else 2000)
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--warm-steps", type=int, default=10,
                        help="all-parameter newton-cascade steps before timing (the init's Hessian is far from PD)")
    parser.add_argument("--block", type=int, default=128, help="block size of the blocked Cholesky")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--out", default="benchmarks/bench_gpu_step.json")
    args = parser.parse_args()
    dtype = jnp.dtype(args.dtype)

    k = models.n_factors(args.arch)
    ds = problems.make_dataset("paper_1d", n_train=args.n_data, n_test=256, dtype=args.dtype)
    data, chunk = train.prepare_data(ds.x_train, ds.y_train, ds.x_test, ds.y_test, args.chunk)
    keys = jax.random.split(jax.random.PRNGKey(0), args.models)
    params = jax.tree.map(lambda *a: jnp.stack(a), *[
        inits.init(key, args.arch, 1, args.width, 1, dtype=dtype) for key in keys])
    t0 = time.perf_counter()
    params, _ = jax.block_until_ready(train.train_batch(params, data, schedules.TrainConfig(
        "newton-cascade", args.warm_steps, chunk=chunk)))
    warm_s = time.perf_counter() - t0
    sel = train.selection(models.all_groups(k), k, 1, 1)
    P = newton.n_selected(jax.tree.map(lambda a: a[0], params), sel)
    B, N = args.models, data.x.shape[0]
    jit = compilation.jit  # the package's compiler options (GPU: no fusion autotuner)

    def batched(fn):
        return jit(jax.vmap(fn))

    hessian = batched(lambda p: newton.hessian_and_gradient(p, data.x, data.t, data.weight, sel, chunk))
    scale = batched(linsolve.jacobi_scaled)
    eye = jnp.eye(P, dtype=dtype)
    chol = batched(lambda h, lam: jnp.linalg.cholesky(h + lam * eye))
    chol_fail = batched(lambda h: jnp.linalg.cholesky(h - jnp.finfo(dtype).max * eye))
    blocked = batched(lambda h, lam: linsolve.blocked_cholesky(h + lam * eye, args.block))

    def ladder_of(k):
        return batched(lambda h, g, start: linsolve.damped_cholesky_solve(h, -g, start, ladder=linsolve.Ladder(k)))

    def step_of(k, block=0):
        return batched(lambda p: newton.newton_step(p, data.x, data.t, data.weight, sel, chunk,
                                                    ladder=linsolve.Ladder(k, block)))

    rows = {}
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": {**machine(), "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
                    "jax": jax.__version__},
        "settings": {**vars(args), "P": int(P), "points_padded": int(N), "chunk_used": int(chunk),
                     "compiler_options": compilation.compiler_options(), "warm_up_s": warm_s},
        "parts": rows, "complete": False,
    }

    def timed(name, fn, *fargs, flops=None):
        first, best, out = best_seconds(fn, fargs, args.repeats)
        rows[name] = {"seconds": best, "first_call_s": first,
                      "gflops": None if flops is None else flops / best / 1e9}
        rate = "" if flops is None else f"  {flops / best / 1e9:9.1f} GFLOP/s"
        print(f"  {name:16s} {best * 1e3:10.2f} ms  (first call {first:6.2f} s){rate}", flush=True)
        out_path.write_text(json.dumps(result, indent=2) + "\n")  # what is timed so far survives a timeout
        return out

    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; {args.arch} W={args.width} (P={P}), "
          f"{B} models, {N} points, chunk {chunk}, {args.dtype}; {args.warm_steps} warm-up cascade steps "
          f"{warm_s:.1f} s with compilation", flush=True)
    mm = matmul_gflops(dtype, 8192 if accelerator else 1024, 5)
    result["matmul_gflops"] = mm
    print(f"  matmul           {mm:10.1f} GFLOP/s", flush=True)
    # the whole steps first: scripts/bench_gpu_tuned.sh picks the ladder by them
    timed("step", step_of(1), params)
    timed("step_k4", step_of(4), params)
    timed("step_blocked", step_of(1, args.block), params)
    H, g = timed("hessian", hessian, params, flops=B * 2.0 * N * P * P)
    Hs, s = timed("scale", scale, H)
    gs = s * g
    zero = jnp.zeros(B, int)
    z, rungs = timed("ladder", ladder_of(1), Hs, gs, zero)
    z4, rungs4 = timed("ladder_k4", ladder_of(4), Hs, gs, zero)
    below = jnp.maximum(rungs - 2, 0)
    timed("ladder_2below", ladder_of(1), Hs, gs, below)
    timed("ladder_2below_k4", ladder_of(4), Hs, gs, below)
    same_rungs = bool(np.array_equal(np.asarray(rungs), np.asarray(rungs4)))
    same_bits = bool(np.array_equal(np.asarray(z).view(np.uint8), np.asarray(z4).view(np.uint8)))
    lam = linsolve.damping_of(rungs, dtype)
    L = timed("cholesky", chol, Hs, lam, flops=B * P**3 / 3)
    timed("chol_fail", chol_fail, Hs)
    Lb = timed("blocked", blocked, Hs, lam, flops=B * P**3 / 3)
    ok = np.isfinite(np.asarray(L)).all(axis=(1, 2))
    blocked_err = float(np.max(np.abs(np.asarray(Lb)[ok] - np.asarray(L)[ok]))) if ok.any() else None
    rungs = np.asarray(rungs)
    result.update({
        "ladder_rungs": {"min": int(rungs.min()), "median": float(np.median(rungs)), "max": int(rungs.max())},
        "blocked_max_abs_diff": blocked_err, "factored_lanes": int(ok.sum()),
        "k4_same_rungs": same_rungs, "k4_same_bits": same_bits, "complete": True,
    })
    print(f"  ladder rungs per lane: min {rungs.min()}, median {np.median(rungs):.1f}, max {rungs.max()} "
          f"(a vmapped ladder factors max + 1 times); blocked vs cholesky max |diff| {blocked_err}; "
          f"4 rungs a round: same rungs {same_rungs}, same bits {same_bits}", flush=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
