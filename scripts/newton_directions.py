"""Why the 1D GLU cascade converges slowly: other step directions from the same start.

Trains one GLU (n = 50, seed 0) on paper_1d's 10k points through the cascade's spline
and gate steps, then takes 100 all-parameter steps with each direction below and the
engine's backtracking line search, printing test RMSE and the Hessian's spectrum
(figures/README.md, "Why it is slow"):

  cholesky      the engine's damped Cholesky (ladder started at 0 every step)
  saddle-free   eigenvalues of the Jacobi-scaled Hessian replaced by their absolute values
  gauss-newton  J^T J only (no second-order term), damped Cholesky
  no-symmetry   G and D frozen (each unit's two scaling symmetries removed), damped Cholesky

    python scripts/newton_directions.py [--width 50] [--steps 100]
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

import glu_scaling as gs  # noqa: E402
from glu_scaling import linsolve, models, newton, problems, schedules, train  # noqa: E402
from glu_scaling.models import pack_units  # noqa: E402

METHODS = ("cholesky", "saddle-free", "gauss-newton", "no-symmetry")


def make_step(method: str, data, chunk: int, sel: newton.Selection, unit_size: int):
    def direction(params):
        H, g = newton.hessian_and_gradient(params, data.x, data.t, data.weight, sel, chunk)
        if method == "gauss-newton":
            H, _ = newton.hessian_and_gradient(params, data.x, data.t, data.weight,
                                               dataclasses.replace(sel, second_order=False), chunk)
        Hs, scale = linsolve.jacobi_scaled(H)  # as the engine's newton_direction
        gs_ = scale * g
        if method == "no-symmetry":  # G (column 0) and D (last column) of every unit stay put
            column = jnp.arange(Hs.shape[0]) % unit_size
            unit_row = jnp.arange(Hs.shape[0]) < params.width * unit_size
            free = ~unit_row | ((column != 0) & (column != unit_size - 1))
            Hs = jnp.where(free[:, None] & free[None, :], Hs, jnp.eye(Hs.shape[0]))
            gs_ = jnp.where(free, gs_, 0.0)
        eigenvalues = jnp.linalg.eigvalsh(Hs)  # of the system solved
        if method == "saddle-free":
            mu, V = jnp.linalg.eigh(Hs)
            z = -(V @ ((V.T @ gs_) / jnp.maximum(jnp.abs(mu), 1e-12 * jnp.max(jnp.abs(mu)))))
        else:
            z, _ = linsolve.damped_cholesky_solve(Hs, -gs_, 0)
        p = scale * z
        p = jnp.where(jnp.dot(g, p) < 0, p, -g)  # the engine's steepest-descent fallback
        return p, g, eigenvalues

    @jax.jit
    def step(params):
        p, g, eigenvalues = direction(params)
        theta0 = newton._flatten(pack_units(params), params.d, sel)
        loss0 = newton.loss_fn(params, data.x, data.t, data.weight)

        def loss_at(alpha):
            return newton.loss_fn(newton.params_from_theta(params, theta0 + alpha * p, sel), data.x, data.t,
                                  data.weight)

        alpha, _ = newton.backtracking(loss_at, loss0, jnp.dot(g, p))
        return newton.params_from_theta(params, theta0 + alpha * p, sel), alpha, eigenvalues

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=50)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    ds = problems.make_dataset("paper_1d", n_train=10000, n_test=10000, seed=0, dtype="float64")
    data, chunk = train.prepare_data(ds.x_train, ds.y_train, ds.x_test, ds.y_test, 2048)
    params = gs.init(jax.random.PRNGKey(0), "glu", 1, args.width, 1, dtype=jnp.float64)
    config = schedules.TrainConfig("newton-cascade", steps=0, chunk=chunk, knot_moves=0)  # spline, gate steps only
    start, _ = jax.jit(lambda p: train.train_one(p, data, config))(params)
    sel = train.selection(models.all_groups(1), 1, 1, 1)
    rmse = jax.jit(lambda p: train.rmse(p, data.x_test, data.t_test))
    print(f"GLU n = {args.width}: test RMSE {float(rmse(start)):.3e} after the spline and gate steps")
    for method in METHODS:
        step = make_step(method, data, chunk, sel, pack_units(start).shape[1])
        p, negatives, lowest, alphas = start, [], [], []
        for _ in range(args.steps):
            p, alpha, eigenvalues = step(p)
            negatives.append(int(jnp.sum(eigenvalues < -1e-10)))  # below round-off (J^T J's are -1e-14)
            lowest.append(float(jnp.min(eigenvalues)))
            alphas.append(float(alpha))
        print(f"{method:13s} test RMSE {float(rmse(p)):.3e} after {args.steps} steps; negative eigenvalues "
              f"{min(negatives)}-{max(negatives)} (lowest {min(lowest):.2g}); median step length "
              f"{sorted(alphas)[len(alphas) // 2]:.2g}")


if __name__ == "__main__":
    main()
