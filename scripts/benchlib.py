"""What the benchmark scripts share: the same-run matmul they compare the sweeps with, and
the count of Newton steps whose flops they credit."""

from __future__ import annotations

import os
import platform
import time

from glu_scaling.models import unit_size


def machine() -> dict:
    """What the numbers were measured on: OS, CPU count, the CPU's model and widest vector
    ISA (an AVX-512 CPU runs the same-run matmul about 2x faster than an AVX2 one, and
    XLA:CPU compiles for the host, so results of chaotic runs may differ between them)."""
    model, isa = platform.processor() or "unknown", "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        info = ""
    for line in info.splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            isa = next((name for name in ("avx512f", "avx2", "avx", "sse2") if name in flags), "other")
            break
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu_model": model, "vector_isa": isa}


def matmul_gflops(dtype, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a jitted (n, n) @ (n, n) product in `dtype` on the default device (2 n^3 flops),
    from the fastest of `repeats` runs (on a shared machine other work only ever slows a run;
    bench.py times its cascade runs the same way)."""
    import jax

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    f = jax.jit(lambda m: m @ m)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def full_newton_steps(steps_taken: int, optimizer: str, k: int, n_steps: int) -> int:
    """Newton steps a model executed on its all-parameter Hessian (`flops_per_newton_step`).

    `newton` builds that Hessian at every step.  `newton-cascade` solves its k + 1 spline
    steps on their own small selections (QR, `train._newton_stage`) and builds it for the
    gate step, which picks its entries with a run-time mask (`train._newton_schedule`), and
    for every all-parameter step -- unless n_steps <= 1, when the gate step too runs on its
    own smaller Hessian.  Counted: the accepted steps (`steps_taken`) after those on
    smaller systems, plus the failed one that stopped a model early (a single step that
    fails mid-cascade is executed but not counted: an undercount).
    `newton-splines` (smaller, per-stage systems) and first-order optimisers: 0.
    """
    if optimizer not in ("newton", "newton-cascade"):
        return 0
    before = (k + 1 + (n_steps <= 1)) if optimizer == "newton-cascade" else 0
    total = n_steps + (k + 2 if optimizer == "newton-cascade" else 0) - before
    accepted = max(steps_taken - before, 0)
    return min(accepted + (accepted < total), total)


def flops_per_newton_step(width: int, k: int, n_in: int, n_out: int, n_points: int) -> float:
    """Dominant flops of one all-parameter Newton step: J^T J (2 N dy P^2) + Cholesky (P^3 / 3)."""
    P = width * unit_size(k, n_in, n_out) + n_out
    return 2.0 * n_points * n_out * P * P + P**3 / 3.0
