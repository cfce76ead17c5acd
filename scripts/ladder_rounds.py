"""How many Cholesky factorisations the damping ladder takes per Newton step (a measurement,
not a test).

Each model (1D target paper_1d, 10 000 points) first takes the spline stages
(`newton-splines`), then up to 100 all-parameter Newton steps, each starting the ladder
two rungs below the last step's rung as training does (`train._newton_update`).  A step
that settles on rung i from start s factors i - s + 1 times.  Under vmap a batch runs as
many ladder rounds a step as its slowest lane (`linsolve.damped_cholesky_solve`'s
rungs_per_round).  On the 2-core CPU, 2026-11-29 (57 s): 1200 steps, 3.09 factorisations
a step on average, extra rungs 0:500 1:103 2:136 3:81 4:192 5:92 6:53 7:21 8:10 9:6 10:2
11:2 12:2 (so up to 13 factorisations).

    python scripts/ladder_rounds.py
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, without installing it

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

from glu_scaling import inits, models, newton, problems, schedules, train  # noqa: E402

MODELS = [("glu", 10), ("glu", 25), ("glu", 50), ("gqu", 25), ("gqu", 50), ("mlp", 50)]


def extra_rungs(arch: str, n: int, seed: int, data: train.TrainData, chunk: int,
                steps: int = 100) -> collections.Counter:
    """{i - s: count} over the all-parameter steps of one model (until the line search fails)."""
    k = models.n_factors(arch)
    params = inits.init(jax.random.PRNGKey(seed), arch, 1, n, 1)
    params, _ = train.train_newton(params, data, schedules.TrainConfig("newton-splines"))
    sel = train.selection(models.all_groups(k), k, 1, 1)
    step = jax.jit(lambda p, start: newton.newton_step(p, data.x, data.t, data.weight, sel, chunk, start))
    last, counts = 0, collections.Counter()
    for _ in range(steps):
        start = max(last - 2, 0)
        params, info = step(params, start)
        last = int(info.damping_index)
        counts[last - start] += 1
        if float(info.alpha) == 0:
            break
    return counts


def main() -> None:
    ds = problems.make_dataset("paper_1d", n_train=10_000, n_test=256)
    data, chunk = train.prepare_data(ds.x_train, ds.y_train, ds.x_test, ds.y_test, 2048)
    total = collections.Counter()
    for arch, n in MODELS:
        for seed in range(2):
            counts = extra_rungs(arch, n, seed, data, chunk)
            total.update(counts)
            mean = sum((d + 1) * c for d, c in counts.items()) / sum(counts.values())
            print(f"{arch} n={n} seed {seed}: extra rungs {dict(sorted(counts.items()))}, "
                  f"{mean:.2f} factorisations a step", flush=True)
    mean = sum((d + 1) * c for d, c in total.items()) / sum(total.values())
    print(f"all {sum(total.values())} steps: extra rungs {dict(sorted(total.items()))}, "
          f"{mean:.2f} factorisations a step, at most {max(total) + 1}")


if __name__ == "__main__":
    main()
