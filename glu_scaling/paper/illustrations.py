"""The paper's illustrative figures, the ones that need no width sweep (paper.md §7).

Each `figN(out_dir, *, seed=0, ...)` draws one figure, writes `figN_<name>.png` and
`.pdf` into `out_dir` (created if missing) and returns the two paths:

* `fig1`  -> fig1_random_2d:          random MLP vs GLU on [-1,1]^2 with activation
  boundaries, a 1D slice through both, and single GLU units in 1D.
* `fig2`  -> fig2_six_units_1d:       6-unit MLP and GLU on `paper_1d`: gates frozen at
  the spline init, full training, and each unit's contribution, with cell boundaries.
* `fig8`  -> fig8_spline_init_facing: spline-init gate activations in 1D, same-facing
  vs alternating, with the number of open units at each x.
* `fig9`  -> fig9_mlp_surface:        the random MLP of Fig. 1 as a map and a surface.
* `fig10` -> fig10_glu_surface:       the random GLU of Fig. 1 (same gates) likewise.
* `fig11` -> fig11_unit_activations:  per-unit activations of both, unit by unit.

`all_illustrations(out_dir, *, seed=0)` draws them all.  The numbers behind the
pictures come from `glu_scaling.paper.cells`, which the tests check directly.

Fig. 2 trains with Newton's method and needs float64: it raises `UsageError` unless
jax_enable_x64 is on (the glu-scaling CLI turns it on; library code leaves the
global setting alone).  The other figures work in either precision.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from glu_scaling import models, plots, problems
from glu_scaling.errors import check_positive_int
from glu_scaling.paper.cells import (
    BOX,
    FIG2_STAGES,
    activation_boundaries,
    cell_knots,
    dead_units,
    facing_gates,
    factor_boundaries,
    fig2_models,
    open_counts,
    random_2d_models,
    random_units_1d,
    require_x64,
    unit_contributions,
)

STEMS = {
    "fig1": "fig1_random_2d",
    "fig2": "fig2_six_units_1d",
    "fig8": "fig8_spline_init_facing",
    "fig9": "fig9_mlp_surface",
    "fig10": "fig10_glu_surface",
    "fig11": "fig11_unit_activations",
}
PANEL = 3.1  # inches per panel (the paper's 3 x 3 inch panels, plus room for labels)
SURFACE_CMAP = "cividis"  # sequential, colour-blind safe
SIGNED_CMAP = "PuOr_r"  # diverging, colour-blind safe
ARCH_LABEL = {"mlp": "MLP", "glu": "GLU"}
BOUNDARY_COLOR = plots.PALETTE[1]  # vermillion
INK = plots.PALETTE[7]  # black

# ------------------------------------------------------------------ numbers behind the figures


# ------------------------------------------------------------------ drawing helpers


@contextlib.contextmanager
def _figure(*args, **kwargs):
    """plt.subplots inside an rc context with every font at least 8 pt; closes the figure."""
    plt = plots._mpl()
    with plt.rc_context({"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 8,
                         "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.titlesize": 9}):
        fig = plt.figure(*args, **kwargs)
        try:
            yield fig
        finally:
            plt.close(fig)


def _save(fig, out_dir, key: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return plots.save(fig, out_dir / STEMS[key])


def _grid_2d(n: int = 241, box=BOX):
    s = np.linspace(box[0], box[1], n)
    X1, X2 = np.meshgrid(s, s)
    return X1, X2, np.stack([X1.ravel(), X2.ravel()], axis=1)


def _evaluate(arch: str, params: models.Params, x: np.ndarray) -> np.ndarray:
    return np.asarray(models.apply(arch, params, jnp.asarray(x, params.G.dtype)))[:, 0]


def _draw_segments(ax, segments: dict[int, np.ndarray], *, color, ls="-", lw=1.3, label=None, numbers=True):
    for j, (i, seg) in enumerate(sorted(segments.items())):
        ax.plot(seg[:, 0], seg[:, 1], color=color, ls=ls, lw=lw, label=label if j == 0 else None)
        if numbers:  # unit numbers spread along the segments (golden-ratio steps) so they rarely collide
            p = seg[0] + (0.12 + 0.76 * ((0.15 + 0.618 * i) % 1.0)) * (seg[1] - seg[0])
            ax.text(p[0], p[1], str(i), fontsize=8, ha="center", va="center", color=INK,
                    bbox={"boxstyle": "round,pad=0.12", "fc": "white", "ec": color, "lw": 0.6})


def _square(ax, box=BOX):
    ax.set_xlim(*box)
    ax.set_ylim(*box)
    ax.set_aspect("equal")
    ticks = np.linspace(box[0], box[1], 5)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")


def _surface_map(fig, ax, arch: str, params: models.Params, *, title: str, colorbar=True, slice_at=None):
    """Output of a 2D model as an image, with iso-lines and the activation boundaries."""
    X1, X2, x = _grid_2d()
    y = _evaluate(arch, params, x).reshape(X1.shape)
    im = ax.imshow(y, extent=(*BOX, *BOX), origin="lower", cmap=SURFACE_CMAP, interpolation="bilinear")
    ax.contour(X1, X2, y, levels=14, colors="white", linewidths=0.45, alpha=0.8)
    _draw_segments(ax, activation_boundaries(params), color=BOUNDARY_COLOR, label="unit boundary $G_i x + g_i = 0$")
    if slice_at is not None:
        ax.axhline(slice_at, color=INK, ls=":", lw=1.0, label=f"slice $x_2 = {slice_at:g}$")
    _square(ax)
    ax.set_title(title)
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="output y")
    return im


# ------------------------------------------------------------------ figures


def fig1(out_dir, *, seed: int = 0, width: int = 8) -> list[Path]:
    """Fig. 1: a random-init MLP and GLU on [-1,1]^2 sharing their gates (so their
    activation cells), a slice x2 = 0 through both, and single random GLU units in 1D."""
    mlp, glu = random_2d_models(seed, width)
    slice_at = 0.0
    with _figure(figsize=(2 * PANEL + 0.8, 2 * PANEL + 0.4)) as fig:
        axes = fig.subplots(2, 2)
        for ax, arch, params, tag in ((axes[0, 0], "mlp", mlp, "(a)"), (axes[0, 1], "glu", glu, "(b)")):
            shape = "linear" if arch == "mlp" else "quadratic"
            _surface_map(fig, ax, arch, params, slice_at=slice_at,
                         title=f"{tag} random {ARCH_LABEL[arch]}, width {width}: piecewise {shape}")
        axes[0, 0].legend(loc="lower left", framealpha=0.85, fontsize=8)

        ax = axes[1, 0]
        s = np.linspace(*BOX, 801)
        x = np.stack([s, np.full_like(s, slice_at)], axis=1)
        for i, (arch, params) in enumerate((("mlp", mlp), ("glu", glu))):
            ax.plot(s, _evaluate(arch, params, x), color=plots.PALETTE[2 * i], lw=1.4, label=ARCH_LABEL[arch])
        G, g = np.asarray(glu.G), np.asarray(glu.g)
        crossings = sorted(-g[i] / G[i, 0] for i in range(width) if G[i, 0] != 0 and BOX[0] < -g[i] / G[i, 0] < BOX[1])
        for j, c in enumerate(crossings):
            ax.axvline(c, color=BOUNDARY_COLOR, lw=0.8, ls="--", label="unit boundary" if j == 0 else None)
        ax.set_xlim(*BOX)
        ax.set_xlabel("$x_1$ (at $x_2 = 0$)")
        ax.set_ylabel("output y")
        ax.set_title("(c) slice $x_2 = 0$: kinks at the boundaries;\nMLP straight between them, GLU curved")
        ax.legend(loc="best", frameon=False)

        ax = axes[1, 1]
        units = random_units_1d(seed)
        s = np.linspace(-2.0, 2.0, 801)
        h = np.asarray(models.hidden(units, jnp.asarray(s[:, None], units.G.dtype)))
        knots = -np.asarray(units.g) / np.asarray(units.G)[:, 0]
        for i in range(h.shape[1]):
            color = plots.PALETTE[i]
            ax.plot(s, h[:, i], color=color, lw=1.4, label=f"unit {i}")
            if s[0] < knots[i] < s[-1]:
                ax.plot([knots[i]], [0.0], marker="o", ms=4, color=color, mec=INK, mew=0.5)
        ax.axhline(0, color=INK, lw=0.5)
        ax.set_xlim(s[0], s[-1])
        ax.set_xlabel("x")
        ax.set_ylabel(r"relu$(Gx+g)\,(Ux+u)$")
        ax.set_title("(d) single random GLU units in 1D: zero on the\nclosed side, a quadratic on the open (dot: knot)")
        ax.legend(loc="best", frameon=False)
        fig.tight_layout()
        return _save(fig, out_dir, "fig1")


def _surface_figure(out_dir, key: str, arch: str, params: models.Params, seed: int) -> list[Path]:
    """Two panels: the output map with boundaries, and the output as a 3D surface with
    the boundaries lifted onto it (the creases between cells)."""
    shape = "linear" if arch == "mlp" else "quadratic"
    name = ARCH_LABEL[arch]
    with _figure(figsize=(2 * PANEL + 0.9, PANEL + 0.3)) as fig:
        ax = fig.add_subplot(1, 2, 1)
        contours = "straight" if arch == "mlp" else "curved (conics)"
        _surface_map(fig, ax, arch, params,
                     title=f"(a) random {name} (seed {seed}), width {params.width}:\n"
                           f"iso-lines {contours} inside each cell")
        ax.legend(loc="lower left", framealpha=0.85, fontsize=8)
        ax3 = fig.add_subplot(1, 2, 2, projection="3d", computed_zorder=False)
        X1, X2, x = _grid_2d(45)
        y = _evaluate(arch, params, x).reshape(X1.shape)
        ax3.plot_surface(X1, X2, y, cmap=SURFACE_CMAP, linewidth=0, antialiased=True, rstride=1, cstride=1,
                         zorder=1)
        for seg in activation_boundaries(params).values():
            t = np.linspace(0, 1, 100)[:, None]
            pts = seg[0] + t * (seg[1] - seg[0])
            ax3.plot(pts[:, 0], pts[:, 1], _evaluate(arch, params, pts), color=BOUNDARY_COLOR, lw=1.1,
                     zorder=2)
        ax3.set_xlabel("$x_1$", labelpad=-4)
        ax3.set_ylabel("$x_2$", labelpad=-4)
        ax3.tick_params(pad=-2)
        ax3.view_init(elev=28, azim=-125)
        ax3.set_title(f"(b) the same {name}, output y as a surface:\npiecewise {shape}, creases on the boundaries")
        fig.tight_layout()
        return _save(fig, out_dir, key)


def fig9(out_dir, *, seed: int = 0, width: int = 8) -> list[Path]:
    """Fig. 9: the random MLP of Fig. 1 (map with boundaries, and 3D surface): piecewise linear."""
    mlp, _ = random_2d_models(seed, width)
    return _surface_figure(out_dir, "fig9", "mlp", mlp, seed)


def fig10(out_dir, *, seed: int = 0, width: int = 8) -> list[Path]:
    """Fig. 10: the random GLU of Fig. 1 (same gates as Fig. 9's MLP): piecewise quadratic."""
    _, glu = random_2d_models(seed, width)
    return _surface_figure(out_dir, "fig10", "glu", glu, seed)


def fig11(out_dir, *, seed: int = 0, width: int = 8, n_units: int = 4) -> list[Path]:
    """Fig. 11: per-unit activations hidden_i(x) on [-1,1]^2 of the first `n_units` units
    whose boundary crosses the square: MLP relu(G_i x + g_i) (a ramp) above, GLU
    relu(G_i x + g_i)(U_i x + u_i) (a quadratic on the open side) below."""
    mlp, glu = random_2d_models(seed, width)
    bounds = activation_boundaries(glu)
    units = sorted(bounds)[:n_units] or list(range(min(n_units, width)))
    factors = factor_boundaries(glu)
    X1, X2, x = _grid_2d(161)
    with _figure(figsize=(len(units) * 2.6 + 0.8, 2 * 2.75 + 0.6), layout="constrained") as fig:
        fig.get_layout_engine().set(wspace=0.06)
        axes = fig.subplots(2, len(units), squeeze=False, sharex=True, sharey=True)
        for row, (arch, params) in enumerate((("mlp", mlp), ("glu", glu))):
            h = np.asarray(models.hidden(params, jnp.asarray(x, params.G.dtype)))[:, units]
            vmax = float(np.max(np.abs(h))) or 1.0
            for col, i in enumerate(units):
                ax = axes[row, col]
                im = ax.imshow(h[:, col].reshape(X1.shape), extent=(*BOX, *BOX), origin="lower", cmap=SIGNED_CMAP,
                               vmin=-vmax, vmax=vmax, interpolation="bilinear")
                _draw_segments(ax, {i: bounds[i]} if i in bounds else {}, color=INK, lw=1.5,
                               label="gate boundary $G_i x + g_i = 0$", numbers=False)
                if arch == "glu" and i in factors:
                    _draw_segments(ax, {i: factors[i]}, color=plots.PALETTE[2], ls=(0, (2, 1.5)), lw=1.6,
                                   label="factor zero $U_i x + u_i = 0$", numbers=False)
                _square(ax)
                ax.label_outer()
                ax.set_title(f"({'abcdefghijklmnop'[row * len(units) + col]}) {ARCH_LABEL[arch]} unit {i}")
            formula = "relu$(G_i x+g_i)$" if arch == "mlp" else "relu$(G_i x+g_i)\\,(U_i x+u_i)$"
            fig.colorbar(im, ax=list(axes[row]), fraction=0.03, pad=0.02, label=f"{ARCH_LABEL[arch]}: {formula}")
        handles, labels = [], []
        for ax in axes[1]:
            for hd, lb in zip(*ax.get_legend_handles_labels()):
                if lb not in labels:
                    handles.append(hd)
                    labels.append(lb)
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), frameon=False, fontsize=8)
        fig.suptitle(f"Per-unit activations $h_i(x)$ of the random width-{width} MLP (top) and GLU (bottom) "
                     "of Fig. 1, same gates: a ramp vs a ramp times a linear factor")
        return _save(fig, out_dir, "fig11")


def fig2(out_dir, *, seed: int = 0, steps: int = 100, trained=None) -> list[Path]:
    """Fig. 2: a 6-unit MLP (top) and GLU (bottom) on paper_1d, 1/(1 + cos^2(pi x)):
    (a/d) gates frozen at the spline init (newton-splines), (b/e) full training
    (newton-cascade, `steps` all-parameter steps), (c/f) each unit's contribution
    D_i h_i(x) after full training.  Vertical lines: cell boundaries (the knots
    -g_i/G_i).  `trained`: the output of `fig2_models` (trained here if None).
    Needs jax_enable_x64."""
    require_x64("fig2")
    trained = fig2_models(seed, steps=steps) if trained is None else trained
    f = problems.scalar_target("paper_1d")
    s = np.linspace(-1.0, 1.0, 801)
    target = np.asarray(f(jnp.asarray(s)))
    xlim = (-1.06, 1.06)
    tags = iter("abcdef")
    with _figure(figsize=(3 * PANEL + 0.3, 2 * PANEL - 0.2)) as fig:
        axes = fig.subplots(2, 3)
        for row, arch in enumerate(("mlp", "glu")):
            for col, optimizer in enumerate(FIG2_STAGES):
                params, info = trained[arch, optimizer]
                ax = axes[row, col]
                ax.plot(s, target, color=INK, lw=2.2, alpha=0.35, label="target")
                ax.plot(s, _evaluate(arch, params, s[:, None]), color=plots.PALETTE[row], lw=1.3,
                        label=ARCH_LABEL[arch])
                for j, t in enumerate(k for k in cell_knots(params) if xlim[0] <= k <= xlim[1]):
                    ax.axvline(t, color=plots.PALETTE[4], lw=0.8, ls="--", label="cell boundary" if j == 0 else None)
                what = ("gates frozen at spline init" if optimizer == "newton-splines"
                        else f"full training ({steps} steps)")
                ax.set_title(f"({next(tags)}) {ARCH_LABEL[arch]}, {what}\ntest RMSE {info['test_rmse']:.2e}")
                ax.set_xlim(*xlim)
                ax.set_ylim(0.3, 1.22)
                ax.set_xlabel("x")
                ax.set_ylabel("y")
                ax.legend(loc="upper center", ncol=3, fontsize=8, handlelength=1.3, columnspacing=0.8,
                          borderaxespad=0.3, framealpha=1.0, edgecolor="none")
            params, _ = trained[arch, "newton-cascade"]
            ax = axes[row, 2]
            parts = unit_contributions(params, s[:, None])[:, :, 0]
            G, g = np.asarray(params.G)[:, 0], np.asarray(params.g)
            for i in range(parts.shape[1]):
                color = plots.PALETTE[i % len(plots.PALETTE)]
                ax.plot(s, parts[:, i], color=color, lw=1.3, label=f"unit {i}")
                if G[i] != 0 and xlim[0] <= -g[i] / G[i] <= xlim[1]:
                    ax.axvline(-g[i] / G[i], color=color, lw=0.8, ls="--")
            ax.axhline(0, color=INK, lw=0.5)
            ax.set_xlim(*xlim)
            ax.set_xlabel("x")
            ax.set_ylabel(r"$D_i\,h_i(x)$")
            ax.set_title(f"({next(tags)}) {ARCH_LABEL[arch]} after full training:\n"
                         "each unit's contribution (dashed: its knot)")
            ax.legend(loc="best", frameon=False, fontsize=8, ncol=2, handlelength=1.2, columnspacing=0.8)
        fig.suptitle(r"Six-unit MLP (piecewise linear) and GLU (piecewise quadratic) on $1/(1+\cos^2(\pi x))$")
        fig.tight_layout()
        return _save(fig, out_dir, "fig2")


def fig8(out_dir, *, seed: int = 0, n: int = 6) -> list[Path]:
    """Fig. 8: spline-init gate activations relu(G_i x + g_i) of n units in 1D with the
    reference's knots linspace(-1.001, 1.001, n): all facing right vs alternating, and
    how many gates are open at each x.  Same-facing leaves the last unit closed on all
    of [-1, 1] (dead) and the left end covered by one unit; alternating keeps every
    unit alive and about n/2 open everywhere when n is even (for odd n the last unit,
    index n - 1 even, faces right at knot 1.001 and is dead there too; the test
    suite pins this down).  The 1D spline init is deterministic:
    `seed` is accepted for a uniform signature and changes nothing."""
    del seed
    n = check_positive_int("n", n)
    s = np.linspace(-1.25, 1.25, 1001)
    inside = (s >= BOX[0]) & (s <= BOX[1])
    with _figure(figsize=(2 * PANEL + 0.3, PANEL + 1.5)) as fig:
        axes = fig.subplots(2, 2, sharex=True, gridspec_kw={"height_ratios": [2.2, 1.0]})
        for col, (facing, title) in enumerate((("right", "same-facing (all open to the right)"),
                                               ("alternate", "alternating (even right, odd left)"))):
            G, g = facing_gates(n, facing)
            z = np.asarray(G)[:, 0][None] * s[:, None] + np.asarray(g)[None]
            act = np.maximum(z, 0.0)
            dead = set(dead_units(G, g).tolist())
            ax = axes[0, col]
            for i in range(n):
                color = plots.PALETTE[i % len(plots.PALETTE)]
                arrow = r"$\rightarrow$" if float(G[i, 0]) > 0 else r"$\leftarrow$"
                label = f"unit {i} {arrow}" + (" dead on [-1,1]" if i in dead else "")
                ax.plot(s, act[:, i], color=color, lw=1.8 if i in dead else 1.3, ls="--" if i in dead else "-",
                        label=label)
            ax.set_title(f"({'ab'[col]}) {title}")
            ax.set_ylabel(r"gate relu$(G_i x + g_i)$")
            ax.legend(loc="upper center", frameon=False, fontsize=8, ncol=2, handlelength=1.6, columnspacing=0.8)
            ax.set_ylim(0, 2.9)
            counts = open_counts(G, g, s[:, None])
            ax = axes[1, col]
            ax.step(s[inside], counts[inside], where="mid", color=plots.PALETTE[0], lw=1.4)
            ax.set_ylim(-0.3, n + 0.3)
            ax.set_yticks(range(0, n + 1, 2))
            ax.set_ylabel("open units")
            ax.set_xlabel("x")
            ax.set_title(f"({'cd'[col]}) open units at each x in [-1, 1]: "
                         f"min {counts[inside].min()}, max {counts[inside].max()}")
            for a in axes[:, col]:
                for lo, hi in ((s[0], BOX[0]), (BOX[1], s[-1])):
                    a.axvspan(lo, hi, color=INK, alpha=0.08, lw=0)
                a.set_xlim(s[0], s[-1])
        fig.suptitle(f"Spline init, {n} units, knots linspace(-1.001, 1.001, {n}); shaded: outside the data")
        fig.tight_layout()
        return _save(fig, out_dir, "fig8")


def all_illustrations(out_dir, *, seed: int = 0) -> list[Path]:
    """Draw Fig. 1, 2, 8, 9, 10 and 11 into out_dir; returns every path written.
    Fig. 2 needs jax_enable_x64."""
    paths = []
    for draw in (fig1, fig2, fig8, fig9, fig10, fig11):
        paths += draw(out_dir, seed=seed)
    return paths
