"""Does the trained slope depend on where the knots start?  (an experiment, not a test)

Trains GLU and GQU models on the paper's 1D target (1/(1 + cos^2(pi x)), 10k random
training points, 10k-point test grid, float64) twice: from the usual alternating spline
init (knots evenly spaced over [-1.001, 1.001]) and from the same init with the knots
placed for the target (`--knots placed`, `inits.placed_knots`: |f^(p+1)|^(2/(2p+3))
has equal mass between neighbours, p = 2 for the GLU, 3 for the GQU).  Each start is
trained with `newton-splines` (gates frozen) and `newton-cascade` (100 all-parameter
steps), through `glu_scaling.sweeps` (every width and seed of one architecture in one
vmapped call).  Prints test RMSE per width and the log-log slope per seed, and writes
JSON.  Table 1 (`glu-scaling reproduce`) carries the same comparison on the full protocol.

    python scripts/placed_knots_init.py [--widths 10,20,30,40,50] [--seeds 0] [--out placed_knots_init.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="10,20,30,40,50")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", default="placed_knots_init.json")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    from glu_scaling import specs, sweeps

    widths = specs.parse_spec(args.widths)
    seeds = specs.parse_spec(args.seeds, "seeds", minimum=0)
    rows = []
    for arch in ("glu", "gqu"):
        for knots in ("uniform", "placed"):
            for optimizer in ("newton-splines", "newton-cascade"):
                t0 = time.perf_counter()
                recs = sweeps.sweep([arch], widths, seeds, problem="paper_1d", optimizer=optimizer,
                                    n_data=10_000, n_test=10_000, knots=knots)
                for seed in seeds:
                    test = np.asarray([r["test_rmse"] for r in recs if r["seed"] == seed])
                    slope = float(np.polyfit(np.log(widths), np.log(test), 1)[0])
                    rows.append({"arch": arch, "knots": knots, "optimizer": optimizer, "seed": seed,
                                 "widths": widths, "test_rmse": test.tolist(), "slope": slope,
                                 "statuses": [r["status"] for r in recs if r["seed"] == seed],
                                 "seconds": time.perf_counter() - t0})
                    print(f"{arch} {knots:7s} {optimizer:14s} seed {seed}  slope {slope:6.2f}  "
                          + " ".join(f"{v:.2e}" for v in test), flush=True)
    Path(args.out).write_text(json.dumps({"widths": widths, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
