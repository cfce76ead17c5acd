"""Training one model by its `TrainConfig`, and the compiled call that trains a batch.

A Newton schedule (`schedules`) runs stage by stage: the leading linear least-squares
stages each on their own columns, solved by QR of J (the factor groups' in one loop
around one compiled step whose columns shift at run time), and the remaining stages in
one loop around one compiled all-parameter step, a run-time mask picking each stage's
entries (half the compile time of one program per stage).  The optax baselines train
the packed unit rows directly.

Every model ends with a status: "ok", "diverged" (its loss or parameters became
non-finite; it is frozen at its last finite point) or "stalled" (the line search
stopped while the Newton decrement was still large, or the loss never decreased).
Models in a batch are independent: one that fails never changes the others.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from glu_scaling import compilation, distributed, knots, linsolve, newton
from glu_scaling.errors import UsageError
from glu_scaling.models import Group, Layout, Params, factor, gated_layout
from glu_scaling.schedules import FIRST_ORDER, Stage, TrainConfig

STATUSES = ("ok", "diverged", "stalled")
OK, DIVERGED, STALLED = 0, 1, 2
STALL_RATIO = 1e-6  # a failed line search with decrement > STALL_RATIO * loss is a stall
MODELS_AXIS = "models"  # the vmap axis of `train_batch`'s models
_NO_KNOT_STAGE = {"knot_moves": 0, "knots": -1}  # a model's knot info when its schedule has no knot stage


class TrainData(NamedTuple):
    """Training points padded to a multiple of the chunk size, and test points.

    x (N, dx), t (N, dy), weight (N,) 1 for real points and 0 for padding;
    x_test (M, dx), t_test (M, dy).
    """

    x: jax.Array
    t: jax.Array
    weight: jax.Array
    x_test: jax.Array
    t_test: jax.Array


def prepare_data(x, t, x_test, t_test, chunk: int) -> tuple[TrainData, int]:
    """Pad the training set to a multiple of the chunk; returns (data, chunk used)."""
    for (xn, tn), (xa, ta), rows in ((("x", "t"), (x, t), "N"), (("x_test", "t_test"), (x_test, t_test), "M")):
        if jnp.ndim(xa) != 2 or jnp.ndim(ta) != 2 or jnp.shape(ta)[0] != jnp.shape(xa)[0]:
            raise UsageError(f"{xn} and {tn} must be ({rows}, n_in) and ({rows}, n_out), got shapes "
                             f"{jnp.shape(xa)} and {jnp.shape(ta)}")
    for name, a in (("x", x), ("t", t), ("x_test", x_test), ("t_test", t_test)):
        try:
            finite = bool(np.isfinite(np.asarray(a)).all())
        except jax.errors.TracerArrayConversionError:  # traced (inside jit): checked by whoever made it
            continue
        if not finite:  # would otherwise train to NaN and read as "diverged"
            raise UsageError(f"{name} holds non-finite values (NaN or inf); clean the data first")
    n = x.shape[0]
    chunk = min(chunk, n)
    extra = (-n) % chunk
    weight = jnp.concatenate([jnp.ones((n,), x.dtype), jnp.zeros((extra,), x.dtype)])
    x = jnp.concatenate([x, jnp.zeros((extra, x.shape[1]), x.dtype)])
    t = jnp.concatenate([t, jnp.zeros((extra, t.shape[1]), t.dtype)])
    return TrainData(x, t, weight, x_test, t_test), chunk


def selection(groups: tuple[Group, ...], layout: Layout | int, n_in: int | None = None,
              n_out: int | None = None) -> newton.Selection:
    """The Newton `Selection` for a set of parameter groups of a unit row `layout`
    (`models.Layout`; or the gated family's k with n_in and n_out)."""
    if not isinstance(layout, Layout):
        layout = gated_layout(layout, n_in, n_out)
    columns = sorted({c for grp in groups for c in layout.columns(grp)})
    linear = len(groups) == 1 and layout.linear(groups[0])  # y is linear in one such group
    with_d = layout.d_group in groups if layout.d_group is not None else set(groups) == set(layout.groups)
    return newton.Selection(tuple(columns), with_d=with_d, second_order=not linear)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))


def _where(pred, a, b):
    return jax.tree.map(lambda u, v: jnp.where(pred, u, v), a, b)


class _NewtonCarry(NamedTuple):
    params: Params
    step: jax.Array  # steps taken in the current stage
    damping_index: jax.Array
    status: jax.Array
    stopped: jax.Array  # the last step's line search failed
    decrement: jax.Array
    loss: jax.Array
    accepted: jax.Array
    stage: jax.Array  # index of the current stage (the masked schedule only)


def _newton_update(c: _NewtonCarry, data: TrainData, sel: newton.Selection, chunk: int,
                   free: jax.Array | None = None, batch_axis: str | None = None,
                   offset: jax.Array | None = None, ladder: linsolve.Ladder = linsolve.DEFAULT_LADDER,
                   admissible=None) -> tuple[_NewtonCarry, jax.Array]:
    """One Newton step on `sel` (and the run-time mask `free`, or column `offset`, and
    `admissible`, see `newton.newton_step`); returns (carry, failed)."""
    new, info = newton.newton_step(c.params, data.x, data.t, data.weight, sel, chunk,
                                   jnp.maximum(c.damping_index - 2, 0), free, batch_axis, offset, ladder,
                                   admissible)
    finite = _all_finite(new) & jnp.isfinite(info.loss)
    failed = info.alpha == 0
    return c._replace(
        params=_where(finite, new, c.params),
        step=c.step + 1,
        damping_index=jnp.where(finite, info.damping_index, c.damping_index),
        status=jnp.where(finite, c.status, DIVERGED),
        stopped=failed,
        decrement=info.decrement,
        loss=jnp.where(finite, info.loss, c.loss),
        accepted=c.accepted + (~failed & finite),
    ), failed


def _newton_stage(carry: _NewtonCarry, data: TrainData, sel: newton.Selection, steps: int, chunk: int,
                  batch_axis: str | None = None, offset: jax.Array | None = None,
                  ladder: linsolve.Ladder = linsolve.DEFAULT_LADDER, admissible=None,
                  free: jax.Array | None = None):
    """Up to `steps` steps on one selection (its columns shifted by a run-time `offset`,
    if given, or within a run-time mask `free`: `newton.newton_step`), compiled for its own
    (smaller) Hessian."""
    def cond(c):
        return (c.step < steps) & ~c.stopped & (c.status != DIVERGED)

    def body(c):
        return _newton_update(c, data, sel, chunk, free, batch_axis=batch_axis, offset=offset, ladder=ladder,
                              admissible=admissible)[0]

    carry = carry._replace(step=jnp.asarray(0), stopped=jnp.asarray(False))
    if steps == 1:  # no loop to compile for a single step
        return _where(cond(carry), body(carry), carry)
    return jax.lax.while_loop(cond, body, carry)


def _factor_stages(carry: _NewtonCarry, data: TrainData, first: int, count: int, chunk: int,
                   batch_axis: str | None = None, last: jax.Array | None = None) -> _NewtonCarry:
    """The spline stages {U_j, u_j} for j = first .. first + count - 1, one Newton step
    each, as `_newton_stage` runs them one after another, but in one loop around one
    compiled least-squares step whose columns move by (j - 1) (n_in + 1) at run time:
    the compile time of a GQU's or gated-K model's spline stages no longer grows with K,
    and the numbers are the same (`tests/test_train.py`).

    last: a run-time bound (an int array), for a model whose factors above `last` are
    constant padding (`train_batch(..., factors=)`): their stages are skipped."""
    params = carry.params
    k, dx, dy = params.n_factors, params.n_in, params.n_out
    sel = selection((factor(1),), k, dx, dy)
    width = dx + 1  # columns of one factor group in a packed unit row

    def body(j, c):
        return _newton_stage(c, data, sel, 1, chunk, batch_axis, offset=(j - 1) * width)

    if last is None:
        return jax.lax.fori_loop(first, first + count, body, carry)
    return jax.lax.fori_loop(first, jnp.clip(last + 1, first, first + count), body, carry)


def stage_masks(stages: list[Stage], layout: Layout | int, n_in: int, n_out: int, width: int) -> np.ndarray:
    """(len(stages), P) bool: which entries of the all-parameter flat vector (unit
    rows of width `width`, then d; see `newton.params_from_theta`) each stage moves.
    layout: the unit row's `models.Layout` (or the gated family's k)."""
    if not isinstance(layout, Layout):
        layout = gated_layout(layout, n_in, n_out)
    everything = selection(layout.groups, layout)
    p = layout.size
    assert everything.columns == tuple(range(p)), everything.columns
    rows = []
    for stage in stages:
        sel = selection(stage.groups, layout)
        unit = np.isin(np.arange(p), sel.columns)
        rows.append(np.concatenate([np.tile(unit, width), np.full(n_out, sel.with_d)]))
    return np.stack(rows)


def _newton_schedule(carry: _NewtonCarry, data: TrainData, stages: list[Stage], chunk: int,
                     ladder: linsolve.Ladder = linsolve.DEFAULT_LADDER):
    """All `stages` in one loop over steps: every step builds the all-parameter Hessian
    and a run-time mask picks the stage's entries.  One compiled Newton step instead of
    one per stage (half the compile time) at the price of a full-size Hessian for a
    single step such as the cascade's gate step.  Every step goes through J^T J, so
    `train_newton` runs the linear least-squares stages before it on their own (QR)."""
    params = carry.params
    layout = params.layout
    sel = selection(layout.groups, layout)
    free = jnp.asarray(stage_masks(stages, layout, params.n_in, params.n_out, params.width))
    hold = _edge_hold(params, data, sel)  # a 1D model's knots stay out of the edge gaps
    free = free & hold["free"] if hold else free
    admissible = hold.get("admissible")
    limits = jnp.asarray([stage.steps for stage in stages])

    def cond(c):
        return (c.stage < len(stages)) & (c.status != DIVERGED)

    def body(c):
        # under vmap, lanes that have finished (stage == len(stages)) still run the body,
        # with results thrown away: clamp their stage index rather than read past the end
        stage = jnp.minimum(c.stage, len(stages) - 1)
        c, failed = _newton_update(c, data, sel, chunk, free[stage], ladder=ladder, admissible=admissible)
        advance = failed | (c.step >= limits[stage])
        return c._replace(stage=c.stage + advance, step=jnp.where(advance, 0, c.step))

    return jax.lax.while_loop(cond, body, carry._replace(step=jnp.asarray(0), stage=jnp.asarray(0)))


def _initial_carry(params: Params, data: TrainData) -> _NewtonCarry:
    """The Newton loop's state before the first step (diverged at once if not finite)."""
    loss0 = newton.loss_fn(params, data.x, data.t, data.weight)
    return _NewtonCarry(
        params=params, step=jnp.asarray(0), damping_index=jnp.asarray(0),
        status=jnp.where(jnp.isfinite(loss0) & _all_finite(params), OK, DIVERGED),
        stopped=jnp.asarray(False), decrement=jnp.asarray(0.0, params.dtype), loss=loss0,
        accepted=jnp.asarray(0), stage=jnp.asarray(0),
    )


def data_chunk(data: TrainData, chunk: int) -> int:
    """The Newton chunk for `data`: min(chunk, N), which must divide the N training rows
    (`prepare_data` pads them to a multiple of the chunk it returns)."""
    n = data.x.shape[0]
    used = min(chunk, n)
    if n % used:
        raise UsageError(f"the training data have {n} rows, not a multiple of TrainConfig.chunk={chunk}; "
                         "train with the chunk prepare_data returned: dataclasses.replace(config, chunk=chunk)")
    return used


def _factor_run(stages: list[Stage], gated: bool = True) -> tuple[int, int]:
    """(j, count): the leading `stages` are single steps on the gated family's factor j,
    j + 1, ..., count of them (count 0 if the first is not one, or not `gated`)."""
    first, count = 0, 0
    if not gated:
        return first, count
    for stage in stages:
        group = stage.groups[0] if stage.steps == 1 and len(stage.groups) == 1 else None
        if group is None or group.kind != "factor" or (count and group.index != first + count):
            break
        first = first or group.index
        count += 1
    return first, count


def _check_factors(config: TrainConfig, factors) -> None:
    if factors is not None and not config.splines_only:
        raise ValueError(f"factors= (constant padding factors) needs optimizer 'newton-splines', whose stages "
                         f"leave them alone; got {config.optimizer!r}")


def train_newton(params: Params, data: TrainData, config: TrainConfig, batch_axis: str | None = None,
                 factors: jax.Array | None = None,
                 ladder: linsolve.Ladder = linsolve.DEFAULT_LADDER) -> tuple[Params, dict]:
    """Run a Newton schedule on one model. Returns (params, info) with scalar info: status,
    loss, steps (accepted Newton steps), knot_moves and knots (`_knot_stage`; -1: no knot stage).

    batch_axis: the name of the `jax.vmap` axis over models this runs under, if any; the
    models of the batch then skip the rank-deficient least-squares fallback together when
    none of them needs it (`linsolve.least_squares_direction`).  Results do not depend on it.
    factors: the number of factor groups the model really has (an int array <= k), for
    a model padded with constant factors (`models.with_constant_factors`); their stages are
    skipped.  `newton-splines` only (every other schedule would train them).
    """
    layout = params.layout
    _check_factors(config, factors)
    chunk = data_chunk(data, config.chunk)
    carry = _initial_carry(params, data)
    loss0 = carry.loss
    stages = config.stages(layout)
    # The leading single steps that are linear least squares (the spline stages), and the knot
    # moves (which solve them again), run on their own columns (the factor groups' in one
    # loop, `_factor_stages`), solved by QR of J: the masked all-parameter loop would solve
    # them through J^T J, whose Cholesky squares J's condition number and left wide GQUs of
    # newton-cascade up to 3x worse than newton-splines after the same stages.
    lead = 0
    while lead < len(stages) and (stages[lead].kind == "knots" or (
            stages[lead].steps == 1 and not selection(stages[lead].groups, layout).second_order)):
        lead += 1
    rest = stages[lead:]
    separate = stages[:lead] if any(stage.steps > 1 for stage in rest) else stages
    carry, knot_info = _separate_stages(carry, data, separate, layout, chunk, batch_axis, factors, ladder,
                                        isinstance(params, Params))
    if len(separate) < len(stages):  # newton-cascade, newton: one loop, one compiled step for the rest
        carry = _newton_schedule(carry, data, rest, chunk, ladder)
    stalled = (carry.stopped & (carry.decrement > STALL_RATIO * carry.loss)) | ~(carry.loss < loss0)
    status = jnp.where((carry.status == OK) & stalled, STALLED, carry.status)
    return carry.params, {"status": status, "loss": carry.loss, "steps": carry.accepted, **knot_info}


def _separate_stages(carry: _NewtonCarry, data: TrainData, stages: list[Stage], layout: Layout, chunk: int,
                     batch_axis: str | None, factors: jax.Array | None, ladder: linsolve.Ladder,
                     gated: bool) -> tuple[_NewtonCarry, dict]:
    """Run `stages` one after another, each compiled for its own columns (the gated family's
    factor stages in one loop, `_factor_stages`; a knot stage as `_knot_stage`).
    Returns (carry, knot info: `knot_moves` and `knots`, an index into `knots.KNOT_OUTCOMES`
    or -1 without a knot stage)."""
    knot_info = _NO_KNOT_STAGE
    i = 0
    while i < len(stages):
        first, count = _factor_run(stages[i:], gated)
        if count >= 2 or (count and factors is not None):  # {U_1, u_1}, {U_2, u_2}, ...: one step in a loop
            carry = _factor_stages(carry, data, first, count, chunk, batch_axis, factors)
            i += count
            continue
        stage = stages[i]
        if stage.kind == "knots":
            carry, knot_info = _knot_stage(carry, data, stage.steps, layout, chunk, batch_axis, ladder, gated)
        else:
            sel = selection(stage.groups, layout)
            carry = _newton_stage(carry, data, sel, stage.steps, chunk, batch_axis, ladder=ladder,
                                  **_edge_hold(carry.params, data, sel))
        i += 1
    return carry, knot_info


def _edge_hold(params, data: TrainData, sel: newton.Selection) -> dict:
    """What keeps a 1D model's second-order steps from moving knots into the edge gaps:
    `newton_step`'s `admissible` (`knots.edge_guard`) and `free` (`knots.movable_gates` on
    `sel`'s flat vector); {} for a linear selection or a model without knots."""
    if not (sel.second_order and params.layout.knots):
        return {}
    x, weight = data.x[:, 0], data.weight
    free = newton._flatten(knots.movable_gates(params, x, weight), jnp.ones((params.n_out,), bool), sel)
    return {"admissible": knots.edge_guard(params, x, weight), "free": free}


def _knot_stage(carry: _NewtonCarry, data: TrainData, rounds: int, layout: Layout, chunk: int,
                batch_axis: str | None, ladder: linsolve.Ladder, gated: bool) -> tuple[_NewtonCarry, dict]:
    """Up to `rounds` knot moves of a 1D model (`knots.knot_stage`), each followed by the
    spline stages on the layout's cascade.  Returns (carry, {"knot_moves": moves kept,
    "knots": outcome, an index into `knots.KNOT_OUTCOMES`})."""
    solve = [Stage((group,), 1) for group in layout.cascade]

    def resolve(c):
        return _separate_stages(c, data, solve, layout, chunk, batch_axis, None, ladder, gated)[0]

    carry, moves, outcome = knots.knot_stage(
        carry, data.x[:, 0], data.t, data.weight, layout.degree, rounds, resolve,
        better=lambda trial, c: (trial.status != DIVERGED) & (trial.loss < c.loss),
        going=lambda c: c.status != DIVERGED)
    return carry, {"knot_moves": moves, "knots": outcome}


def train_first_order(params: Params, data: TrainData, config: TrainConfig) -> tuple[Params, dict]:
    """Full-batch optax training of one model on the packed unit rows and d."""
    mask = params.mask[:, None]

    def loss_of(theta):
        rows, d = theta
        return newton.loss_fn(params.with_rows(rows, d), data.x, data.t, data.weight)

    method = FIRST_ORDER[config.optimizer]
    tx = method.transform(config.lr)
    theta0 = (params.rows(), params.d)
    value_and_grad = optax.value_and_grad_from_state(loss_of) if method.needs_value \
        else jax.value_and_grad(loss_of)
    loss0 = loss_of(theta0)

    def body(i, carry):
        theta, state, status, loss = carry
        if method.needs_value:
            value, grad = value_and_grad(theta, state=state)
            updates, new_state = tx.update(grad, state, theta, value=value, grad=grad, value_fn=loss_of)
        else:
            value, grad = value_and_grad(theta)
            updates, new_state = tx.update(grad, state, theta)
        updates = (updates[0] * mask, updates[1])
        new = optax.apply_updates(theta, updates)
        finite = jnp.isfinite(value) & _all_finite(new) & (status != DIVERGED)
        keep = finite | (status == DIVERGED)
        theta = _where(finite, new, theta)
        state = _where(finite, new_state, state)
        status = jnp.where(keep, status, DIVERGED)
        loss = jnp.where(jnp.isfinite(value) & (status != DIVERGED), value, loss)
        return theta, state, status, loss

    status0 = jnp.where(jnp.isfinite(loss0), OK, DIVERGED)
    theta, _, status, _ = jax.lax.fori_loop(0, config.n_steps, body, (theta0, tx.init(theta0), status0, loss0))
    final = loss_of(theta)
    final = jnp.where(jnp.isfinite(final), final, loss0)
    status = jnp.where((status == OK) & ~(final < loss0), STALLED, status)
    params = params.with_rows(*theta)
    return params, {"status": status, "loss": final, "steps": jnp.asarray(config.n_steps)}


def rmse(params: Params, x: jax.Array, t: jax.Array, weight: jax.Array | None = None) -> jax.Array:
    """Root-mean-square error over points (and outputs); weight (N,) excludes padding."""
    r2 = jnp.mean((newton.apply_params(params, x) - t) ** 2, axis=1)
    if weight is None:
        return jnp.sqrt(jnp.mean(r2))
    return jnp.sqrt(jnp.sum(weight * r2) / jnp.sum(weight))


def train_one(params: Params, data: TrainData, config: TrainConfig, batch_axis: str | None = None,
              factors: jax.Array | None = None,
              ladder: linsolve.Ladder = linsolve.DEFAULT_LADDER) -> tuple[Params, dict]:
    """Train one model; info has status, loss, steps, knot_moves, knots (`train_newton`),
    train_rmse, test_rmse (scalars).
    batch_axis, factors: as `train_newton`."""
    _check_factors(config, factors)
    if config.newton:
        params, info = train_newton(params, data, config, batch_axis, factors, ladder)
    else:
        params, info = train_first_order(params, data, config)
        info.update(_NO_KNOT_STAGE)
    info["train_rmse"] = rmse(params, data.x, data.t, data.weight)
    info["test_rmse"] = rmse(params, data.x_test, data.t_test)
    return params, info


@compilation.jit_with(static_argnames=("config", "batch_size", "mesh", "ladder"))
def train_batch(params: Params, data: TrainData, config: TrainConfig, batch_size: int | None = None,
                mesh: jax.sharding.Mesh | None = None, factors: jax.Array | None = None,
                ladder: linsolve.Ladder = linsolve.DEFAULT_LADDER):
    """Train a batch of models (leading axis B on every Params leaf) in one compiled call.

    Models are vmapped in groups of `batch_size` (None: all of a device's models at
    once) and the groups run one after another (`jax.lax.map`), which bounds memory.
    With a `mesh` of several devices (one axis, see `distributed.make_mesh`) the
    batch is padded to a multiple of devices x batch_size (`distributed.padded_size`), device j
    trains the j-th contiguous block of models (`jax.shard_map`) and the results are
    gathered onto every device; `params` and `data` should then be replicated on the
    mesh (`distributed.replicate`).  With no mesh (or one device) nothing is sharded.
    factors: optional (B,) ints, each model's own number of factor groups when the
    batch is padded with constant factors (`models.with_constant_factors`), so that
    mlp, glu and gqu models share one compiled `newton-splines` program (`train_newton`).
    Returns (params (B, ...), info with (B,) arrays).
    """
    n_models = params.mask.shape[0]
    n_devices = 1 if mesh is None else mesh.size
    n_total, batch = distributed.padded_size(n_models, n_devices, batch_size)
    # lax.map reshapes every leaf into (groups, batch, ...), which zero-size leaves
    # (U and u of an MLP) do not survive: carry only the non-empty ones through it.
    leaves, treedef = jax.tree.flatten(distributed.pad_models(params, n_total))
    empty = [leaf.size == 0 for leaf in leaves]

    def rebuild(nonempty, batch_shape):
        it = iter(nonempty)
        return treedef.unflatten([
            jnp.zeros((*batch_shape, *leaf.shape[1:]), leaf.dtype) if e else next(it)
            for leaf, e in zip(leaves, empty)])

    def one(nonempty, data):
        own = None if factors is None else nonempty[-1]
        nonempty = nonempty if factors is None else nonempty[:-1]
        trained, info = train_one(rebuild(nonempty, ()), data, config, MODELS_AXIS, own, ladder)
        return [leaf for leaf in jax.tree.leaves(trained) if leaf.size], info

    def local(inputs, data):  # the models of one device, `batch` at a time (a whole number of groups)
        grouped = jax.tree.map(lambda a: a.reshape(-1, batch, *a.shape[1:]), inputs)
        group = jax.vmap(lambda x: one(x, data), axis_name=MODELS_AXIS)
        return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), jax.lax.map(group, grouped))

    inputs = [leaf for leaf, e in zip(leaves, empty) if not e]
    if factors is not None:  # padding models have none
        inputs.append(jnp.pad(jnp.asarray(factors), (0, n_total - n_models)))
    if n_devices == 1:
        nonempty, info = local(inputs, data)
    else:
        spec = jax.sharding.PartitionSpec
        axis = mesh.axis_names[0]

        def sharded(inputs, data):
            return jax.lax.all_gather(local(inputs, data), axis, tiled=True)

        # check_vma=False: the per-model loops start from constants (unvarying) and carry
        # values that vary over devices; each device's work is independent, so no check is needed
        nonempty, info = jax.shard_map(sharded, mesh=mesh, in_specs=(spec(axis), spec()),
                                       out_specs=spec(), check_vma=False)(inputs, data)
    nonempty, info = jax.tree.map(lambda a: a[:n_models], (nonempty, info))
    return rebuild(nonempty, (n_models,)), info


