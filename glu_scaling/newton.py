"""One Newton step on one shallow model, with the structured exact Hessian.

The loss is L = (1 / 2N) sum_n sum_o r_no^2 with r = y(x) - t, and its Hessian is
N H = J^T J + S.  Because y = d + sum_i unit_i(theta_i; x), S is block-diagonal, one
(p, p) block per hidden unit (`unit_derivatives`, closed form), so H is one dense
product J^T J accumulated over chunks of data plus W small blocks, never nested autodiff.

A step on a parameter selection (`Selection`: columns of the packed unit rows, with or
without d) removes numerically zero rows (masked units, dead gates, frozen entries),
scales by Jacobi, solves with the damped Cholesky ladder (`linsolve`), falls back to the
scaled gradient where that does not descend, and backtracks until the loss decreases
(`newton_step`).  Where the output is linear in the selection the step is one linear
least-squares solve by QR of J (`least_squares_r`), since J^T J would square J's
condition number.  docs/design.md has the numerics and their reasons.  Everything here is
for a single model; `train` vmaps it over models.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from glu_scaling.linsolve import DEFAULT_LADDER, Ladder, least_squares_direction, newton_direction
from glu_scaling.models import Params, activation_fn, affine


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
    """`models.apply` without the architecture-name check: any model the engine trains
    (`models.Params`, `units.UnitParams`)."""
    return params.output(x)


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
    rows, d = _unflatten(theta, template.rows(), template.d, sel, offset)
    return template.with_rows(rows, d)


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


def derivatives(params, x: jax.Array, r: jax.Array | None):
    """Ju (C, W, dy, p) and S (W, p, p) of `unit_derivatives` for any model the engine trains.

    The model's type chooses how: the gated family's `Params` in closed form
    (`unit_derivatives`, the fast path), any other sum of units (`units.UnitParams`) by
    autodiff of its unit function (`units.UnitParams.derivatives`).
    """
    if isinstance(params, Params):
        return unit_derivatives(params, x, r)
    return params.derivatives(x, r)


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

    J is built transposed, in the layout its Gram wants (`_gram`): the product from Jt is
    markedly faster on a CPU than from J, and a `J.T` after building J would be folded
    back into the product by XLA, so the transpose has to be in the construction.
    """
    W, dy = params.width, params.n_out
    cols = list(sel.columns)
    p_s = len(cols)
    P = n_selected(params, sel)
    res = apply_params(params, xc) - tc  # (C, dy)
    sw = jnp.sqrt(wc)
    Ju, Sc = derivatives(params, xc, res * wc[:, None] if sel.second_order else None)
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

    dtype = params.dtype
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

    return _over_chunks(accumulate, jnp.zeros((P + 1, P + 1), params.dtype), x, t, weight, chunk)


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
                ladder: Ladder = DEFAULT_LADDER, admissible=None) -> tuple[Params, StepInfo]:
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
    admissible: optional params -> bool; the line search takes only trial points where it
    holds (`train`'s edge guard for 1D knots), as if the loss there were infinite.
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
    theta0 = _flatten(params.rows(), params.d, sel, offset)

    def moved(alpha):  # frozen entries keep their bits (theta0 + 0.0 would turn -0.0 into +0.0)
        theta = theta0 + alpha * p
        return theta if free is None else jnp.where(free, theta, theta0)

    def loss_at(alpha):
        trial = params_from_theta(params, moved(alpha), sel, offset)
        loss = loss_fn(trial, x, t, weight)
        return loss if admissible is None else jnp.where(admissible(trial), loss, jnp.inf)

    slope = jnp.dot(g if free is None else jnp.where(free, g, 0.0), p)
    alpha, loss = backtracking(loss_at, loss0, slope)
    new = params_from_theta(params, moved(alpha), sel, offset)
    info = StepInfo(loss=loss, alpha=alpha, decrement=-slope, damping_index=damping_index,
                    descent_fallback=fallback)
    return new, info


__all__ = [
    "Selection", "StepInfo", "apply_params", "backtracking", "derivatives", "hessian_and_gradient",
    "least_squares_r", "loss_fn", "n_selected", "newton_step", "params_from_theta", "unit_derivatives",
]
