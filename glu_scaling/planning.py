"""The sweep planner: how a sweep's widths become compiled buckets and vmapped groups.

A bucket is a run of widths padded to its largest, trained by one compiled call; the
planner trades one compilation per bucket against the work padding wastes (`plan_buckets`
with the cost model `seconds_per_w2`), and splits a bucket's models into vmapped groups
that fit one device's memory (`model_bytes`, `default_batch_size`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from glu_scaling import architectures, linsolve, models, problems
from glu_scaling.config import SweepConfig
from glu_scaling.errors import UsageError
from glu_scaling.schedules import TrainConfig
from glu_scaling.specs import parse_spec


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
# compile one bucket, per backend (scripts/bench_gpu.py measures both on a GPU; why the
# GPU guesses stay as they are: docs/scale-out.md).
FLOP_RATE = {"cpu": 2e10, "gpu": 5e12, "tpu": 5e12}
COMPILE_SECONDS = {"cpu": 3.0, "gpu": 8.0, "tpu": 8.0}


def accelerator() -> bool:
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


def seconds_per_w2(arch: str, n_in: int, n_out: int, n_points: int, n_seeds: int, train: TrainConfig,
                   flop_rate: float | None = None) -> float:
    """Rough training seconds of the `n_seeds` models of one width per unit of W^2
    (at `flop_rate` flop/s; None: the default backend's guess)."""
    _, p, groups = architectures.unit_shape(arch, n_in, n_out, 1)
    k = max(groups - 2, 0)  # the gated family's factors; a unit's groups but its gate and output
    if train.splines_only:
        n_steps, p = k + 1, n_in + 1  # one step a stage, each on one group of a unit
    else:
        n_steps = train.n_steps + k + 1 + (train.gate_steps if train.has_gate_stage else 1)
    if not train.newton:
        n_steps = n_steps * 3 / (p * n_out)  # gradient steps cost ~ a forward pass each, not P^2
    flop_rate = Planner.for_backend().flop_rate if flop_rate is None else flop_rate
    return n_seeds * n_steps * 2.0 * n_points * n_out * p * p / flop_rate


def model_bytes(arch: int | str, n_in: int, n_out: int, width: int, n_points: int, chunk: int, itemsize: int = 8,
                ladder: linsolve.Ladder = linsolve.DEFAULT_LADDER) -> int:
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
    elements = 112 MB, doubled 224 MB; a bucket of 480 such models then needs ~107 GB at
    once, so on a device with a 127 GB allocator limit (budget half of it: cap 283 models)
    `default_batch_size` splits it into 2 vmapped groups of 240 (53 GB).
    arch: an architecture (`architectures.resolve`; a unit's groups bar its gate and output count as
    k), or the gated family's k.
    """
    if isinstance(arch, int) and not isinstance(arch, bool):
        k, p = arch, models.unit_size(arch, n_in, n_out)
    else:
        width, p, groups = architectures.unit_shape(arch, n_in, n_out, width)  # a dense model: one row of everything
        k = max(groups - 2, 0)
    P = width * p + n_out
    c = min(chunk, n_points)
    n_pad = -(-n_points // c) * c
    K = ladder.rungs_per_round
    square_arrays = 6 + 2 * (K - 1) + (2 * K if ladder.cholesky_block > 0 else 0)  # P x P ones
    elements = 3 * c * n_out * P + (k + 6) * c * width + square_arrays * P * P + (k + 3) * n_pad * width
    return 2 * itemsize * elements


def _allocator_limit() -> float | None:
    """The allocator limit (bytes) the first local device reports; None where it reports
    none (CPUs): the planner's one device-memory query."""
    try:
        limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
    except Exception:  # some backends (and CPU) report nothing
        limit = None
    return float(limit) if limit else None


def memory_budget(fraction: float = 0.5) -> float:
    """Bytes one device may spend on a vmapped group: `fraction` of its allocator limit
    (16 GB x fraction when the backend does not report one)."""
    return fraction * (_allocator_limit() or 16e9)


# Models vmapped together on a CPU.  Every lane of a vmapped while loop (the Newton steps,
# the damping ladder, the line search) runs until the slowest lane is done, and a CPU
# gains nothing from batching the already large per-model products: one model at a time
# (measured against groups of 2 and 4: docs/benchmarks.md).
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
    if not accelerator():
        if n_devices == 1:
            return min(n_models, CPU_BATCH)
        cap = CPU_BATCH
    else:
        cap = share if bytes_per_model is None else max(1, int(memory_budget() // bytes_per_model))
    groups = -(-share // min(cap, share))
    return -(-share // groups)


def device_memory() -> float:
    """Bytes of memory of one device: the allocator limit an accelerator reports, else the
    host's physical memory (0 if neither is known)."""
    limit = _allocator_limit()
    if limit:
        return limit
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return 0.0


def check_memory(config: SweepConfig, dataset: problems.Dataset,
                 ladder: linsolve.Ladder = linsolve.DEFAULT_LADDER) -> None:
    """Refuse, before anything is written, a Newton sweep whose widest model alone would not
    fit in one device's memory (`model_bytes`: its Hessian and Jacobian chunks)."""
    if not config.train.newton:
        return
    memory = device_memory()
    width = max(parse_spec(config.widths, "widths"))
    for arch in config.archs:
        need = model_bytes(arch, dataset.n_in, dataset.n_out, width, dataset.x_train.shape[0],
                           config.train.chunk, jnp.dtype(config.dtype).itemsize, ladder)
        if memory and need > memory:
            raise UsageError(f"width {width} needs about {need / 1e9:.3g} GB for one {arch} model's Newton step, "
                             f"more than this device's {memory / 1e9:.3g} GB; use smaller --widths")
