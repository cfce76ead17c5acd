"""The linear algebra of one Newton step: Jacobi scaling, the damped Cholesky ladder
(and how it factors, `Ladder`), and the least-squares direction from a QR factor.

Everything here acts on one model's (P, P) system; `newton` builds the systems and
`train` vmaps the steps over models.  A vmapped while loop runs until its slowest lane
is done, which is why the ladder can factor several rungs per round (`Ladder`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from glu_scaling.errors import UsageError, check_positive_int

# a triangular factor whose smallest pivot is below this many eps times its largest (after
# column scaling) is treated as rank-deficient: the step is then the minimum-norm solution
RCOND_EPS = 1000.0


def least_squares_direction(R_aug: jax.Array, n_points: jax.Array, batch_axis: str | None = None):
    """The least-squares step p = argmin |J p + r| from `least_squares_r`'s factor.

    Columns of (numerically) zero norm -- masked units, dead gates -- are removed (their
    p is exactly 0) and the others scaled to unit norm (Jacobi, as `newton_direction`);
    the scaled system is refactored with identity rows for the removed columns and
    solved by back substitution.  If that factor T is rank-deficient (smallest pivot
    below RCOND_EPS eps of the largest) or the result is not finite, the step is the
    minimum-norm least-squares solution in the scaled variables instead: T's SVD with
    the singular values below RCOND_EPS eps of the largest dropped.

    The SVD costs O(P^3), several times the back substitution, and under `jax.vmap` a
    data-dependent branch becomes a select that evaluates both sides on every lane.
    `batch_axis`, the name of the vmap axis this runs under (if any), lets the lanes
    agree (a psum) and skip the SVD altogether when none of them is rank-deficient;
    the result is the same either way.
    Returns (p, g, used_svd), g = -R^T z / n_points the loss's gradient.
    """
    P = R_aug.shape[0] - 1
    R, z = R_aug[:P, :P], R_aug[:P, P]
    g = -(R.T @ z) / n_points
    norms = jnp.linalg.norm(R, axis=0)  # = |J's columns|
    eps = jnp.finfo(R.dtype).eps
    active = norms > 100 * eps * jnp.max(norms)
    scale = jnp.where(active, 1.0 / jnp.where(active, norms, 1.0), 0.0)
    stacked = jnp.concatenate([jnp.concatenate([R * scale[None, :], z[:, None]], axis=1),
                               jnp.concatenate([jnp.diag(jnp.where(active, 0.0, 1.0)), jnp.zeros((P, 1), R.dtype)],
                                               axis=1)])
    T = jnp.linalg.qr(stacked, mode="r")
    Ts, rhs = T[:P, :P], T[:P, P]
    pivots = jnp.abs(jnp.diagonal(Ts))
    y = jax.scipy.linalg.solve_triangular(Ts, rhs, lower=False)
    solved = jnp.all(jnp.isfinite(y)) & (jnp.min(pivots) > RCOND_EPS * eps * jnp.max(pivots))
    # The SVD works on the QR's output, so the two batched LAPACK calls never run side by side:
    # on a CPU each splits its batch over XLA's thread pool and waits for it, and two at once
    # could take every thread and wait on each other forever (a hang seen on a small CPU).
    # When it runs under vmap every lane runs it; a solved lane decomposes the identity.
    deficient = ~solved
    if batch_axis is not None:  # one flag for the whole batch: a real branch, not a select
        deficient = jax.lax.psum(deficient.astype(jnp.int32), batch_axis) > 0

    def min_norm(Ts, rhs):
        U, sv, Vt = jnp.linalg.svd(jnp.where(solved, jnp.eye(P, dtype=R.dtype), Ts))
        kept = sv > RCOND_EPS * eps * sv[0]
        return Vt.T @ jnp.where(kept, (U.T @ rhs) / jnp.where(kept, sv, 1.0), 0.0)

    y_min_norm = jax.lax.cond(deficient, min_norm, lambda Ts, rhs: y, Ts, rhs)
    return scale * jnp.where(solved, y, y_min_norm), g, ~solved


def damping_of(index: jax.Array, dtype) -> jax.Array:
    """The damping ladder lambda_i: 0 for i = 0, else 10^(i - 15) (1e-14, 1e-13, ...)."""
    return jnp.where(index == 0, 0.0, 10.0 ** (index - 15.0)).astype(dtype)


@dataclasses.dataclass(frozen=True)
class Ladder:
    """How the damping ladder factors: a Newton solver option (static, hashable), not
    part of a model; the training functions and `sweeps.run_sweep` take one, as the
    accelerator scripts (scripts/bench_gpu*.py) pass it.

    rungs_per_round: K consecutive rungs factored in one batched call per round
      (`damped_cholesky_solve`): the same rung and, on a CPU, the same bits for any K.
    cholesky_block: 0 for `jnp.linalg.cholesky`; b > 0 for `blocked_cholesky` with b
      columns a block, equal up to rounding (for accelerators whose batched
      factorisation of large matrices may be slow).
    """

    rungs_per_round: int = 1
    cholesky_block: int = 0

    def __post_init__(self):
        check_positive_int("rungs_per_round", self.rungs_per_round)
        if isinstance(self.cholesky_block, bool) or not isinstance(self.cholesky_block, int | np.integer) \
                or self.cholesky_block < 0:
            raise UsageError(f"cholesky_block must be a non-negative integer (0: unblocked), "
                             f"got {self.cholesky_block!r}")


DEFAULT_LADDER = Ladder()


def blocked_cholesky(a: jax.Array, block: int) -> jax.Array:
    """Lower Cholesky factor of a symmetric a (..., P, P), `block` columns at a time:
    the diagonal block by `jnp.linalg.cholesky`, the panel below it by a triangular
    solve (A21 L11^-T), the trailing matrix by one matrix product.  All flops but the
    small diagonal blocks' are batched matrix products and triangular solves, which
    accelerators run near their matmul rate.  Equal to `jnp.linalg.cholesky(a)` up to
    rounding; where a is not positive definite the failed block and every later one
    are NaN, so the diagonal shows the failure as it does for `jnp.linalg.cholesky`
    (`_factored`).  block <= 0 or >= P: `jnp.linalg.cholesky` itself."""
    n = a.shape[-1]
    if block <= 0 or block >= n:
        return jnp.linalg.cholesky(a)
    a = (a + jnp.swapaxes(a, -1, -2)) / 2  # as jnp.linalg.cholesky's symmetrize_input
    columns = []
    for j0 in range(0, n, block):
        j1 = min(j0 + block, n)
        l_jj = jnp.linalg.cholesky(a[..., j0:j1, j0:j1], symmetrize_input=False)
        panel = jax.lax.linalg.triangular_solve(l_jj, a[..., j1:, j0:j1], left_side=False, lower=True,
                                                transpose_a=True)  # X L11^T = A21
        if j1 < n:
            a = a.at[..., j1:, j1:].add(-panel @ jnp.swapaxes(panel, -1, -2))
        above = jnp.zeros(a.shape[:-2] + (j0, j1 - j0), a.dtype)
        columns.append(jnp.concatenate([above, l_jj, panel], axis=-2))
    return jnp.concatenate(columns, axis=-1)


def _shifted_cholesky(H: jax.Array, rungs: jax.Array, usable: jax.Array, block: int = 0) -> jax.Array:
    """Cholesky factors of H + lambda_rung I ((..., P, P) for rungs (...,)).  Where not
    `usable` (under vmap every lane runs the ladder's body, and lanes already factored
    throw its result away) a hugely negative diagonal stops the factorisation at once.
    block: `Ladder.cholesky_block`."""
    shift = jnp.where(usable, damping_of(rungs, H.dtype), -jnp.finfo(H.dtype).max)
    return blocked_cholesky(H + shift[..., None, None] * jnp.eye(H.shape[-1], dtype=H.dtype), block)


def _factored(L: jax.Array) -> jax.Array:
    """Whether each factor (..., P, P) succeeded: a failed factorisation is all NaN, and a
    non-finite L[i, j] (j < i) makes L[i, i] non-finite: the diagonal decides, at 1/P of
    the cost of checking all of L."""
    return jnp.all(jnp.isfinite(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)


def damped_cholesky_solve(H: jax.Array, rhs: jax.Array, start: jax.Array | int = 0, max_index: int = 20,
                          ladder: Ladder = DEFAULT_LADDER):
    """Solve (H + lambda_i I) z = rhs for the first i >= start on the damping ladder
    whose Cholesky factor is finite.  H is assumed Jacobi-scaled (unit diagonal).

    Returns (z, i); z is NaN if even lambda_max_index failed.  Carrying i from one
    Newton step to the next (minus a notch or two) avoids refactoring from zero
    every time the Hessian is indefinite.

    ladder.rungs_per_round: K > 1 factors K consecutive rungs in one batched call per round
    (start .. start + K - 1, then the next K, ...) and keeps the lowest that succeeded:
    for a start in 0 .. max_index, the same rung as K = 1 (and on a CPU the same bits;
    a GPU's batched factorisation may round otherwise than its single one) in
    ceil((i - start + 1) / K) rounds instead of i - start + 1, for up to K - 1 more
    factorisations.  Under vmap every lane runs as many rounds as the slowest one: in
    1D models a lane needs a few factorisations a step on average but several times
    that at worst (scripts/ladder_rounds.py), so a batch of hundreds of models pays the
    tail on every step.  Training uses K = 1 unless a script passes another `Ladder`.

    ladder.cholesky_block: b > 0 factors by `blocked_cholesky` with b columns a block
    (another experiment for accelerators); 0, by `jnp.linalg.cholesky`.
    """
    if ladder.rungs_per_round > 1:
        return _damped_cholesky_rounds(H, rhs, start, max_index, ladder.rungs_per_round, ladder.cholesky_block)

    def cond(state):
        i, L = state
        return (i < max_index) & ~_factored(L)

    def body(state):
        i, L = state
        return i + 1, _shifted_cholesky(H, i + 1, ~_factored(L), ladder.cholesky_block)

    start = jnp.asarray(start)
    i, L = jax.lax.while_loop(cond, body, (start, _shifted_cholesky(H, start, True, ladder.cholesky_block)))
    return jax.scipy.linalg.cho_solve((L, True), rhs), i


def _damped_cholesky_rounds(H: jax.Array, rhs: jax.Array, start, max_index: int, k: int, block: int):
    """`damped_cholesky_solve` with k rungs factored per round (k > 1)."""
    start = jnp.asarray(start)
    offsets = jnp.arange(k, dtype=start.dtype)  # (the rung keeps the start's integer type, as with k = 1)

    def factor_round(base, skip=False):
        rungs = base + offsets
        valid = (rungs <= max_index) & ~skip  # rungs past the ladder's top (or done lanes): fail at once
        factors = _shifted_cholesky(H, rungs, valid, block)
        ok = valid & _factored(factors)
        lowest = jnp.argmax(ok)  # the first that succeeded (0, a failed one, if none did)
        return ok.any(), jnp.minimum(rungs[lowest], max_index), factors[lowest]

    def cond(state):
        base, found, _, _ = state
        return ~found & (base <= max_index)

    def body(state):
        base, found, i, L = state
        found_now, i_now, L_now = factor_round(base, skip=found)
        return base + k, found | found_now, jnp.where(found_now, i_now, i), jnp.where(found_now, L_now, L)

    found, i, L = factor_round(start)
    _, found, i, L = jax.lax.while_loop(cond, body, (start + k, found, i, L))
    i = jnp.where(found, i, max_index)  # as damped_cholesky_solve: the top rung, z all NaN
    return jax.scipy.linalg.cho_solve((L, True), rhs), i


def jacobi_scaled(H: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(Hs, scale): H (P, P) scaled to unit |diagonal|, Hs = S H S + I on removed rows, with
    S = diag(scale).  |diag|: a row of negative curvature stays in the solve (the
    damping handles it); only (numerically) zero rows -- masked units, dead gates,
    frozen entries -- are removed (scale 0, an identity row in Hs)."""
    diag = jnp.abs(jnp.diagonal(H))
    eps = jnp.finfo(H.dtype).eps
    active = diag > 100 * eps * jnp.max(diag)
    scale = jnp.where(active, 1.0 / jnp.sqrt(jnp.where(active, diag, 1.0)), 0.0)
    return scale[:, None] * H * scale[None, :] + jnp.diag(jnp.where(active, 0.0, 1.0)), scale


def newton_direction(H: jax.Array, g: jax.Array, damping_start: jax.Array | int = 0,
                     free: jax.Array | None = None, ladder: Ladder = DEFAULT_LADDER):
    """Preconditioned, masked, damped Newton direction.

    H (P, P), g (P,); free (P,) bool (None: all True) selects the entries that may
    move, as data rather than shapes: the others are removed like zero rows, so the
    result equals the Newton direction of the sub-problem on the free entries.
    ladder: how the damping ladder factors (`Ladder`).
    Returns (p, damping_index, used_fallback); p (P,) is zero on removed rows.
    """
    if free is not None:  # frozen rows and columns become zero rows: nothing of them (not even inf) leaks in
        H = jnp.where(free[:, None] & free[None, :], H, 0.0)
        g = jnp.where(free, g, 0.0)
    Hs, scale = jacobi_scaled(H)
    gs = scale * g
    z, index = damped_cholesky_solve(Hs, -gs, damping_start, ladder=ladder)
    p = scale * z
    fallback = ~(jnp.all(jnp.isfinite(p)) & (jnp.dot(g, p) < 0))
    p = jnp.where(fallback, -(scale**2) * g, p)
    return p, index, fallback
