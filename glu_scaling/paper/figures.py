"""The reproduction's convergence figures (Figs. 3-7, and 12-13 of ours), drawn from a
sweep's records: test RMSE against width and parameters, with the fitted slopes."""

from __future__ import annotations

from pathlib import Path

from glu_scaling import compare, plots
from glu_scaling.config import SweepConfig
from glu_scaling.paper.experiments import (
    FIG6_PROBLEMS,
    FIG7_PROBLEMS,
    KNOT_SERIES,
    PAPER_SLOPES,
    PROBLEM_LABELS,
    STEP_SERIES,
)

LEGEND_BAND = 0.9  # inches under the panels for a legend "below" (four lines at 7 pt)


def _convergence_panels(panels: list[tuple[str, list[dict]]], path_stem: Path, *, x_axes=("n_hidden",),
                        fit_ranges: dict | None = None, title: str | None = None,
                        legend_loc: str = "lower left") -> list[Path]:
    """A row of 3 x 3 inch log-log panels, one per (title, records) and x axis; a legend
    "below" makes the figure taller by a band that holds it."""
    plt = plots._mpl()
    n = len(panels) * len(x_axes)
    band = LEGEND_BAND if legend_loc == "below" else 0.0
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 3.0 + band), squeeze=False)
    k = 0
    for name, recs in panels:
        for x in x_axes:
            ax = axes[0, k]
            fr = (fit_ranges or {}).get(name)
            plots.convergence_axes(ax, recs, x, label_fmt="{arch}", fit_range=fr, legend_loc=legend_loc)
            ax.set_title(name)
            k += 1
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    paths = plots.save(fig, path_stem)
    plt.close(fig)
    return paths


def fig3(records_1d: list[dict], out: Path, fit_range=None) -> list[Path]:
    """Fig. 3: MLP and GLU on the 1D target, test RMSE vs n and vs P with fitted slopes."""
    recs = [r for r in records_1d if r["arch"] in ("mlp", "glu")]
    return _convergence_panels([("1/(1+cos²(πx))", recs)], out / "fig3_convergence_1d",
                               x_axes=("n_hidden", "n_params"), fit_ranges={"1/(1+cos²(πx))": fit_range},
                               title="Fig. 3: MLP vs GLU, newton-cascade, float64")


def fig5(records_1d: list[dict], out: Path, fit_range=None) -> list[Path]:
    """Fig. 5: as Fig. 3 with the GQU."""
    return _convergence_panels([("1/(1+cos²(πx))", records_1d)], out / "fig5_convergence_gqu",
                               x_axes=("n_hidden", "n_params"), fit_ranges={"1/(1+cos²(πx))": fit_range},
                               title="Fig. 5: MLP, GLU and GQU")


def fig4(records_1d: list[dict], config: SweepConfig, out: Path, fit_range=None) -> list[Path]:
    """Fig. 4: trained MLP/GLU (median over seeds) against least-squares linear/quadratic
    splines on n uniform cells and on n cells placed for the target (what moving knots
    can buy), and the analytic constructions with the same number of knots (n)."""
    dataset, data, _ = compare.load_data(config.problem, n_data=config.n_data, n_test=config.n_test)
    widths = sorted({r["n_hidden"] for r in records_1d})
    recs = [{**r, "method": "newton-cascade"} for r in records_1d if r["arch"] in ("mlp", "glu")]
    for arch in ("mlp", "glu"):
        for family in compare.SPLINE_FAMILIES:
            recs += compare.spline_records(config.problem, arch, widths, dataset, spline_knots="width",
                                           family=family)
        recs += compare.construction_records(config.problem, arch, widths, data, curvature="mid"
                                             if arch == "glu" else "left")
    return compare.construct_figure(recs, out / "fig4_splines", fit_range=fit_range,
                                    title="Fig. 4: trained vs least-squares splines vs constructions")


def fig12(records: dict[str, list[dict]], out: Path, fit_range=None) -> list[Path]:
    """Fig. 12 (beyond the paper): GLU and GQU test RMSE vs n, trained (`newton-cascade`)
    and with gates frozen (`newton-splines`), from evenly spaced knots and from knots
    placed for the target (`KNOT_SERIES`); one panel per architecture."""
    panels = []
    for arch in ("glu", "gqu"):
        # convergence_axes draws one line per "arch" field: relabel each record by its series
        recs = [{**r, "arch": label} for name, label in KNOT_SERIES for r in records.get(name, []) if r["arch"] == arch]
        if recs:
            panels.append((arch.upper(), recs))
    if not panels:
        return []
    return _convergence_panels(panels, out / "fig12_knot_placement", fit_ranges={name: fit_range for name, _ in panels},
                               title="Fig. 12 (beyond the paper): where the spline init puts the knots",
                               legend_loc="below")  # four long labels: inside, they would hide the curves


def fig13(records: dict[str, list[dict]], out: Path, steps: int, fit_range=None) -> list[Path]:
    """Fig. 13 (beyond the paper): MLP, GLU and GQU test RMSE vs n of the 1D cascade
    before its all-parameter steps (`1d_stages`) and after its `steps` of them, without
    knot moves (`1d_reference`, the reference's schedule) and with them (`1d_knot_moves`
    before the all-parameter steps, `1d` after: the default schedule), one panel per
    architecture with the paper's slope in its title (`STEP_SERIES`; a series without
    records is left out)."""
    series = [(name, label.format(steps=steps)) for name, label in STEP_SERIES if records.get(name)]
    if len(series) < 2:
        return []
    panels = []
    for arch in ("mlp", "glu", "gqu"):
        # convergence_axes draws one line per "arch" field: relabel each record by its series
        recs = [{**r, "arch": label} for name, label in series for r in records.get(name, []) if r["arch"] == arch]
        if recs:
            panels.append((f"{arch.upper()} (paper {PAPER_SLOPES['paper_1d'][arch]:.2f})", recs))
    return _convergence_panels(panels, out / "fig13_all_parameter_steps",
                               fit_ranges={name: fit_range for name, _ in panels},
                               title="Fig. 13 (beyond the paper): all-parameter steps and knot moves",
                               legend_loc="below")


def fig6(records: dict[str, list[dict]], out: Path, names=FIG6_PROBLEMS, stem="fig6_2d_friedman",
         title="Fig. 6: 2D target and Friedman #1-#3") -> list[Path]:
    """Fig. 6 (and 7): one panel per problem, MLP vs GLU test RMSE vs n."""
    panels = [(PROBLEM_LABELS[p], records[f"table1_{p}"]) for p in names if records.get(f"table1_{p}")]
    if not panels:
        return []
    return _convergence_panels(panels, out / stem, title=title)


def fig7(records: dict[str, list[dict]], out: Path) -> list[Path]:
    """Fig. 7: airfoil self-noise and California housing."""
    return fig6(records, out, FIG7_PROBLEMS, "fig7_real_data", "Fig. 7: real data (held-out 20% split)")
