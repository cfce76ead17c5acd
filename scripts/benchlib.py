"""What the benchmark scripts share: the same-run matmul they compare the sweeps with."""

from __future__ import annotations

import time


def matmul_gflops(dtype, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a jitted (n, n) @ (n, n) product in `dtype` on the default device (2 n^3 flops)."""
    import jax

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    f = jax.jit(lambda m: m @ m)
    f(a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(repeats):
        f(a).block_until_ready()
    return 2.0 * n**3 * repeats / (time.perf_counter() - t0) / 1e9
