"""The reference's all-parameter Newton steps (undamped, strong-Wolfe) against the engine's.

paper.md section 5 describes the reference's optimiser: Jacobi-preconditioned Newton on
all parameters with singular rows removed, *no damping*, a strong-Wolfe line search
and a fallback to -gradient when the Newton direction is not a descent direction.  The
engine instead damps an indefinite Hessian (Cholesky ladder, `linsolve.damped_cholesky_solve`)
and backtracks from a unit step.  Does that difference explain why Table 1's 1D cascade
slopes are shallower than the paper's (figures/README.md)?

For every width and seed this script starts from one point (the model after the
cascade's spline and gate stages, `newton-cascade` with 0 all-parameter steps; the
engine's own run reaches it too, up to rounding: its {G, g} step runs in the masked
all-parameter loop), then takes `--steps` all-parameter steps in two ways:

  engine      `newton-cascade` as every sweep runs it (damped Cholesky, backtracking)
  reference   the undamped direction: the Jacobi-scaled Hessian solved by LU
              (`jnp.linalg.solve`; zero rows removed as the engine removes them), -g
              if that is not finite or not a descent direction, and optax's zoom line
              search (strong Wolfe, c1 = 1e-4, c2 = 0.9, first trial step 1, at most 25
              trials, as PyTorch's strong_wolfe); a step that does not lower the loss is
              not taken

and prints the test RMSE (on the dense grid for paper_1d), per width the median over
seeds, and the slope of log RMSE against log n over `--fit` (mean of the per-seed
slopes with a 95 % t-interval, as Table 1); with --rmse train, the training RMSE.  All
models of one run are padded to the widest width and vmapped, so each method compiles
once.  Other problems (`--problem friedman2 --n-data 2000 --n-test 2000`) start from
the spline init of the sweeps for n_in > 1 (gate directions drawn, knots spread over
the training data's projection).

`--init` picks the models' starting point (in 1D `diagonal` is `spline`):

  spline     the package's spline init (the default)
  random     every parameter N(0, 1) (`--random-init` of the sweeps; a GQU's factor 2 from 1)
  torch      PyTorch's nn.Linear default, which the reference's code keeps when it does
             not apply its spline init: G, g, U, u ~ U(-1/sqrt(n_in), 1/sqrt(n_in)),
             D, d ~ U(-1/sqrt(n), 1/sqrt(n))
  diagonal   the reference's spline init applied as its code applies it for n_in > 1:
             every gate row is +-(1, ..., 1) (alternating) with knots
             linspace(-1.001, 1.001, n) on the sum of the coordinates

    python scripts/reference_newton.py [--arch glu] [--widths 4,6,8,10,13,16,20,25,32,40,50]
        [--seeds 0:4] [--steps 100] [--problem paper_1d] [--init spline] [--out records.jsonl]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

import glu_scaling as gs  # noqa: E402
from glu_scaling import linsolve, newton, problems, schedules, slopes, specs, train  # noqa: E402
from glu_scaling.inits import facing_signs, knots_1d  # noqa: E402
from glu_scaling.models import n_factors, pack_units, zero_masked  # noqa: E402

INITS = ("spline", "random", "torch", "diagonal")


def initial_model(key, init: str, arch: str, n_in: int, n_hidden: int, n_out: int, width: int, x_train):
    """One model padded to `width`, started as `init` says (see the module docstring)."""
    params = gs.init(key, arch, n_in, n_hidden, n_out, width=width, dtype=jnp.float64,
                     spline_init=init in ("spline", "diagonal"), x_data=None if n_in == 1 else x_train)
    if init == "torch":
        k_in, k_out = jax.random.split(jax.random.fold_in(key, 1))
        leaves = {name: getattr(params, name) for name in ("G", "g", "U", "u")}
        keys = dict(zip(leaves, jax.random.split(k_in, len(leaves))))
        bound_in, bound_out = 1 / np.sqrt(n_in), 1 / np.sqrt(n_hidden)
        drawn = {name: jax.random.uniform(keys[name], a.shape, a.dtype, -bound_in, bound_in)
                 for name, a in leaves.items()}
        params = params.replace(
            **drawn,
            D=jax.random.uniform(k_out, params.D.shape, params.D.dtype, -bound_out, bound_out),
            d=jax.random.uniform(jax.random.fold_in(k_out, 1), params.d.shape, params.d.dtype, -bound_out, bound_out))
    elif init == "diagonal" and n_in > 1:
        sign = facing_signs(width, "alternate", jnp.float64)
        params = params.replace(G=sign[:, None] * jnp.ones((width, n_in)),
                                g=-sign * knots_1d(n_hidden, dtype=jnp.float64, width=width))
    return zero_masked(params)


def reference_step(params, data: train.TrainData, sel: newton.Selection, chunk: int):
    """One undamped, strong-Wolfe Newton step on the selection.  Returns (params, alpha, fallback)."""
    H, g = newton.hessian_and_gradient(params, data.x, data.t, data.weight, sel, chunk)
    Hs, scale = linsolve.jacobi_scaled(H)
    p = scale * jnp.linalg.solve(Hs, -(scale * g))
    fallback = ~(jnp.all(jnp.isfinite(p)) & (jnp.dot(g, p) < 0))
    p = jnp.where(fallback, -g, p)
    theta0 = newton._flatten(pack_units(params), params.d, sel)

    def value_fn(theta):
        return newton.loss_fn(newton.params_from_theta(params, theta, sel), data.x, data.t, data.weight)

    loss0, grad0 = jax.value_and_grad(value_fn)(theta0)
    search = optax.scale_by_zoom_linesearch(max_linesearch_steps=25, initial_guess_strategy="one")
    update, state = search.update(p, search.init(theta0), theta0, value=loss0, grad=grad0, value_fn=value_fn)
    theta = theta0 + update
    better = jnp.isfinite(value_fn(theta)) & (value_fn(theta) < loss0)
    alpha = jnp.where(better, optax.tree_utils.tree_get(state, "learning_rate"), 0.0)
    return newton.params_from_theta(params, jnp.where(better, theta, theta0), sel), alpha, fallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="glu", choices=("mlp", "glu", "gqu"))
    parser.add_argument("--widths", default="4,6,8,10,13,16,20,25,32,40,50")
    parser.add_argument("--seeds", default="0:4")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--fit", default="4,50", help="lo,hi: the widths the slope is fitted over")
    parser.add_argument("--problem", default="paper_1d")
    parser.add_argument("--n-data", type=int, default=10000)
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument("--rmse", default="test", choices=("test", "train"), help="which RMSE to print and fit")
    parser.add_argument("--init", default="spline", choices=INITS, help="the models' starting point (see above)")
    parser.add_argument("--out", default=None, help="write one JSON record per model and method here")
    args = parser.parse_args()
    widths, seeds = specs.parse_spec(args.widths), specs.parse_spec(args.seeds, "seeds", minimum=0)
    fit_range = tuple(float(v) for v in args.fit.split(","))
    ds = problems.make_dataset(args.problem, n_train=args.n_data, n_test=args.n_test, seed=0, dtype="float64")
    n_in, n_out = ds.x_train.shape[1], ds.y_train.shape[1]
    data, chunk = train.prepare_data(ds.x_train, ds.y_train, ds.x_test, ds.y_test, 2048)
    width = max(widths)
    models = [(n, s) for n in widths for s in seeds]
    batch = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[
        initial_model(jax.random.PRNGKey(s), args.init, args.arch, n_in, n, n_out, width, ds.x_train)
        for n, s in models])
    k = n_factors(args.arch)
    sel = train.selection(models.all_groups(k), k, n_in, n_out)
    if args.rmse == "test":
        rmse = jax.vmap(lambda p: train.rmse(p, data.x_test, data.t_test))
    else:
        rmse = jax.vmap(lambda p: train.rmse(p, data.x, data.t, data.weight))

    def run(fn, label, inputs=batch):
        t0 = time.perf_counter()
        out = jax.block_until_ready(jax.jit(jax.vmap(fn))(inputs))
        print(f"{label}: {time.perf_counter() - t0:.1f} s for {len(models)} models", flush=True)
        return out

    start = run(lambda p: train.train_one(p, data, schedules.TrainConfig("newton-cascade", steps=0, chunk=chunk))[0],
                "spline and gate stages")
    engine = run(lambda p: train.train_one(p, data, schedules.TrainConfig("newton-cascade", steps=args.steps,
                                                                      chunk=chunk))[0], "engine")

    def reference(p):
        def body(_, carry):
            p, n_fallback, n_zero = carry
            p, alpha, fallback = reference_step(p, data, sel, chunk)
            return p, n_fallback + fallback, n_zero + (alpha == 0)

        return jax.lax.fori_loop(0, args.steps, body, (p, 0, 0))

    reference_params, n_fallback, n_zero = run(reference, "reference", start)  # from the stages' models
    errors = {"start": np.asarray(rmse(start)), "engine": np.asarray(rmse(engine)),
              "reference": np.asarray(rmse(reference_params))}
    n_of, seed_of = np.array([n for n, _ in models]), np.array([s for _, s in models])
    print(f"\n{args.arch.upper()} on {args.problem}: {args.rmse} RMSE, median over seeds {args.seeds} "
          f"({args.steps} all-parameter steps)")
    print(f"{'n':>4} " + " ".join(f"{m:>11}" for m in errors) + "  fallbacks  failed searches (reference)")
    for n in widths:
        at = n_of == n
        print(f"{n:4d} " + " ".join(f"{np.median(e[at]):11.3e}" for e in errors.values())
              + f"  {int(np.sum(n_fallback[at])):9d}  {int(np.sum(n_zero[at])):6d}")
    for method, e in errors.items():
        fit = slopes.fit_slope(n_of, e, groups=seed_of, fit_range=fit_range)
        print(f"slope over n = {args.fit} ({method}): {fit.slope:.2f} [{fit.ci_low:.2f}, {fit.ci_high:.2f}]")
    if args.out:
        with open(args.out, "w") as f:
            for method, e in errors.items():
                for (n, s), value in zip(models, e):
                    f.write(json.dumps({"arch": args.arch, "problem": args.problem, "init": args.init, "method": method,
                                        "n_hidden": n, "seed": s, "steps": args.steps,
                                        f"{args.rmse}_rmse": float(value)}) + "\n")


if __name__ == "__main__":
    main()
