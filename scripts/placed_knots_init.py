"""Does the trained slope depend on where the knots start?  (an experiment, not a test)

Trains GLU and GQU models on the paper's 1D target (1/(1 + cos^2(pi x)), 10k random
training points, 10k-point test grid, float64) twice: from the usual alternating spline
init (knots evenly spaced over [-1.001, 1.001]) and from the same init with the knots
placed for the target, where |f^(p+1)|^(2/(2p+3)) has equal mass between neighbours
(`splines.equidistributed_breakpoints`, p = 2 for the GLU, 3 for the GQU; the end
knots moved out by the same 0.001).  Each start is trained with `newton-splines` (gates
frozen) and `newton-cascade` (100 all-parameter steps); every width of one architecture,
init and schedule is one vmapped call.  Prints test RMSE per width and the log-log slope
per seed, and writes JSON.

    python scripts/placed_knots_init.py [--widths 10,20,30,40,50] [--seeds 0] [--out placed_knots_init.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

DEGREE = {"glu": 2, "gqu": 3}
PAD = 0.001  # the spline init's knots reach 0.001 beyond the interval


def placed_gates(f, n: int, width: int, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Alternating-facing gates G (width, 1), g (width,) with n knots placed for f (zero beyond n)."""
    from glu_scaling import spline_init, splines

    t = splines.equidistributed_breakpoints(f, n - 1, degree) if n > 1 else np.array([-1.0])
    t[0] -= PAD  # as the uniform init: one unit sits at -1.001
    if n > 1:
        t[-1] += PAD
    sign = np.asarray(spline_init.facing_signs(n, "alternate", jnp.float64))
    G, g = np.zeros((width, 1)), np.zeros(width)
    G[:n, 0], g[:n] = sign, -sign * t
    return G, g


def start_batch(arch: str, widths: list[int], seed: int, width: int, f, placed: bool):
    """The models of `widths` (seed `seed`), padded to `width` and stacked on a leading axis."""
    from glu_scaling import models

    batch = []
    for n in widths:
        p = models.init(jax.random.key(seed), arch, 1, n, 1, width=width)
        p = jax.tree.map(lambda a: a.astype(jnp.float64) if isinstance(a, jax.Array) else a, p)
        if placed:
            G, g = placed_gates(f, n, width, DEGREE[arch])
            p = p.replace(G=jnp.asarray(G), g=jnp.asarray(g))
        batch.append(p)
    return jax.tree.map(lambda *leaves: jnp.stack(leaves) if isinstance(leaves[0], jax.Array) else leaves[0], *batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="10,20,30,40,50")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", default="placed_knots_init.json")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    from glu_scaling import problems, sweeps, train

    widths = sweeps.parse_spec(args.widths)
    seeds = sweeps.parse_spec(args.seeds, "seeds", minimum=0)
    f = problems.scalar_target("paper_1d")
    ds = problems.make_dataset("paper_1d", n_train=10_000, n_test=10_000, seed=0, dtype=jnp.float64)
    data, chunk = train.prepare_data(ds.x_train, ds.y_train, ds.x_test, ds.y_test, 2048)
    rows = []
    for arch in DEGREE:
        for init in ("uniform", "placed"):
            for optimizer in ("newton-splines", "newton-cascade"):
                for seed in seeds:
                    t0 = time.perf_counter()
                    batch = start_batch(arch, widths, seed, max(widths), f, init == "placed")
                    _, info = train.train_batch(batch, data, train.TrainConfig(optimizer, chunk=chunk),
                                                batch_size=len(widths))
                    test = np.asarray(info["test_rmse"])
                    slope = float(np.polyfit(np.log(widths), np.log(test), 1)[0])
                    rows.append({"arch": arch, "init": init, "optimizer": optimizer, "seed": seed,
                                 "widths": widths, "test_rmse": test.tolist(), "slope": slope,
                                 "statuses": train.status_names(np.asarray(info["status"])),
                                 "seconds": time.perf_counter() - t0})
                    print(f"{arch} {init:7s} {optimizer:14s} seed {seed}  slope {slope:6.2f}  "
                          + " ".join(f"{v:.2e}" for v in test), flush=True)
    Path(args.out).write_text(json.dumps({"widths": widths, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
