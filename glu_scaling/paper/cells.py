"""The numbers behind the illustrative figures: small random and trained models, which
units are open where, the cells they cut the input into, their boundaries and knots,
and each unit's contribution (checked directly by the tests)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from glu_scaling import compilation, inits, models, problems, schedules, train
from glu_scaling.errors import UsageError, check_choice, check_positive_int

BOX = (-1.0, 1.0)  # the square [-1, 1]^2 of the 2D figures, and the 1D interval


@functools.partial(jax.jit, static_argnames=("arch", "n_in", "width", "dtype"))
def _random_init(key, arch: str, n_in: int, width: int, dtype=None) -> models.Params:
    """`inits.init` with N(0, 1) gates (no spline init) and one output, compiled once
    (eager init dispatches dozens of small ops, each compiled on first use)."""
    return inits.init(key, arch, n_in, width, 1, spline_init=False, dtype=dtype)


def random_2d_models(seed: int = 0, width: int = 8, dtype=None) -> tuple[models.Params, models.Params]:
    """A random-init (all parameters N(0, 1), no spline init) GLU on R^2 -> R, and the
    MLP with the same gates G, g and outputs D, d (the GLU without its factor U x + u).

    Sharing the gates gives both models the same activation cells, so the figures
    compare piecewise linear with piecewise quadratic on identical cells.
    Returns (mlp, glu).
    """
    width = check_positive_int("width", width)
    glu = _random_init(jax.random.PRNGKey(seed), "glu", 2, width, dtype)
    mlp = glu.replace(U=glu.U[:0], u=glu.u[:0])
    return mlp, glu


def random_units_1d(seed: int = 0, n_units: int = 4, knot_range=(-1.2, 1.2), dtype=None) -> models.Params:
    """`n_units` random-init (N(0, 1)) 1D GLU units whose knot -g_i/G_i lies in knot_range,
    the first such among 64 drawn from fold_in(PRNGKey(seed), 1); a width-n_units Params."""
    pool = _random_init(jax.random.fold_in(jax.random.PRNGKey(seed), 1), "glu", 1, 64, dtype)
    G, g = np.asarray(pool.G)[:, 0], np.asarray(pool.g)
    with np.errstate(divide="ignore", invalid="ignore"):
        knots = -g / G
    keep = np.flatnonzero((G != 0) & (knots > knot_range[0]) & (knots < knot_range[1]))[:n_units]
    if keep.size < n_units:
        raise UsageError(f"only {keep.size} of 64 random units have a knot in {knot_range}")
    return pool.replace(G=pool.G[keep], g=pool.g[keep], U=pool.U[:, keep], u=pool.u[:, keep], D=pool.D[keep],
                        mask=pool.mask[keep])


def activation_pattern(params: models.Params, x) -> np.ndarray:
    """Which real units' ReLU gates are open (G_i . x + g_i > 0) at each point; x (N, dx) -> (N, W) bool."""
    x = jnp.asarray(x, params.G.dtype)
    return np.asarray(inits.open_mask(params.G, params.g, x)) & (np.asarray(params.mask) > 0)


def cell_labels(params: models.Params, x) -> np.ndarray:
    """Activation cell of each point as an integer label, 0 the cell holding most points,
    1 the next, ...; points share a label iff they share an activation pattern.  (N,) ints."""
    pattern = activation_pattern(params, x)
    _, inverse, counts = np.unique(pattern, axis=0, return_inverse=True, return_counts=True)
    rank = np.empty_like(counts)
    rank[np.argsort(-counts, kind="stable")] = np.arange(counts.size)
    return rank[inverse.reshape(-1)]


def _clip_line(w: np.ndarray, b: float, box=BOX) -> np.ndarray | None:
    """Segment of the line w . x + b = 0 (x in R^2) inside [lo, hi]^2: (2, 2) endpoints, or None."""
    lo, hi = box
    if not np.any(w):
        return None
    points = []
    for axis in (0, 1):
        other = 1 - axis
        if w[other] == 0:
            continue
        for edge in (lo, hi):  # x[axis] = edge, solve for x[other]
            value = -(b + w[axis] * edge) / w[other]
            if lo <= value <= hi:
                p = np.empty(2)
                p[axis], p[other] = edge, value
                points.append(p)
    if not points:
        return None
    points = np.unique(np.round(np.array(points), 14), axis=0)
    if len(points) < 2:
        return None  # the line only touches a corner
    direction = np.array([-w[1], w[0]])
    along = points @ direction
    return np.stack([points[np.argmin(along)], points[np.argmax(along)]])


def activation_boundaries(params: models.Params, box=BOX) -> dict[int, np.ndarray]:
    """Each real unit's activation boundary G_i . x + g_i = 0 clipped to the square box^2 (dx = 2).

    Returns {unit index: (2, 2) array of the segment's endpoints}; units whose line
    misses the square (open or closed on all of it) are absent.
    """
    return _segments(np.asarray(params.G), np.asarray(params.g), np.asarray(params.mask), box)


def factor_boundaries(params: models.Params, box=BOX) -> dict[int, np.ndarray]:
    """Where each real GLU unit's linear factor U_i . x + u_i vanishes, clipped to box^2 (dx = 2, k >= 1)."""
    return _segments(np.asarray(params.U[0]), np.asarray(params.u[0]), np.asarray(params.mask), box)


def _segments(W: np.ndarray, b: np.ndarray, mask: np.ndarray, box) -> dict[int, np.ndarray]:
    if W.shape[-1] != 2:
        raise UsageError(f"boundaries are drawn for 2D inputs only, got n_in={W.shape[-1]}")
    out = {}
    for i in range(W.shape[0]):
        if mask[i] > 0:
            seg = _clip_line(W[i], float(b[i]), box)
            if seg is not None:
                out[i] = seg
    return out


def cell_knots(params: models.Params) -> np.ndarray:
    """Knots t_i = -g_i / G_i of a 1D model's real units with G_i != 0, sorted; the
    cell boundaries of the piecewise polynomial (some may lie outside the data interval)."""
    if params.n_in != 1:
        raise UsageError(f"cell_knots needs a 1D model, got n_in={params.n_in}")
    G, g, mask = np.asarray(params.G)[:, 0], np.asarray(params.g), np.asarray(params.mask)
    keep = (mask > 0) & (G != 0)
    return np.sort(-g[keep] / G[keep])


def unit_contributions(params: models.Params, x) -> np.ndarray:
    """Each unit's share D_i * hidden_i(x) of the output; x (N, dx) -> (N, W, dy).
    Summed over units and added to d it gives `apply`."""
    x = jnp.asarray(x, params.G.dtype)
    return np.asarray(models.hidden(params, x))[:, :, None] * np.asarray(params.D)[None]


def open_counts(G, g, x) -> np.ndarray:
    """How many ReLU gates are open at each point; G (n, dx), g (n,), x (N, dx) -> (N,) ints."""
    G = jnp.asarray(G)
    return np.asarray(inits.open_mask(G, jnp.asarray(g, G.dtype), jnp.asarray(x, G.dtype))).sum(axis=1)


def dead_units(G, g, box=BOX) -> np.ndarray:
    """Units whose ReLU gate is closed everywhere on the box [lo, hi]^dx (indices, sorted).

    G_i . x + g_i is linear, so its maximum over the box is
    g_i + sum_j max(G_ij lo, G_ij hi); the unit is dead there iff that is <= 0.
    """
    lo, hi = box
    G, g = np.asarray(G, float), np.asarray(g, float)
    peak = g + np.maximum(G * lo, G * hi).sum(axis=1)
    return np.flatnonzero(peak <= 0)


def facing_gates(n: int = 6, facing: str = "alternate", dtype=None) -> tuple[jax.Array, jax.Array]:
    """1D spline-init gates (`inits.spline_gates`, the reference's knots) with the given facing."""
    check_choice("facing", facing, inits.FACINGS)
    dtype = models.default_float() if dtype is None else dtype
    return inits.spline_gates(jax.random.PRNGKey(0), check_positive_int("n", n), 1, facing=facing,
                                    dtype=dtype)


def require_x64(what: str) -> None:
    if not jax.config.jax_enable_x64:
        raise UsageError(f"{what} trains with Newton's method in float64 and needs jax_enable_x64; "
                         "call jax.config.update('jax_enable_x64', True) first (the glu-scaling CLI does)")


def fig2_models(seed: int = 0, *, n: int = 6, steps: int = 100, n_train: int = 2000,
                problem: str = "paper_1d") -> dict[tuple[str, str], tuple[models.Params, dict]]:
    """Train the models of Fig. 2: an n-unit MLP and GLU (spline init, seed `seed`) on
    `problem`, once with gates frozen ("newton-splines") and once fully
    ("newton-cascade" with `steps` all-parameter steps).  Needs float64.

    Returns {(arch, optimizer): (params, info)} with info's values as Python scalars.
    """
    require_x64("fig2")
    ds = problems.make_dataset(problem, n_train=n_train, seed=seed)
    data, chunk = train.prepare_data(ds.x_train, ds.y_train, ds.x_test, ds.y_test, 2048)
    out = {}
    for arch in ("mlp", "glu"):
        init = inits.init(jax.random.PRNGKey(seed), arch, 1, n, 1)
        for optimizer in FIG2_STAGES:
            config = schedules.TrainConfig(optimizer, steps=steps, chunk=chunk)
            params, info = _train_one(init, data, config)
            info = {key: (train.STATUSES[int(v)] if key == "status" else float(v)) for key, v in info.items()}
            out[arch, optimizer] = (params, info)
    return out


_train_one = compilation.jit(train.train_one, static_argnames=("config",))


FIG2_STAGES = ("newton-splines", "newton-cascade")
