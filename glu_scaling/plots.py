"""Convergence plots: RMSE against width n and parameter count P, log-log, fitted slopes.

Okabe-Ito colours (safe for colour-blind readers), sized for a 3 x 3 inch panel.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np

from glu_scaling.slopes import FIT_STATUSES, fit_records

PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
AXIS_LABELS = {"n_hidden": "hidden width n", "n_params": "parameters P"}


def import_pyplot(warm_up: bool = False) -> None:
    """Import matplotlib's pyplot with the Agg backend (no screen needed).  Run it in a
    thread while training to overlap the import (the CLI's speedrun does).

    warm_up: also import scipy.special (the slope fits' t quantile, `slopes.t_quantile`)
    and draw a small log-log figure into memory, as PNG and PDF, so that the first real
    figure finds the fonts loaded and the text layout cached.  Nothing else may use matplotlib until this returns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401

    if warm_up:
        import scipy.special  # noqa: F401

        plt = _mpl()
        fig, ax = plt.subplots(figsize=(1.0, 1.0))
        ax.loglog([1.0, 10.0], [1e-1, 1e-3], "o-", label="x")
        superscript_decades(ax.yaxis)
        ax.set_xlabel("n")
        ax.legend()
        for fmt in ("png", "pdf"):
            fig.savefig(io.BytesIO(), format=fmt, bbox_inches="tight")
        plt.close(fig)


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "axes.titlesize": 8, "legend.fontsize": 7, "figure.dpi": 150})
    return plt


def convergence_axes(ax, records: list[dict], x: str = "n_hidden", *, label_fmt="{arch}", fit_range=None,
                     legend_loc: str = "lower left"):
    """Draw test RMSE vs `x` per arch (all seeds as points, median line, fitted slope).
    legend_loc: a matplotlib location, or "below" the axes (for many or long labels)."""
    archs = list(dict.fromkeys(r["arch"] for r in records))
    for i, arch in enumerate(archs):
        rec = [r for r in records if r["arch"] == arch and r["status"] in FIT_STATUSES]
        if not rec:
            continue
        xs = np.array([r[x] for r in rec], float)
        ys = np.array([r["test_rmse"] for r in rec], float)
        color, marker = PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]
        ux = np.unique(xs)
        med = np.array([np.median(ys[xs == u]) for u in ux])
        label = label_fmt.format(arch=arch)
        fit = fit_records(rec, x=x, fit_range=fit_range)  # the range is on n_hidden, whatever x is
        if fit is not None:
            xx = np.array(fit.range)
            ax.plot(xx, np.exp(fit.intercept) * xx**fit.slope, color=color, lw=0.8, ls="--")
            label += f"  slope {fit.slope:.2f}"
        ax.scatter(xs, ys, s=6, color=color, marker=marker, alpha=0.5, lw=0)
        ax.plot(ux, med, color=color, marker=marker, ms=2.5, lw=1.0, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    superscript_decades(ax.yaxis)
    xs_all = [r[x] for r in records if r.get(x)]
    if xs_all:
        plain_log_ticks(ax.xaxis, min(xs_all), max(xs_all))
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel("test RMSE")
    ax.grid(True, which="major", lw=0.3, alpha=0.5)
    if legend_loc == "below":  # under the x label, clear of the data
        ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.17))
    else:
        ax.legend(frameon=False, loc=legend_loc)


_SUPERSCRIPTS = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def superscript_decades(axis) -> None:
    """Label a log axis as 10⁻³ and 2×10⁻³ in Unicode superscripts rather than matplotlib's
    mathtext: the same look, without parsing TeX at every draw (a third of the time to
    save a convergence figure).  Which ticks get a label is matplotlib's choice, as before."""
    formatter = _superscript_formatter()
    axis.set_major_formatter(formatter())
    axis.set_minor_formatter(formatter(labelOnlyBase=False))


@functools.cache
def _superscript_formatter() -> type:
    """The formatter class of `superscript_decades` (made once: matplotlib loads lazily)."""
    from matplotlib.ticker import LogFormatterSciNotation

    class SuperscriptFormatter(LogFormatterSciNotation):
        def __call__(self, value, pos=None):
            label = super().__call__(value, pos)
            if not label or not value > 0:
                return label
            value = float(value)  # (a float32 tick would round the 1e-10 below away)
            exponent = int(np.floor(np.log10(value) + 1e-10))  # (the locator's 1e-5 is 9.999999999999999e-06)
            mantissa = value / 10.0**exponent
            if abs(mantissa - round(mantissa)) > 1e-6:
                return label
            power = "10" + str(exponent).translate(_SUPERSCRIPTS)
            return power if round(mantissa) == 1 else f"{round(mantissa)}\u00d7{power}"

    return SuperscriptFormatter


def plain_log_ticks(axis, lo: float, hi: float) -> None:
    """Label a log axis at 1-2-5 multiples of powers of ten within [lo, hi], as plain numbers
    (matplotlib's default writes 2x10^0 at minor ticks when the range is under a decade)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    ticks = [m * 10.0**e for e in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
             for m in (1, 2, 5) if lo <= m * 10.0**e <= hi]
    if len(ticks) < 2:
        ticks = sorted({lo, hi})
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def save(fig, path_stem: Path) -> list[Path]:
    """Write PNG and PDF next to each other; returns the paths.  No creation date in the PDF,
    so the same figure drawn twice gives the same bytes (committed figures change only
    when their content does)."""
    path_stem = Path(path_stem)
    png, pdf = path_stem.with_suffix(".png"), path_stem.with_suffix(".pdf")
    fig.savefig(png, bbox_inches="tight")
    fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None})
    return [png, pdf]


def convergence_figure(records: list[dict], path_stem: Path, *, title: str | None = None,
                       fit_range=None) -> list[Path]:
    """Two 3 x 3 inch panels: RMSE vs n and vs P."""
    plt = _mpl()
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.0))
    for ax, x in zip(axes, ("n_hidden", "n_params")):
        convergence_axes(ax, records, x, fit_range=fit_range)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    paths = save(fig, path_stem)
    plt.close(fig)
    return paths
