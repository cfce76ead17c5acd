"""Full-batch Newton's method for one shallow gated model, with a structured Hessian.

The loss is L = (1 / 2N) sum_n sum_o r_no^2 with r = y(x) - t.  Its exact Hessian is

    N H = J^T J + S,     S = sum_n sum_o r_no  d^2 y_no / d theta^2,

and because y = d + sum_i unit_i(theta_i; x) with unit i depending on its own
parameters only, S is block-diagonal: one (p, p) block per hidden unit, nothing
for d.  So H is built from one dense product J^T J (accumulated over chunks of
data points, to bound memory) plus W small per-unit Hessians, never from nested
autodiff of the whole loss.

A Newton step on a parameter selection (a subset of the packed unit columns,
`models.group_columns`, with or without d):
  1. rows/columns with a (numerically) zero diagonal -- masked units, dead gates --
     are removed: they become identity rows with a zero right-hand side; so are the
     entries a run-time mask `free` freezes (one compiled step serves every stage);
  2. Jacobi preconditioning: H~ = s H s with s = diag(H)^(-1/2);
  3. Cholesky of H~ + lambda I, lambda = 0 first, then growing until the
     factorisation is finite (the damping fallback for indefinite H);
  4. if the direction does not descend, the preconditioned gradient -s^2 g;
  5. backtracking Armijo line search from alpha = 1 that only accepts decrease.

When the output is linear in the selection ({D, d}, or one factor group with the rest
fixed: the stages of `newton-splines`) the step is a linear least-squares solve, and
forming J^T J squares J's condition number: for a GQU at n = 100 on 10k points the
{U2, u2} stage has cond(J) ~ 1e12, beyond what float64 normal equations resolve.  Such
steps therefore factor J itself, by Householder QR accumulated over the data chunks
(`least_squares_r`), and solve R p = Q^T (-r) (`least_squares_direction`); a
numerically rank-deficient R (two units with the same knot, an even width under the
spline init) gets the minimum-norm solution from the SVD of the small scaled factor:
unique and continuous in the data, so a model's step does not depend on the rounding
of the batched LAPACK call that made R (a damped Cholesky's null-space component,
rounding over lambda, did: a cascade's later steps then took different paths).
Everything here is for a single model; `train` vmaps it over models.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from glu_scaling.models import Params, activation_fn, affine, hidden, pack_units, unpack_units


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which parameters a Newton stage moves (static).

    columns: indices into a packed unit row (see `models.group_columns`).
    with_d: whether the output bias d moves too.
    second_order: whether the per-unit term S can be non-zero (False when the
      model output is linear in the selected parameters, e.g. {D, d} or {U, u}).
    """

    columns: tuple[int, ...]
    with_d: bool
    second_order: bool = True


class StepInfo(NamedTuple):
    loss: jax.Array  # loss after the step (scalar)
    alpha: jax.Array  # accepted step length (0 when the line search failed)
    decrement: jax.Array  # Newton decrement -g.p (predicted decrease is half of it)
    damping_index: jax.Array  # i of the lambda_i used in the Cholesky factorisation
    descent_fallback: jax.Array  # True when the steepest-descent fallback was used


def loss_fn(params: Params, x: jax.Array, t: jax.Array, weight: jax.Array) -> jax.Array:
    """L = sum_n w_n |y(x_n) - t_n|^2 / (2 sum_n w_n); x (N, dx), t (N, dy), weight (N,)."""
    r = apply_params(params, x) - t
    return 0.5 * jnp.sum(weight[:, None] * r**2) / jnp.sum(weight)


def apply_params(params: Params, x: jax.Array) -> jax.Array:
    """`models.apply` without the architecture-name check (k is read off params)."""
    return params.d + hidden(params, x) @ params.D


def _first_column(sel: Selection, offset: jax.Array) -> jax.Array:
    """Where the selection's columns start when shifted by a run-time `offset`; they must
    be contiguous (one parameter group)."""
    if list(sel.columns) != list(range(sel.columns[0], sel.columns[0] + len(sel.columns))):
        raise ValueError(f"a run-time column offset needs contiguous columns, not {sel.columns}")
    return sel.columns[0] + offset


def _selected_columns(a: jax.Array, sel: Selection, offset: jax.Array | None) -> jax.Array:
    """a[..., sel.columns (+ offset)]: the selected columns of the last axis."""
    if offset is None:
        return a[..., jnp.asarray(sel.columns)]
    return jax.lax.dynamic_slice_in_dim(a, _first_column(sel, offset), len(sel.columns), axis=a.ndim - 1)


def _flatten(rows: jax.Array, d: jax.Array, sel: Selection, offset: jax.Array | None = None) -> jax.Array:
    parts = [_selected_columns(rows, sel, offset).reshape(-1)]
    if sel.with_d:
        parts.append(d)
    return jnp.concatenate(parts)


def _unflatten(theta: jax.Array, rows: jax.Array, d: jax.Array, sel: Selection, offset: jax.Array | None = None):
    n_unit = rows.shape[0] * len(sel.columns)
    block = theta[:n_unit].reshape(rows.shape[0], len(sel.columns))
    if offset is None:
        rows = rows.at[:, jnp.asarray(sel.columns)].set(block)
    else:
        rows = jax.lax.dynamic_update_slice_in_dim(rows, block, _first_column(sel, offset), axis=1)
    if sel.with_d:
        d = theta[n_unit:]
    return rows, d


def params_from_theta(template: Params, theta: jax.Array, sel: Selection, offset: jax.Array | None = None) -> Params:
    """Params with the selected entries (columns shifted by a run-time `offset`, if
    given; see `newton_step`) replaced by the flat vector theta."""
    rows, d = _unflatten(theta, pack_units(template), template.d, sel, offset)
    return unpack_units(template, rows, d)


# activations whose second derivative is zero wherever it exists: the gate-gate block of S vanishes
PIECEWISE_LINEAR = frozenset({"relu"})


def _activation_derivatives(name: str, z: jax.Array):
    """act(z), act'(z), act''(z) elementwise (autodiff of the scalar activation)."""
    act = activation_fn(name)
    d1 = jax.grad(act)
    d2 = jax.grad(d1)
    flat = z.reshape(-1)
    a1 = jax.vmap(d1)(flat).reshape(z.shape)
    a2 = jax.vmap(d2)(flat).reshape(z.shape)
    return act(z), a1, a2


def _prod(factors: list[jax.Array], skip: tuple[int, ...], like: jax.Array) -> jax.Array:
    out = jnp.ones_like(like)
    for j, f in enumerate(factors):
        if j not in skip:
            out = out * f
    return out


def _gram(Jt: jax.Array) -> jax.Array:
    """J^T J from J's transpose Jt (P, M): the rows of a row-major (P, M) array contracted
    with themselves, the layout XLA:CPU's matrix product runs fastest (see
    `_weighted_jacobian`)."""
    return jax.lax.dot_general(Jt, Jt, (((1,), (1,)), ((), ())))


def _transposed_product(J: jax.Array, v: jax.Array) -> jax.Array:
    """J^T v for J (M, P) and v (M,) or (M, Q), contracting the rows: written as `J.T @ v`,
    XLA on a CPU may materialise the transpose for each vmapped model first."""
    return jax.lax.dot_general(J, v, (((0,), (0,)), ((), ())))


def unit_derivatives(params: Params, x: jax.Array, r: jax.Array | None):
    """Per-unit first and second derivatives of the model output, in closed form.

    With z = G_i.x + g_i, l_j = U_ji.x + u_ji and x~ = (x, 1), unit i adds
    D_i a(z) prod_j l_j.  Its packed row is [w_0, w_1, ..., w_k, D_i] with
    w_0 = (G_i, g_i), w_j = (U_ji, u_ji).

    Args:
      params: one model; x (C, dx); r (C, dy) residuals (or None to skip S).
    Returns:
      Ju (C, W, dy, p): d y_o(x_n) / d row_i (zero for masked units);
      S (W, p, p): sum_n sum_o r_no d^2 y_o(x_n) / d row_i^2 (None if r is None).
    """
    k, dy = params.n_factors, params.n_out
    xt = jnp.concatenate([x, jnp.ones_like(x[:, :1])], axis=1)  # (C, dx+1)
    a, a1, a2 = _activation_derivatives(params.activation, affine(x, params.G, params.g))
    lin = [affine(x, params.U[j], params.u[j]) for j in range(k)]  # k x (C, W)
    mask = params.mask
    # coefficient of x~ in d h / d w_b: b = 0 gate, b = 1..k factors
    coef = [a1 * _prod(lin, (), a)] + [a * _prod(lin, (j,), a) for j in range(k)]
    h = a * _prod(lin, (), a)
    D = params.D * mask[:, None]  # (W, dy)
    blocks = [D[None, :, :, None] * c[:, :, None, None] * xt[:, None, None, :] for c in coef]
    eye = jnp.eye(dy, dtype=x.dtype)
    blocks.append((h * mask)[:, :, None, None] * eye[None, None])
    Ju = jnp.concatenate(blocks, axis=-1)
    if r is None:
        return Ju, None

    rho = r @ D.T  # (C, W): sum_o r_no D_io
    nb = xt.shape[1]
    C, W = x.shape[0], params.mask.shape[0]
    p = (k + 1) * nb + dy
    S = jnp.zeros((W, p, p), x.dtype)

    def second(b, c):  # coefficient of x~ x~^T in d^2 h / d w_b d w_c
        if b == 0 and c == 0:
            return None if params.activation in PIECEWISE_LINEAR else a2 * _prod(lin, (), a)
        if b == 0 or c == 0:
            j = max(b, c) - 1
            return a1 * _prod(lin, (j,), a)
        if b == c:
            return None
        return a * _prod(lin, (b - 1, c - 1), a)

    # Every block is a sum over points of a (C, W) weight times products of x~ (and r):
    # stacked side by side, all of them come from one matrix product each, which XLA
    # runs far faster than one three-operand einsum per block.
    pairs = [(b, c, e) for b in range(k + 1) for c in range(b, k + 1) if (e := second(b, c)) is not None]
    xx = (xt[:, :, None] * xt[:, None, :]).reshape(C, nb * nb)  # (C, nb^2)
    if pairs:  # none for a piecewise-linear MLP
        weights = jnp.concatenate([rho * e for _, _, e in pairs], axis=1)  # (C, pairs W)
        blocks = _transposed_product(weights, xx).reshape(len(pairs), W, nb, nb)
    else:
        blocks = []
    for (b, c, _), block in zip(pairs, blocks):
        S = S.at[:, b * nb:(b + 1) * nb, c * nb:(c + 1) * nb].set(block)
        if b != c:
            S = S.at[:, c * nb:(c + 1) * nb, b * nb:(b + 1) * nb].set(jnp.swapaxes(block, 1, 2))
    d0 = (k + 1) * nb
    rx = (r[:, :, None] * xt[:, None, :]).reshape(C, dy * nb)  # (C, dy nb)
    blocks = _transposed_product(jnp.concatenate(coef, axis=1), rx).reshape(k + 1, W, dy, nb)
    for b, block in enumerate(blocks):  # sum_n r_no coef_b(n, i) x~_n
        S = S.at[:, d0:, b * nb:(b + 1) * nb].set(block)
        S = S.at[:, b * nb:(b + 1) * nb, d0:].set(jnp.swapaxes(block, 1, 2))
    return Ju, S * mask[:, None, None]


def n_selected(params: Params, sel: Selection) -> int:
    """P, the length of the flat vector of a selection: W * len(sel.columns) (+ dy with d)."""
    return params.width * len(sel.columns) + (params.n_out if sel.with_d else 0)


def _weighted_jacobian(params: Params, xc: jax.Array, tc: jax.Array, wc: jax.Array, sel: Selection,
                       offset: jax.Array | None = None):
    """One chunk's rows of the weighted least-squares problem on the selection.

    xc (C, dx), tc (C, dy), wc (C,).  Returns Jt (P, C * dy), the transpose of the
    Jacobian J (C * dy, P), and r (C * dy,), both scaled by sqrt(w) (so that
    sum_n w_n |y_n - t_n|^2 = |r|^2), and the chunk's per-unit second-order term
    (W, p_s, p_s), weighted by w (None if not sel.second_order).
    offset: a run-time shift of the selection's columns (first-order selections only).

    J is built transposed, in the layout its Gram wants (`_gram`): on a 2-core AVX-512
    CPU, J^T J of 4 vmapped (2000, 251) Jacobians takes 5.7 ms from Jt against 10 ms
    from J, and Jt itself is written in half the time (a `J.T` after building J is folded
    back into the product by XLA, so the transpose has to be in the construction).
    """
    W, dy = params.width, params.n_out
    cols = list(sel.columns)
    p_s = len(cols)
    P = n_selected(params, sel)
    res = apply_params(params, xc) - tc  # (C, dy)
    sw = jnp.sqrt(wc)
    Ju, Sc = unit_derivatives(params, xc, res * wc[:, None] if sel.second_order else None)
    if offset is not None and sel.second_order:
        raise ValueError("a run-time column offset is for first-order (least-squares) selections only")
    if offset is not None or cols != list(range(Ju.shape[-1])):
        Ju = _selected_columns(Ju, sel, offset)
    # J's row n dy + o, column i p_s + c is Ju[n, i, o, c]: Jt's row i p_s + c, column n dy + o
    Jt = jnp.transpose(Ju * sw[:, None, None, None], (1, 3, 0, 2)).reshape(W * p_s, -1)
    if sel.with_d:
        # d's rows, sqrt(w) times the identity, put under Jt by padding and a select:
        # XLA then writes all of Jt in one pass (a concatenate copies it a second time)
        eye = jnp.eye(dy, dtype=Jt.dtype)[:, None, :] * sw[None, :, None]  # (dy, C, dy): d_j at (n, o) is sw_n delta_jo
        is_d = jnp.arange(P) >= W * p_s
        Jt = jnp.where(is_d[:, None], jnp.pad(eye.reshape(dy, -1), ((W * p_s, 0), (0, 0))),
                       jnp.pad(Jt, ((0, dy), (0, 0))))
    S = Sc[:, cols][:, :, cols] if sel.second_order else None
    return Jt, (res * sw[:, None]).reshape(-1), S


def _over_chunks(accumulate, init, x, t, weight, chunk: int):
    """Fold `accumulate(carry, (xc, tc, wc))` over the chunks of the data (a scan when
    there are several); returns the final carry."""
    n_chunks = x.shape[0] // chunk
    batches = (x.reshape(n_chunks, chunk, x.shape[1]), t.reshape(n_chunks, chunk, t.shape[1]),
               weight.reshape(n_chunks, chunk))
    if n_chunks == 1:
        return accumulate(init, jax.tree.map(lambda a: a[0], batches))
    return jax.lax.scan(lambda c, b: (accumulate(c, b), None), init, batches)[0]


def hessian_and_gradient(
    params: Params, x: jax.Array, t: jax.Array, weight: jax.Array, sel: Selection, chunk: int
) -> tuple[jax.Array, jax.Array]:
    """Exact Hessian H (P, P) and gradient g (P,) of `loss_fn` on the selection.

    x (N, dx), t (N, dy), weight (N,) with N a multiple of `chunk`.  P is
    W * len(sel.columns) (+ dy if sel.with_d).  Masked units give zero rows.
    The data are visited in chunks of `chunk` points (a scan), so memory holds
    one (chunk * dy, P) Jacobian at a time.
    """
    W, p_s = params.width, len(sel.columns)
    P = n_selected(params, sel)

    def accumulate(carry, batch):
        H, g, S = carry
        Jt, r, Sc = _weighted_jacobian(params, *batch, sel)
        if sel.second_order:
            S = S + Sc
        return H + _gram(Jt), g + Jt @ r, S

    dtype = params.G.dtype
    zeros = (jnp.zeros((P, P), dtype), jnp.zeros((P,), dtype), jnp.zeros((W, p_s, p_s), dtype))
    H, g, S = _over_chunks(accumulate, zeros, x, t, weight, chunk)
    if sel.second_order:
        S_full = (S[:, :, None, :] * jnp.eye(W, dtype=dtype)[:, None, :, None]).reshape(W * p_s, W * p_s)
        H = H.at[: W * p_s, : W * p_s].add(S_full)
    n_real = jnp.sum(weight)
    return H / n_real, g / n_real


def least_squares_r(params: Params, x: jax.Array, t: jax.Array, weight: jax.Array, sel: Selection,
                    chunk: int, offset: jax.Array | None = None) -> jax.Array:
    """The triangular factor of the weighted least-squares problem on the selection.

    With J (M, P) and r (M,) the weighted Jacobian and residuals of all N points
    (`_weighted_jacobian`, which returns J transposed), returns the (P + 1, P + 1)
    upper-triangular R~ of the Householder
    QR of [J, -r]: R = R~[:P, :P] is J's factor and z = R~[:P, P] = Q^T (-r), so the
    least-squares step solves R p = z, and R^T R = J^T J, R^T z = -J^T r.  Accumulated
    chunk by chunk (R~ <- R of [R~; chunk rows]), so memory holds one chunk's rows.
    offset: a run-time shift of the selection's columns (see `newton_step`).
    """
    P = n_selected(params, sel)

    def accumulate(R, batch):
        Jt, r, _ = _weighted_jacobian(params, *batch, dataclasses.replace(sel, second_order=False), offset)
        rows = jnp.concatenate([Jt.T, -r[:, None]], axis=1)
        return jnp.linalg.qr(jnp.concatenate([R, rows]), mode="r")[: P + 1]

    return _over_chunks(accumulate, jnp.zeros((P + 1, P + 1), params.G.dtype), x, t, weight, chunk)


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
    # could take every thread and wait on each other forever (a hang seen with 34 models on
    # 2 cores).  When it runs under vmap every lane runs it; a solved lane decomposes the identity.
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


class Ladder(NamedTuple):
    """How the damping ladder factors (static).

    rungs_per_round: K consecutive rungs factored in one batched call per round
      (`damped_cholesky_solve`): the same rung and, on a CPU, the same bits for any K.
    cholesky_block: 0 for `jnp.linalg.cholesky`; b > 0 for `blocked_cholesky` with b
      columns a block, equal up to rounding (a candidate for accelerators, whose
      batched factorisation of large matrices may be slow: scripts/bench_gpu_step.py
      times both).
    """

    rungs_per_round: int = 1
    cholesky_block: int = 0


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
    1200 all-parameter steps of 1D MLPs, GLUs and GQUs (n = 10..50, CPU,
    scripts/ladder_rounds.py) a lane needed 3.1 factorisations a step on average but
    up to 13, so a batch of hundreds of models pays the tail on every step.  An
    experiment for accelerators (scripts/bench_gpu_step.py times it): training uses
    K = 1 unless `TrainConfig.rungs_per_round` (`SweepConfig.rungs_per_round`,
    scripts/bench_gpu.py --rungs-per-round) says otherwise.

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


def backtracking(loss_at, loss0, slope, *, c1: float = 1e-4, shrink: float = 0.5, max_halvings: int = 40):
    """Largest alpha in {1, 1/2, 1/4, ...} with loss_at(alpha) <= loss0 + c1 alpha slope.

    `slope` is g.p (< 0 for a descent direction).  Returns (alpha, loss); alpha = 0
    and loss = loss0 when no trial decreases the loss, so the loss never increases.
    """

    def accept(alpha, value):
        return jnp.isfinite(value) & (value <= loss0 + c1 * alpha * slope) & (value < loss0)

    def cond(state):
        j, alpha, value = state
        return (j < max_halvings) & ~accept(alpha, value)

    def body(state):
        j, alpha, _ = state
        alpha = alpha * shrink
        return j + 1, alpha, loss_at(alpha)

    one = jnp.asarray(1.0, loss0.dtype)
    _, alpha, value = jax.lax.while_loop(cond, body, (jnp.asarray(0), one, loss_at(one)))
    ok = accept(alpha, value)
    return jnp.where(ok, alpha, 0.0), jnp.where(ok, value, loss0)


def newton_step(params: Params, x, t, weight, sel: Selection, chunk: int,
                damping_start: jax.Array | int = 0, free: jax.Array | None = None,
                batch_axis: str | None = None, offset: jax.Array | None = None,
                ladder: Ladder = DEFAULT_LADDER) -> tuple[Params, StepInfo]:
    """One damped, line-searched Newton step on the selected parameters.

    x (N, dx), t (N, dy), weight (N,) (0 for padding points; N a multiple of chunk).
    free (P,) bool, optional: a further, run-time selection within `sel` (see
    `newton_direction`); the other entries of the flat vector stay exactly as they are.
    batch_axis: the name of the vmap axis over models this runs under, if any
    (`least_squares_direction`).
    offset: a run-time shift of the selection's columns, for a selection of one
    parameter group that is linear in the output (so that one compiled step serves
    the spline stages of every factor group: `sel` names factor 1's columns and
    offset = (j - 1) (n_in + 1) moves factor j; the same numbers as the static
    selection of factor j, `tests/test_newton.py`).  Valid offsets keep the columns
    inside the row (0 .. (k - 1) (n_in + 1) for factor 1's): like any dynamic slice,
    a larger one is clamped, not refused.
    ladder: how the damping ladder factors (`Ladder`: the same step for any rungs per
    round on a CPU, the same up to rounding for a blocked Cholesky).
    """
    if offset is not None and (sel.second_order or free is not None):
        raise ValueError("a run-time column offset is for least-squares steps (no second order, no free mask)")
    loss0 = loss_fn(params, x, t, weight)
    if sel.second_order or free is not None:
        H, g = hessian_and_gradient(params, x, t, weight, sel, chunk)
        p, damping_index, fallback = newton_direction(H, g, damping_start, free, ladder)
    else:  # linear in the selection: least squares on J itself (QR), not on J^T J
        R_aug = least_squares_r(params, x, t, weight, sel, chunk, offset)
        p, g, _ = least_squares_direction(R_aug, jnp.sum(weight), batch_axis)
        damping_index, fallback = jnp.asarray(0), jnp.asarray(False)
    theta0 = _flatten(pack_units(params), params.d, sel, offset)

    def moved(alpha):  # frozen entries keep their bits (theta0 + 0.0 would turn -0.0 into +0.0)
        theta = theta0 + alpha * p
        return theta if free is None else jnp.where(free, theta, theta0)

    def loss_at(alpha):
        return loss_fn(params_from_theta(params, moved(alpha), sel, offset), x, t, weight)

    slope = jnp.dot(g if free is None else jnp.where(free, g, 0.0), p)
    alpha, loss = backtracking(loss_at, loss0, slope)
    new = params_from_theta(params, moved(alpha), sel, offset)
    info = StepInfo(loss=loss, alpha=alpha, decrement=-slope, damping_index=damping_index,
                    descent_fallback=fallback)
    return new, info


__all__ = [
    "DEFAULT_LADDER", "Ladder", "Selection", "StepInfo", "apply_params", "backtracking", "blocked_cholesky",
    "damped_cholesky_solve", "damping_of", "hessian_and_gradient", "jacobi_scaled", "least_squares_direction",
    "least_squares_r", "loss_fn", "n_selected", "newton_direction", "newton_step", "params_from_theta",
]
