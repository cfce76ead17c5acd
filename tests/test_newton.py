"""Tests for glu_scaling.newton: the structured Hessian against autodiff, the linear
least-squares stage against numpy, and the safeguards (damping, descent, line search).

Expected values come from jax.hessian / jax.grad of `loss_fn` and from numpy; conftest
enables float64.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glu_scaling import linsolve, models, newton, schedules, train

K = {"mlp": 0, "glu": 1, "gqu": 2}


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


def _random_params(seed, arch, n_in, n_hidden, n_out, width, activation):
    """Random N(0,1) model (gates too) built with numpy, with *non-zero* garbage in the
    masked units, so that only the mask (not zero parameters) can make their rows vanish."""
    rng = np.random.default_rng(seed)
    k = K[arch]
    mask = (np.arange(width) < n_hidden).astype(float)
    a = lambda *shape: jnp.asarray(rng.normal(size=shape))  # noqa: E731
    return models.Params(G=a(width, n_in), g=a(width), U=a(k, width, n_in), u=a(k, width), D=a(width, n_out),
                         d=a(n_out), mask=jnp.asarray(mask), activation=activation)


def _data(seed, n_real, n_pad, n_in, n_out):
    """n_real points in [-1, 1]^n_in with random targets, then n_pad far-away padding points."""
    rng = np.random.default_rng(100 + seed)
    x = rng.uniform(-1, 1, size=(n_real, n_in))
    t = rng.normal(size=(n_real, n_out))
    xp = np.full((n_pad, n_in), 3.0)
    tp = np.full((n_pad, n_out), -7.0)
    w = np.concatenate([np.ones(n_real), np.zeros(n_pad)])
    return (jnp.asarray(np.concatenate([x, xp])), jnp.asarray(np.concatenate([t, tp])), jnp.asarray(w))


def _full(k, n_in, n_out):
    return newton.Selection(tuple(range(models.unit_size(k, n_in, n_out))), with_d=True)


def _autodiff(params, x, t, w, sel):
    """Reference: jax.hessian / jax.grad of loss_fn w.r.t. the flattened selection."""
    theta = newton._flatten(models.pack_units(params), params.d, sel)

    def f(th):
        return newton.loss_fn(newton.params_from_theta(params, th, sel), x, t, w)

    return jax.hessian(f)(theta), jax.grad(f)(theta)


@functools.partial(jax.jit, static_argnames=("sel", "chunk", "n_real"))
def _structured_and_autodiff(params, x, t, w, sel, chunk, n_real):
    """(H, g) from hessian_and_gradient on the padded, chunked data, and (Ha, ga) from
    autodiff on the first n_real points only (one compile per shape)."""
    H, g = newton.hessian_and_gradient(params, x, t, w, sel, chunk)
    Ha, ga = _autodiff(params, x[:n_real], t[:n_real], w[:n_real], sel)
    return H, g, Ha, ga


def _sub_index(sel, width, n_unit_cols, n_out):
    """Positions of a selection's flat entries inside the full selection's flat vector."""
    idx = [i * n_unit_cols + c for i in range(width) for c in sel.columns]
    if sel.with_d:
        idx += [width * n_unit_cols + o for o in range(n_out)]
    return np.asarray(idx)


# (arch, activation, n_in, n_out): every arch with relu and gelu; input and output
# dimensions 1 and 2 each appear with every arch.
CASES = [
    ("mlp", "relu", 1, 1), ("mlp", "gelu", 2, 2),
    ("glu", "relu", 2, 1), ("glu", "gelu", 1, 2),
    ("gqu", "relu", 1, 2), ("gqu", "gelu", 2, 1),
]
N_HIDDEN, WIDTH = 3, 4  # unit 3 is masked
N_REAL, N_PAD, CHUNK = 13, 3, 4  # 16 points = 4 chunks; the last 3 points are padding


def _check_masked_unit(H, g, p_s):
    masked = np.arange(N_HIDDEN * p_s, WIDTH * p_s)
    H, g = np.asarray(H), np.asarray(g)
    assert np.all(H[masked, :] == 0.0) and np.all(H[:, masked] == 0.0)
    assert np.all(g[masked] == 0.0)


@pytest.mark.parametrize("arch,activation,n_in,n_out", CASES + [
    ("glu", "relu", models.FEW_INPUTS + 1, 1),  # models.affine's matmul branch
])
def test_structured_hessian_equals_autodiff(arch, activation, n_in, n_out):
    k = K[arch]
    params = _random_params(1, arch, n_in, N_HIDDEN, n_out, WIDTH, activation)
    x, t, w = _data(1, N_REAL, N_PAD, n_in, n_out)
    sel = _full(k, n_in, n_out)
    H, g, Ha, ga = _structured_and_autodiff(params, x, t, w, sel, CHUNK, N_REAL)
    P = WIDTH * models.unit_size(k, n_in, n_out) + n_out
    assert H.shape == (P, P) and g.shape == (P,)
    assert np.max(np.abs(np.asarray(Ha))) > 1e-3  # a non-trivial reference
    assert _rel(H, Ha) < 1e-10, _rel(H, Ha)
    assert _rel(g, ga) < 1e-10, _rel(g, ga)
    _check_masked_unit(H, g, models.unit_size(k, n_in, n_out))
    _check_masked_unit(Ha, ga, models.unit_size(k, n_in, n_out))


def test_single_chunk_path_equals_scan_path():
    arch, activation, n_in, n_out = CASES[3]
    params = _random_params(1, arch, n_in, N_HIDDEN, n_out, WIDTH, activation)
    x, t, w = _data(1, N_REAL, N_PAD, n_in, n_out)
    sel = _full(K[arch], n_in, n_out)
    H, g, Ha, ga = _structured_and_autodiff(params, x, t, w, sel, CHUNK, N_REAL)
    H1, g1 = jax.jit(newton.hessian_and_gradient, static_argnums=(4, 5))(params, x, t, w, sel, N_REAL + N_PAD)
    assert _rel(H1, Ha) < 1e-10 and _rel(g1, ga) < 1e-10
    assert _rel(H1, H) < 1e-12 and _rel(g1, g) < 1e-12


def test_the_gram_contracts_the_rows_of_the_transposed_jacobian():
    """J^T J is formed from Jt (P, M) contracting dimension 1 of both operands (the layout
    XLA:CPU runs 1.6-1.75x faster than contracting dimension 0 of J (M, P), see
    `newton._weighted_jacobian`).  Checked on the jaxpr, which XLA does not rewrite:
    the (P, P) product must contract ((1,), (1,)) of a (P, M) operand with itself."""
    k, n_in, n_out = 1, 2, 2
    params = _random_params(1, "glu", n_in, N_HIDDEN, n_out, WIDTH, "relu")
    x, t, w = _data(1, N_REAL, N_PAD, n_in, n_out)
    sel = _full(k, n_in, n_out)
    P, M = WIDTH * models.unit_size(k, n_in, n_out) + n_out, (N_REAL + N_PAD) * n_out
    jaxpr = jax.make_jaxpr(lambda p: newton.hessian_and_gradient(p, x, t, w, sel, N_REAL + N_PAD))(params)
    grams = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"
             and tuple(e.outvars[0].aval.shape) == (P, P)]
    assert len(grams) == 1
    (contract_lhs, contract_rhs), _ = grams[0].params["dimension_numbers"]
    assert tuple(contract_lhs) == tuple(contract_rhs) == (1,)
    assert grams[0].invars[0] is grams[0].invars[1] and tuple(grams[0].invars[0].aval.shape) == (P, M)
    Jt = jax.eval_shape(lambda p: newton._weighted_jacobian(p, x, t, w, sel)[0], params)  # (shapes: nothing to run)
    assert Jt.shape == (P, M)


@functools.partial(jax.jit, static_argnames=("sels",))
def _partials(params, x, t, w, sels):
    return [newton.hessian_and_gradient(params, x, t, w, sel, CHUNK) for sel in sels]


def test_partial_selections_are_blocks_of_the_full_hessian():
    """Hessian w.r.t. a subset = the sub-block of the full Hessian (the stages of a schedule,
    including the first-order-free linear ones where S is skipped)."""
    arch, activation, n_in, n_out = CASES[3]  # glu, gelu, 1 input, 2 outputs
    k = K[arch]
    params = _random_params(1, arch, n_in, N_HIDDEN, n_out, WIDTH, activation)
    x, t, w = _data(1, N_REAL, N_PAD, n_in, n_out)
    full = _full(k, n_in, n_out)
    _, _, Ha, ga = _structured_and_autodiff(params, x, t, w, full, CHUNK, N_REAL)
    gate_and_factor = newton.Selection(tuple(models.group_columns(k, n_in, n_out, models.GATE)
                                             + models.group_columns(k, n_in, n_out, models.factor(1))), False)
    sels = (train.selection((models.GATE,), k, n_in, n_out), train.selection((models.OUT,), k, n_in, n_out),
            train.selection((models.factor(1),), k, n_in, n_out), gate_and_factor)
    assert [s.second_order for s in sels] == [True, False, False, True]
    p = models.unit_size(k, n_in, n_out)
    for sel, (H, g) in zip(sels, _partials(params, x, t, w, sels)):
        idx = _sub_index(sel, WIDTH, p, n_out)
        assert H.shape == (idx.size, idx.size)
        assert _rel(H, np.asarray(Ha)[np.ix_(idx, idx)]) < 1e-10, sel
        assert _rel(g, np.asarray(ga)[idx]) < 1e-10, sel
        _check_masked_unit(H, g, len(sel.columns))


def test_hessian_with_fractional_weights():
    """`loss_fn` is documented for any weights (sum_n w_n |r_n|^2 / 2 sum_n w_n) and
    `hessian_and_gradient` as its exact Hessian and gradient: check non-0/1 weights."""
    arch, activation, n_in, n_out = CASES[3]
    params = _random_params(1, arch, n_in, N_HIDDEN, n_out, WIDTH, activation)
    x, t, w = _data(1, N_REAL, N_PAD, n_in, n_out)
    w = w * jnp.asarray(np.random.default_rng(3).uniform(0.2, 2.0, size=w.shape))
    H, g, Ha, ga = _structured_and_autodiff(params, x, t, w, _full(K[arch], n_in, n_out), CHUNK, N_REAL)
    assert _rel(g, ga) < 1e-10, _rel(g, ga)
    assert _rel(H, Ha) < 1e-10, _rel(H, Ha)


@functools.partial(jax.jit, static_argnames=("sel", "chunk"))
def _hg(params, x, t, w, sel, chunk):
    return newton.hessian_and_gradient(params, x, t, w, sel, chunk)


@functools.partial(jax.jit, static_argnames=("sel", "chunk"))
def _step(params, x, t, w, sel, chunk):
    return newton.newton_step(params, x, t, w, sel, chunk)


@pytest.mark.parametrize("arch,n_in,n_out", [("mlp", 1, 1), ("gqu", 2, 2)])
def test_linear_stage_is_solved_in_one_step(arch, n_in, n_out):
    """{D, d} enter y linearly: one Newton step is the least-squares solution."""
    k = K[arch]
    n_hidden, width = 5, 6
    params = _random_params(4, arch, n_in, n_hidden, n_out, width, "relu")
    n_real, n_pad = 30, 2
    x, t, w = _data(4, n_real, n_pad, n_in, n_out)
    sel = train.selection((models.OUT,), k, n_in, n_out)
    assert sel.with_d and not sel.second_order
    new, info = _step(params, x, t, w, sel, 8)
    # the gates and factors did not move, the masked unit stayed untouched
    for name in ("G", "g", "U", "u"):
        np.testing.assert_array_equal(getattr(new, name), getattr(params, name))
    np.testing.assert_array_equal(np.asarray(new.D)[n_hidden:], np.asarray(params.D)[n_hidden:])
    # numpy least squares on the design matrix [hidden activations of the real units, 1]
    Hx = np.asarray(models.hidden(params, x[:n_real]))[:, :n_hidden]
    A = np.concatenate([Hx, np.ones((n_real, 1))], axis=1)
    coef, *_ = np.linalg.lstsq(A, np.asarray(t[:n_real]), rcond=None)
    resid = A @ coef - np.asarray(t[:n_real])
    loss_ls = 0.5 * np.sum(resid**2) / n_real
    assert int(info.damping_index) == 0 and float(info.alpha) == 1.0
    assert abs(float(info.loss) - loss_ls) <= 1e-10 * loss_ls
    assert abs(float(newton.loss_fn(new, x, t, w)) - loss_ls) <= 1e-10 * loss_ls
    # live units get the least-squares coefficients; a dead ReLU unit (zero column, removed
    # from the solve) keeps its D, lstsq's minimum-norm solution gives it 0
    live = np.any(Hx != 0, axis=0)
    assert live.sum() >= 2
    np.testing.assert_allclose(np.asarray(new.D)[:n_hidden][live], coef[:n_hidden][live], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(new.D)[:n_hidden][~live], np.asarray(params.D)[:n_hidden][~live])
    np.testing.assert_allclose(coef[:n_hidden][~live], 0.0, atol=1e-12)
    np.testing.assert_allclose(new.d, coef[n_hidden], rtol=1e-9, atol=1e-9)
    _, g = _hg(new, x, t, w, sel, 8)
    _, g0 = _hg(params, x, t, w, sel, 8)
    assert np.linalg.norm(g) <= 1e-10 * np.linalg.norm(g0)
    # the decrement predicts the decrease exactly for a quadratic: L0 - L1 = decrement / 2
    loss0 = float(newton.loss_fn(params, x, t, w))
    np.testing.assert_allclose(loss0 - float(info.loss), 0.5 * float(info.decrement), rtol=1e-9)


@pytest.mark.parametrize("arch,groups,n_out", [("gqu", (models.factor(2),), 2), ("glu", (models.OUT,), 1)])
def test_least_squares_factor_reproduces_the_normal_equations(arch, groups, n_out):
    """R~ of [J, -r] accumulated over chunks (padding points included, weight 0):
    upper triangular, R^T R = J^T J and R^T z = -J^T r (both from hessian_and_gradient)."""
    k = K[arch]
    params = _random_params(6, arch, 2, 5, n_out, 6, "relu")
    x, t, w = _data(6, 30, 2, 2, n_out)
    sel = train.selection(groups, k, 2, n_out)
    H, g = _hg(params, x, t, w, sel, 8)
    R_aug = np.asarray(jax.jit(newton.least_squares_r, static_argnums=(4, 5))(params, x, t, w, sel, 8))
    P = H.shape[0]
    assert R_aug.shape == (P + 1, P + 1) and np.all(np.tril(R_aug, -1) == 0)
    R, z = R_aug[:P, :P], R_aug[:P, P]
    assert _rel(R.T @ R / 30, H) < 1e-12
    assert _rel(-(R.T @ z) / 30, g) < 1e-12


def _step_function_fit(eps=1e-6, a=0.2, n=1000):
    """An MLP whose {D, d} stage can fit a ramp of width eps exactly: units open at a and
    a + eps (and one at -1.001), target clip((x - a) / eps, 0, 1) = (relu(x - a) -
    relu(x - a - eps)) / eps, so D = (1/eps, -1/eps, 0), d = 0, and cond(J) ~ 1e7."""
    x = jnp.asarray(np.sort(np.random.default_rng(0).uniform(-1, 1, (n, 1)), axis=0))
    t = jnp.clip((x - a) / eps, 0.0, 1.0)
    params = models.Params(G=jnp.ones((3, 1)), g=-jnp.asarray([a, a + eps, -1.001]), U=jnp.zeros((0, 3, 1)),
                           u=jnp.zeros((0, 3)), D=jnp.zeros((3, 1)), d=jnp.zeros(1), mask=jnp.ones(3),
                           activation="relu")
    return params, x, t, jnp.ones(n), train.selection((models.OUT,), 0, 1, 1)


def test_ill_conditioned_linear_stage_is_solved_on_j_not_j_transpose_j():
    """cond(J) ~ 1e7: QR gets the exact fit to about cond * eps; normal equations
    (cond^2 ~ 1e14) lose half the digits, and the fit with them."""
    eps = 1e-6
    params, x, t, w, sel = _step_function_fit(eps)
    new, info = _step(params, x, t, w, sel, 250)
    assert float(np.sqrt(2 * info.loss)) < 1e-8
    np.testing.assert_allclose(np.asarray(new.D)[:2, 0], [1 / eps, -1 / eps], rtol=1e-8)
    assert abs(float(new.D[2, 0])) < 1e-6 and abs(float(new.d[0])) < 1e-6
    assert int(info.damping_index) == 0 and not bool(info.descent_fallback)
    # the same step from the normal equations (what a second-order selection does)
    H, g = _hg(params, x, t, w, sel, 250)
    p, _, _ = _direction(H, g)
    theta = newton._flatten(models.pack_units(params), params.d, sel) + p
    normal = newton.params_from_theta(params, theta, sel)
    assert float(np.sqrt(2 * newton.loss_fn(normal, x, t, w))) > 1e-6


def test_rank_deficient_linear_stage_takes_the_minimum_norm_solution():
    """Two units with the same knot: J has two equal columns, R a zero pivot, and only the
    sum of their two D's is determined.  The step is the minimum-norm least-squares
    solution (equal columns, equal Jacobi scales: the two get half the sum each), and the
    sum is the coefficient of the same fit with one of the two units masked."""
    params, x, t, w, sel = _step_function_fit()
    params = params.replace(g=-jnp.asarray([0.2, 0.2, -1.001]))
    R_aug = jax.jit(newton.least_squares_r, static_argnums=(4, 5))(params, x, t, w, sel, 250)
    p, g, used_svd = jax.jit(linsolve.least_squares_direction)(R_aug, jnp.sum(w))
    H, g_ref = _hg(params, x, t, w, sel, 250)
    assert bool(used_svd) and _rel(g, g_ref) < 1e-12
    one = params.replace(mask=jnp.asarray([1.0, 0.0, 1.0]))
    q, _, solo = jax.jit(linsolve.least_squares_direction)(
        jax.jit(newton.least_squares_r, static_argnums=(4, 5))(one, x, t, w, sel, 250), jnp.sum(w))
    p, q = np.asarray(p), np.asarray(q)
    assert not bool(solo) and q[1] == 0.0
    np.testing.assert_allclose(p[0], p[1], rtol=1e-10)
    np.testing.assert_allclose(p[0] + p[1], q[0], rtol=1e-10)
    np.testing.assert_allclose(p[2:], q[2:], rtol=1e-10, atol=1e-12)


def test_batched_minimum_norm_fallback_is_shared_by_the_batch_and_changes_nothing():
    """Under vmap with a named axis the lanes agree (psum) on whether any of them needs the
    SVD: the branch stays a real conditional (skipped when no lane is rank-deficient,
    rather than a select that runs it on every lane), and each lane's step is bit for bit
    its solo step, for a batch of one rank-deficient and one full-rank factor and for a
    batch of full-rank factors only."""
    params, x, t, w, sel = _step_function_fit()
    r_of = jax.jit(newton.least_squares_r, static_argnums=(4, 5))
    deficient = r_of(params.replace(g=-jnp.asarray([0.2, 0.2, -1.001])), x, t, w, sel, 250)
    full = r_of(params, x, t, w, sel, 250)
    n = jnp.sum(w)
    solo = jax.jit(linsolve.least_squares_direction)
    named = jax.jit(jax.vmap(lambda R: linsolve.least_squares_direction(R, n, "models"), axis_name="models"))
    flags = {}
    for batch in ([deficient, full], [full, full]):
        p, g, used = named(jnp.stack(batch))
        flags[len(flags)] = [bool(u) for u in used]
        for lane, R in enumerate(batch):
            p1, g1, used1 = solo(R, n)
            np.testing.assert_array_equal(np.asarray(p[lane]), np.asarray(p1))
            np.testing.assert_array_equal(np.asarray(g[lane]), np.asarray(g1))
            assert bool(used[lane]) == bool(used1)
    assert flags == {0: [True, False], 1: [False, False]}
    stacked = jnp.stack([deficient, full])
    primitives = {e.primitive.name for e in jax.make_jaxpr(
        jax.vmap(lambda R: linsolve.least_squares_direction(R, n, "models"), axis_name="models"))(stacked).eqns}
    unnamed = {e.primitive.name for e in jax.make_jaxpr(jax.vmap(lambda R: linsolve.least_squares_direction(R, n)))(
        stacked).eqns}
    assert "cond" in primitives and "cond" not in unnamed  # without the name, vmap turns it into a select


# ---------------------------------------------------------------- safeguards


def _sym(rng, n, eigs):
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (Q * np.asarray(eigs)) @ Q.T


def _unit_diag(A):
    s = 1 / np.sqrt(np.abs(np.diag(A)))
    return s[:, None] * A * s[None, :]


_chol = jax.jit(linsolve.damped_cholesky_solve)


def _ladder_lanes(seed, n, shifts):
    """Unit-diagonal symmetric (len(shifts), n, n) matrices whose lowest eigenvalue before
    scaling is each shift (0: all positive, drawn), the last poisoned with a NaN pair (no
    rung factors it), and right-hand sides (len(shifts), n)."""
    rng = np.random.default_rng(seed)
    mats, rhs = [], []
    for shift in shifts:
        eigs = rng.uniform(0.2, 3.0, n)
        eigs[0] = shift if shift else eigs[0]
        mats.append(_unit_diag(_sym(rng, n, eigs)))
        rhs.append(rng.normal(size=n))
    mats[-1][2, 3] = mats[-1][3, 2] = np.nan
    return jnp.asarray(np.stack(mats)), jnp.asarray(np.stack(rhs))


def test_a_run_time_column_offset_steps_exactly_as_the_static_selection():
    """One compiled least-squares step serves every factor group (`train._factor_stages`):
    factor 1's columns shifted by (j - 1)(n_in + 1) at run time give the step on the
    static selection of factor j, bit for bit, and move nothing else."""
    n_in, n_out, k, width = 2, 2, 3, 6
    rng = np.random.default_rng(3)
    a = lambda *shape: jnp.asarray(rng.normal(size=shape))  # noqa: E731
    params = models.Params(G=a(width, n_in), g=a(width), U=a(k, width, n_in), u=a(k, width), D=a(width, n_out),
                           d=a(n_out), mask=jnp.asarray((np.arange(width) < 5).astype(float)), activation="relu")
    x, t, w = _data(3, 40, 8, n_in, n_out)  # 48 rows in 3 chunks of 16
    factor1 = train.selection((models.factor(1),), k, n_in, n_out)
    shifted = jax.jit(lambda p, off: newton.newton_step(p, x, t, w, factor1, 16, offset=off))
    for j in range(1, k + 1):
        static = train.selection((models.factor(j),), k, n_in, n_out)
        want = jax.jit(lambda p, sel=static: newton.newton_step(p, x, t, w, sel, 16))(params)
        got = shifted(params, jnp.asarray((j - 1) * (n_in + 1)))
        for u, v in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
        assert float(got[1].alpha) > 0  # a real step was taken
        moved = np.asarray(got[0].U) != np.asarray(params.U)
        assert moved[j - 1].any() and not np.delete(moved, j - 1, axis=0).any()
        assert not np.delete(np.asarray(got[0].u) != np.asarray(params.u), j - 1, axis=0).any()
        for name in ("G", "g", "D", "d"):
            np.testing.assert_array_equal(getattr(got[0], name), getattr(params, name), err_msg=name)
    with pytest.raises(ValueError, match="first-order"):
        newton._weighted_jacobian(params, x, t, w, _full(k, n_in, n_out), jnp.asarray(0))
    with pytest.raises(ValueError, match="contiguous"):
        newton._flatten(models.pack_units(params), params.d, newton.Selection((0, 2), False, False), jnp.asarray(0))


def test_damped_cholesky_spd_is_exact_and_undamped():
    rng = np.random.default_rng(0)
    for _ in range(5):
        A = _unit_diag(_sym(rng, 6, rng.uniform(0.1, 3.0, 6)))
        b = rng.normal(size=6)
        z, i = _chol(jnp.asarray(A), jnp.asarray(b))
        assert int(i) == 0
        np.testing.assert_allclose(z, np.linalg.solve(A, b), rtol=1e-12, atol=1e-12)


def test_damped_cholesky_indefinite_damps_just_enough():
    rng = np.random.default_rng(1)
    for trial in range(8):
        eigs = rng.uniform(0.2, 3.0, 6)
        eigs[: 1 + trial % 3] *= -rng.uniform(0.01, 0.5)
        A = _sym(rng, 6, eigs)
        b = rng.normal(size=6)
        z, i = _chol(jnp.asarray(A), jnp.asarray(b))
        i = int(i)
        lam = float(linsolve.damping_of(jnp.asarray(i), jnp.float64))
        assert i > 0 and np.all(np.isfinite(z))
        # the solution is that of the damped system, which is positive definite ...
        assert np.min(np.linalg.eigvalsh(A + lam * np.eye(6))) > 0
        np.testing.assert_allclose(z, np.linalg.solve(A + lam * np.eye(6), b), rtol=1e-10, atol=1e-10)
        # ... and the previous rung of the ladder was not
        prev = float(linsolve.damping_of(jnp.asarray(i - 1), jnp.float64))
        assert np.min(np.linalg.eigvalsh(A + prev * np.eye(6))) < 0


def test_vmapped_damping_ladder_equals_each_solve_alone():
    # lanes of one vmapped call need different rungs (0, several, and never: a NaN
    # matrix); lanes already factored run the loop body with a poisoned diagonal,
    # which must not change any lane's rung or solution, bit for bit
    rng = np.random.default_rng(7)
    mats, rhs = [], []
    for shift in (0.0, -0.02, -0.3, -1e-9, 0.0):
        eigs = rng.uniform(0.2, 3.0, 6)
        eigs[0] = shift if shift else eigs[0]
        mats.append(_sym(rng, 6, eigs))
        rhs.append(rng.normal(size=6))
    mats[-1][2, 3] = mats[-1][3, 2] = np.nan
    H, b = jnp.asarray(np.stack(mats)), jnp.asarray(np.stack(rhs))
    z_batch, i_batch = jax.jit(jax.vmap(linsolve.damped_cholesky_solve))(H, b)
    rungs = []
    for lane in range(len(mats)):
        z, i = _chol(H[lane], b[lane])
        rungs.append(int(i))
        assert int(i_batch[lane]) == int(i)
        np.testing.assert_array_equal(np.asarray(z_batch[lane]).view(np.uint64), np.asarray(z).view(np.uint64))
    assert rungs[0] == 0 and len(set(rungs)) >= 3 and rungs[-1] == 20  # the NaN lane tries every rung
    assert np.all(np.isnan(np.asarray(z_batch[-1])))


def test_cholesky_failure_shows_on_the_diagonal():
    # damped_cholesky_solve checks only diag(L): a failed factorisation's lower triangle is all NaN
    bad = np.asarray(jnp.linalg.cholesky(jnp.asarray(_sym(np.random.default_rng(8), 5, [1.0, 2.0, -0.5, 1.0, 3.0]))))
    assert np.all(np.isnan(bad[np.tril_indices(5)]))


def test_damping_ladder():
    got = [float(linsolve.damping_of(jnp.asarray(i), jnp.float64)) for i in range(0, 14)]
    assert got[0] == 0.0
    np.testing.assert_allclose(got[1:], [10.0 ** (i - 15) for i in range(1, 14)], rtol=1e-14)


_direction = jax.jit(linsolve.newton_direction)


def test_newton_direction_descends_for_indefinite_hessians():
    rng = np.random.default_rng(2)
    n = 7
    for trial in range(20):
        H = _sym(rng, n, rng.uniform(-3, 3, n))
        H = H * np.exp(rng.normal(size=n))[:, None] * np.exp(rng.normal(size=n))[None, :]
        H = 0.5 * (H + H.T)
        H = H + np.diag(np.abs(np.diag(H)) + 0.1)  # positive diagonal, as J^T J + S mostly has
        g = rng.normal(size=n)
        p, _, _ = _direction(jnp.asarray(H), jnp.asarray(g))
        assert np.all(np.isfinite(p))
        assert float(np.dot(g, p)) < 0, trial


def test_newton_direction_descends_along_negative_curvature_rows():
    """A coordinate with negative curvature (H_ii < 0, e.g. a gelu gate with a large
    residual) is not a masked/dead row: its diagonal is not (numerically) zero.  The
    direction must still descend when the gradient lives on such coordinates."""
    rng = np.random.default_rng(6)
    n = 6
    for trial in range(6):
        H = _sym(rng, n, rng.uniform(-3, 3, n))
        H = H + np.diag(np.abs(np.diag(H)) + 0.1)
        neg = rng.choice(n, size=1 + trial % 3, replace=False) if trial < 5 else np.arange(n)
        H[neg, neg] = -rng.uniform(0.5, 2.0, neg.size)
        g = np.zeros(n)
        g[neg] = rng.normal(size=neg.size)  # a non-stationary point
        p, _, _ = _direction(jnp.asarray(H), jnp.asarray(g))
        assert np.all(np.isfinite(p))
        assert float(np.dot(g, p)) < 0, (trial, np.asarray(p))


def test_newton_direction_removes_zero_rows_and_solves_spd_exactly():
    rng = np.random.default_rng(3)
    A = _sym(rng, 5, rng.uniform(0.5, 2.0, 5))
    H = np.zeros((7, 7))
    keep = np.array([0, 1, 3, 4, 6])
    H[np.ix_(keep, keep)] = A
    g = rng.normal(size=7)
    g[[2, 5]] = 0.0
    p, i, fallback = _direction(jnp.asarray(H), jnp.asarray(g))
    assert int(i) == 0 and not bool(fallback)
    assert p[2] == 0.0 and p[5] == 0.0
    np.testing.assert_allclose(np.asarray(p)[keep], -np.linalg.solve(A, g[keep]), rtol=1e-11, atol=1e-12)


@jax.jit
def _search(x0, p, A, b, c):
    """Backtracking along p on the non-convex f(x) = 0.5 x.Ax + b.x + c.sum(cos 3x)."""

    def f(x):
        return 0.5 * x @ A @ x + b @ x + jnp.sum(c * jnp.cos(3 * x))

    loss0 = f(x0)
    slope = jnp.dot(jax.grad(f)(x0), p)
    alpha, loss = newton.backtracking(lambda a: f(x0 + a * p), loss0, slope)
    return alpha, loss, loss0, f(x0 + alpha * p), slope


def test_backtracking_never_increases_the_loss():
    rng = np.random.default_rng(4)
    n = 5
    n_ascent = 0
    for trial in range(40):
        A = _sym(rng, n, rng.uniform(0.1, 2.0, n))
        b = rng.normal(size=n)
        c = rng.uniform(0, 1, n) * (trial % 2)  # half convex quadratics, half non-convex
        x0 = rng.normal(size=n)
        p = rng.normal(size=n) * 10 ** rng.uniform(-2, 2)
        alpha, loss, loss0, at_alpha, slope = (float(v) for v in _search(x0, p, A, b, c))
        assert loss <= loss0
        assert abs(loss - at_alpha) <= 1e-14 * abs(loss)  # the loss at the accepted step
        if alpha > 0:
            assert loss < loss0 and loss <= loss0 + 1e-4 * alpha * slope
        else:
            assert loss == loss0
        if slope > 0 and c.sum() == 0:  # an ascent direction of a convex function
            n_ascent += 1
            assert alpha == 0.0 and loss == loss0
    assert n_ascent >= 5


def test_backtracking_takes_the_full_step_on_a_quadratic_newton_direction():
    rng = np.random.default_rng(5)
    A = _sym(rng, 4, rng.uniform(0.5, 2.0, 4))
    b = rng.normal(size=4)
    x0 = rng.normal(size=4)
    p = -np.linalg.solve(A, A @ x0 + b)
    alpha, loss, loss0, _, slope = (float(v) for v in _search(x0, p, A, b, np.zeros(4)))
    assert alpha == 1.0
    np.testing.assert_allclose(loss0 - loss, -0.5 * slope, rtol=1e-10)


@functools.partial(jax.jit, static_argnames=("sel", "chunk"))
def _masked_step(params, x, t, w, sel, chunk, free):
    return newton.newton_step(params, x, t, w, sel, chunk, 0, free)


@pytest.mark.parametrize("arch,groups,n_out", [("glu", (models.OUT,), 1), ("glu", (models.GATE,), 1),
                                               ("gqu", (models.factor(2),), 2), ("gqu", models.all_groups(1), 2)])
def test_runtime_mask_step_equals_the_sub_selection_step(arch, groups, n_out):
    """A step on all parameters with a run-time `free` mask is the step on the sub-selection:
    the Hessian block, Jacobi scaling and Cholesky of the free entries are the same numbers
    (up to rounding order), the other entries stay bit for bit."""
    k, n_in = K[arch], 2
    params = _random_params(11, arch, n_in, 4, n_out, 5, "relu")
    # a -0.0 in every group (as the spline init leaves in g): frozen ones must keep their sign bit
    params = params.replace(G=params.G.at[0, 0].set(-0.0), g=params.g.at[1].set(-0.0),
                            U=params.U.at[:, 2, 0].set(-0.0), u=params.u.at[:, 3].set(-0.0),
                            D=params.D.at[0, 0].set(-0.0))
    x, t, w = _data(11, 38, 2, n_in, n_out)
    sub = train.selection(groups, k, n_in, n_out)
    free = train.stage_masks([schedules.Stage(groups, 1)], k, n_in, n_out, 5)[0]
    assert free.sum() == 5 * len(sub.columns) + (n_out if sub.with_d else 0)
    want, want_info = _step(params, x, t, w, sub, 8)
    got, got_info = _masked_step(params, x, t, w, _full(k, n_in, n_out), 8, jnp.asarray(free))
    assert float(want_info.alpha) > 0 and int(got_info.damping_index) == int(want_info.damping_index)
    assert abs(float(got_info.loss) - float(want_info.loss)) <= 1e-12 * float(want_info.loss)
    for name in ("G", "g", "U", "u", "D", "d"):
        a, b = np.asarray(getattr(got, name)), np.asarray(getattr(want, name))
        assert _rel(a, b) < 1e-10, (name, _rel(a, b))
    theta0 = newton._flatten(models.pack_units(params), params.d, _full(k, n_in, n_out))
    theta = newton._flatten(models.pack_units(got), got.d, _full(k, n_in, n_out))
    # frozen entries keep their bits (a -0.0 too), the free ones move
    np.testing.assert_array_equal(np.asarray(theta)[~free].view(np.int64), np.asarray(theta0)[~free].view(np.int64))
    assert np.any(np.asarray(theta)[free] != np.asarray(theta0)[free])


def test_frozen_entries_never_reach_the_direction_even_when_not_finite():
    """Entries a run-time mask freezes are dropped before the solve: an inf or NaN in their
    rows of H or in g changes nothing (the sub-problem's direction, no damping, no fallback)."""
    rng = np.random.default_rng(5)
    A = rng.normal(size=(12, 6))
    H = A.T @ A / 12 + 0.1 * np.eye(6)  # SPD
    g = rng.normal(size=6)
    free = np.array([True, False, True, True, False, True])
    want, want_index, want_fallback = _direction(jnp.asarray(H[np.ix_(free, free)]), jnp.asarray(g[free]))
    H_bad, g_bad = H.copy(), g.copy()
    H_bad[1, :] = H_bad[:, 1] = np.inf
    H_bad[4, 4] = np.nan
    g_bad[1], g_bad[4] = np.inf, np.nan
    p, index, fallback = jax.jit(linsolve.newton_direction)(jnp.asarray(H_bad), jnp.asarray(g_bad), 0,
                                                         jnp.asarray(free))
    assert int(index) == int(want_index) == 0 and not bool(fallback) and not bool(want_fallback)
    np.testing.assert_array_equal(np.asarray(p)[~free], 0.0)
    assert _rel(np.asarray(p)[free], np.asarray(want)) < 1e-14


@pytest.mark.parametrize("rungs_per_round", [2, 3, 4])
def test_rungs_per_round_pick_the_same_rung_and_bits_as_one_at_a_time(rungs_per_round):
    """K rungs factored per round keep the lowest that succeeded: the rung and the
    solution of the one-rung ladder, bit for bit, from any start, vmapped or not, also
    when no rung succeeds (a NaN matrix: the top rung, an all-NaN solution)."""
    H, b = _ladder_lanes(11, 6, (0.0, -0.02, -0.3, -1e-9, -1e-4, -40.0, 0.0))
    rounds = jax.jit(functools.partial(linsolve.damped_cholesky_solve, ladder=linsolve.Ladder(rungs_per_round)))
    seen = set()
    for start in (0, 3, 7, 19, 20):
        starts = jnp.full((H.shape[0],), start)
        z_one, i_one = jax.jit(jax.vmap(linsolve.damped_cholesky_solve))(H, b, starts)
        z_k, i_k = jax.jit(jax.vmap(rounds))(H, b, starts)
        np.testing.assert_array_equal(np.asarray(i_k), np.asarray(i_one))
        np.testing.assert_array_equal(np.asarray(z_k).view(np.uint64), np.asarray(z_one).view(np.uint64))
        for lane in range(H.shape[0]):  # and each alone
            z, i = rounds(H[lane], b[lane], start)
            assert int(i) == int(i_one[lane])
            np.testing.assert_array_equal(np.asarray(z).view(np.uint64), np.asarray(z_one[lane]).view(np.uint64))
        seen |= {int(i) - start for i in i_one[:-1]}
    assert int(i_one[-1]) == 20 and np.all(np.isnan(np.asarray(z_k[-1])))
    assert len(seen) >= 4  # lanes that stop in the first round and in later ones


def test_a_newton_step_is_the_same_for_any_rungs_per_round():
    n_in, n_out, k, width = 1, 1, 2, 8
    rng = np.random.default_rng(5)
    a = lambda *shape: jnp.asarray(rng.normal(size=shape))  # noqa: E731
    params = models.Params(G=a(width, n_in), g=a(width), U=a(k, width, n_in), u=a(k, width), D=a(width, n_out),
                           d=a(n_out), mask=jnp.ones(width), activation="relu")
    x, t, w = _data(6, 60, 4, n_in, n_out)
    sel = _full(k, n_in, n_out)
    steps = {K: jax.jit(lambda p, K=K: newton.newton_step(p, x, t, w, sel, 16, 0, ladder=linsolve.Ladder(K)))(params)
             for K in (1, 4)}
    assert int(steps[1][1].damping_index) > 0  # an indefinite Hessian: the ladder climbed
    for u, v in zip(jax.tree.leaves(steps[1]), jax.tree.leaves(steps[4])):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("block", [1, 4, 5, 8, 22])
def test_blocked_cholesky_equals_the_unblocked_factor(block):
    """A blocked factor (diagonal blocks, panels by triangular solves, trailing updates by
    products) is the Cholesky factor: equal to `jnp.linalg.cholesky` to rounding, for
    blocks that divide P = 23 or not, batched, with an exactly zero upper triangle."""
    rng = np.random.default_rng(21)
    A = np.stack([_sym(rng, 23, rng.uniform(0.05, 4.0, 23)) for _ in range(3)])
    want = np.asarray(jnp.linalg.cholesky(jnp.asarray(A)))
    got = np.asarray(jax.jit(functools.partial(linsolve.blocked_cholesky, block=block))(jnp.asarray(A)))
    assert _rel(got, want) < 1e-13
    assert np.all(got[:, ~np.tri(23, dtype=bool)] == 0)
    np.testing.assert_allclose(got @ np.swapaxes(got, 1, 2), A, atol=1e-13)


def test_blocked_cholesky_fails_on_the_diagonal_where_the_unblocked_one_fails():
    """Where a is not positive definite, the block where factoring fails and every later
    one are NaN, so `linsolve._factored` (which reads the diagonal) refuses it: a negative
    eigenvalue that only the trailing block reveals, a first pivot that fails, and the
    poisoned diagonal of lanes the ladder has finished."""
    rng = np.random.default_rng(22)
    lead = _sym(rng, 8, rng.uniform(0.5, 2.0, 8))  # the leading 8 x 8 are positive definite
    A = np.zeros((12, 12))
    A[:8, :8] = lead
    A[8:, 8:] = _sym(rng, 4, [1.0, -0.3, 2.0, 0.7])
    first = np.eye(12)
    first[0, 0] = -1.0
    poisoned = np.eye(12) - np.finfo(np.float64).max * np.eye(12)
    for bad in (A, first, poisoned):
        L = linsolve.blocked_cholesky(jnp.asarray(bad), 4)
        assert not bool(linsolve._factored(L)) and not bool(linsolve._factored(jnp.linalg.cholesky(jnp.asarray(bad))))
    L = np.asarray(linsolve.blocked_cholesky(jnp.asarray(A), 4))
    assert np.all(np.isfinite(L[:8, :8])) and np.all(np.isnan(np.diag(L)[8:]))


@pytest.mark.parametrize("rungs_per_round", [1, 3])
def test_the_ladder_with_a_blocked_cholesky_stops_at_the_same_rungs(rungs_per_round):
    """The damping ladder factored by blocks climbs to the same rung as with
    `jnp.linalg.cholesky` and solves the same damped system to rounding, vmapped over
    lanes that need rung 0, several rungs, or none (a NaN matrix: the top rung, NaN)."""
    H, b = _ladder_lanes(23, 10, (0.0, -0.02, -0.3, -1e-4, -40.0, 0.0))
    z_one, i_one = jax.jit(jax.vmap(linsolve.damped_cholesky_solve))(H, b)
    blocked = functools.partial(linsolve.damped_cholesky_solve, ladder=linsolve.Ladder(rungs_per_round, 4))
    z_b, i_b = jax.jit(jax.vmap(blocked))(H, b)
    np.testing.assert_array_equal(np.asarray(i_b), np.asarray(i_one))
    assert len(set(np.asarray(i_one[:-1]).tolist())) >= 3 and int(i_one[-1]) == 20
    np.testing.assert_allclose(np.asarray(z_b[:-1]), np.asarray(z_one[:-1]), rtol=1e-11, atol=1e-12)
    assert np.all(np.isnan(np.asarray(z_b[-1])))
