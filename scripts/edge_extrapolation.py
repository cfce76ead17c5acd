"""Where does a trained model's test error come from?  (an experiment, not a test)

Retrains one bucket of a 1D sweep exactly as `glu-scaling sweep` does (same bucket
width, same models vmapped together, so the same numbers as its results.jsonl) and,
for every model, splits the test RMSE into the test points inside the training
points' hull [min x_train, max x_train] and those outside it.  The paper's protocol
scores a uniform grid on [-1, 1] but trains on uniform random points, so the grid's
end points lie a few 1e-5 beyond the data: a model that bends there is extrapolating.

    python scripts/edge_extrapolation.py --arch gqu --widths 90,100 --knots placed \
        [--seeds 0:4] [--problem paper_1d] [--n-data 10000] [--n-test 10000] [--factor-init one|random] \
        [--out edge.json]

The widths must be one bucket of the sweep being re-examined (its records'
`bucket_width` is the largest of them) for the numbers to match that sweep bit for bit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="gqu")
    parser.add_argument("--widths", default="90,100")
    parser.add_argument("--seeds", default="0:4")
    parser.add_argument("--knots", default="uniform")
    parser.add_argument("--factor-init", default="one", help="one (default) or random: how a gqu's factor 2 starts")
    parser.add_argument("--problem", default="paper_1d")
    parser.add_argument("--optimizer", default="newton-cascade")
    parser.add_argument("--n-data", type=int, default=10_000)
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--out", default="edge_extrapolation.json")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    from glu_scaling import models, specs, sweeps
    from glu_scaling.config import load_dataset, sweep_config

    widths = specs.parse_spec(args.widths)
    seeds = specs.parse_spec(args.seeds, "seeds", minimum=0)
    config = sweep_config(archs=(args.arch,), widths=tuple(widths), seeds=tuple(seeds), problem=args.problem,
                                optimizer=args.optimizer, n_data=args.n_data, n_test=args.n_test, knots=args.knots,
                                factor_init=args.factor_init)
    dataset = load_dataset(config)
    if dataset.n_in != 1:
        parser.error(f"--problem {args.problem} has {dataset.n_in} inputs; this experiment is for 1D problems")
    pairs = [(n, s) for n in widths for s in seeds]
    params, info, _ = sweeps.train_bucket(args.arch, pairs, max(widths), dataset, config)
    x_train = np.asarray(dataset.x_train)[:, 0]
    x_test, y_test = np.asarray(dataset.x_test)[:, 0], np.asarray(dataset.y_test)[:, 0]
    inside = (x_test >= x_train.min()) & (x_test <= x_train.max())
    print(f"training points span [{x_train.min():.6f}, {x_train.max():.6f}]; "
          f"{int((~inside).sum())} of {x_test.size} test points lie outside")
    rows = []
    for b, (n, seed) in enumerate(pairs):
        one = jax.tree.map(lambda a, b=b: a[b], params)
        err = np.asarray(models.apply(args.arch, one, dataset.x_test))[:, 0] - y_test
        worst = int(np.argmax(np.abs(err)))
        row = {"n_hidden": n, "seed": seed, "status": sweeps.train.STATUSES[int(info["status"][b])],
               "train_rmse": float(info["train_rmse"][b]), "test_rmse": float(np.sqrt(np.mean(err**2))),
               "test_rmse_inside": float(np.sqrt(np.mean(err[inside] ** 2))),
               "worst_x": float(x_test[worst]), "worst_error": float(abs(err[worst]))}
        rows.append(row)
        print(f"{args.arch} n={n:3d} seed {seed}: train {row['train_rmse']:.2e}  test {row['test_rmse']:.2e}  "
              f"inside the hull {row['test_rmse_inside']:.2e}  worst |error| {row['worst_error']:.1e} "
              f"at x = {row['worst_x']:+.5f}")
    Path(args.out).write_text(json.dumps({"config": config.to_json(), "x_train_span": [float(x_train.min()),
                                          float(x_train.max())], "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
