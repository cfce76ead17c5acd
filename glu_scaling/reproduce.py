"""`glu-scaling reproduce`: the paper's figures and Table 1, regenerated from scratch.

Every number comes from sweeps run through the batched engine (`sweeps.run_sweep`),
one results folder per experiment under `runs/` (so an interrupted reproduction
resumes where it stopped), and every figure and table is drawn from those records:

* ``1d``: target 1/(1 + cos^2(pi x)) (`paper_1d`), MLP, GLU and GQU, `newton-cascade`,
  float64 (paper.md §5) -> Fig. 3 (MLP, GLU vs n and P), Fig. 4 (against least-squares
  linear and quadratic splines and the analytic constructions), Fig. 5 (with the GQU),
  and the 1D row of Table 1;
* ``1d_frozen``, ``1d_placed``, ``1d_placed_frozen``: the same widths and seeds with
  gates frozen at the spline init (`newton-splines`), from knots placed for the target
  (`--knots placed`), and both -> Fig. 12 (ours) and Table 1's other 1D rows;
* ``1d_stages``: `newton-cascade` with 0 all-parameter steps (its spline stages and its
  {G, g} step only) -> Fig. 13 (ours) and a Table 1 row: the slopes before the
  all-parameter steps, which are the ones the paper's match (figures/README.md);
* ``table1_<problem>``: MLP and GLU on sin(4x) sin(4y), Friedman #1-#3, airfoil
  self-noise and California housing -> Fig. 6 (2D and Friedman), Fig. 7 (real data)
  and the other rows of Table 1; ``table1_<problem>_stages`` the same with 0
  all-parameter steps -> Table 1 rows;
* the illustrative figures (1, 2, 8, 9-11), which need no sweep
  (`glu_scaling.illustrations`).

`--quick` runs the same pipeline with fewer widths, seeds, points and Newton steps
(a few minutes on two CPU cores); its slopes are rougher and say so in the table's
protocol column.  `--redraw` runs no sweeps: it draws from the records a previous run
left in OUT/results/ (the committed full run's `figures/results/`), in under a minute
(27-44 s on the 2-core CPU; the illustrative figures still compute their few small models).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from glu_scaling import inits, plots, problems, results, slopes, sweeps, train
from glu_scaling.config import SweepConfig, load_dataset
from glu_scaling.errors import UsageError, check_choice, unknown

# The paper's slopes vs n (paper.md §6: Fig. 3 and 5 for the 1D row, Table 1 for the others).
PAPER_SLOPES = {
    "paper_1d": {"mlp": -2.13, "glu": -3.08, "gqu": -3.50},
    "sin_x_sin_y": {"mlp": -0.91, "glu": -1.55},
    "friedman1": {"mlp": -0.55, "glu": -1.00},
    "friedman2": {"mlp": -0.75, "glu": -1.12},
    "friedman3": {"mlp": -0.31, "glu": -0.56},
    "airfoil": {"mlp": -0.25, "glu": -0.39},
    "california": {"mlp": -0.09, "glu": -0.09},
}
# Spline theory for a smooth 1D target (paper.md §1, §4): -(degree + 1).
THEORY_1D = {"mlp": -2.0, "glu": -3.0, "gqu": -4.0}
PROBLEM_LABELS = {
    "paper_1d": "1/(1 + cos^2(pi x))",
    "sin_x_sin_y": "sin(4x) sin(4y)",
    "friedman1": "Friedman #1",
    "friedman2": "Friedman #2",
    "friedman3": "Friedman #3",
    "airfoil": "Airfoil self-noise",
    "california": "California housing",
}
FIG6_PROBLEMS = ("sin_x_sin_y", "friedman1", "friedman2", "friedman3")
FIG7_PROBLEMS = ("airfoil", "california")
# fig12 and fig13 are ours, beyond the paper: the 1D rows from knots placed for the target,
# and the 1D cascade before and after its all-parameter steps
FIGURES = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9", "fig10", "fig11", "fig12",
           "fig13")
# Fig. 12's series: (experiment, legend label)
KNOT_SERIES = (("1d", "cascade, uniform knots"), ("1d_placed", "cascade, placed knots"),
               ("1d_frozen", "frozen, uniform knots"), ("1d_placed_frozen", "frozen, placed knots"))


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One sweep of the reproduction and how its slopes are fitted.

    fit_range: (lo, hi) on n_hidden for the table's slopes (None: every width).
    optional: `--redraw` leaves it out, with a note, where OUT/results/ has no records of
    it (a folder written before the experiment existed), instead of refusing.
    """

    name: str
    config: SweepConfig
    fit_range: tuple[float, float] | None = None
    optional: bool = False

    @property
    def problem(self) -> str:
        return self.config.problem


# Widths: every width of the paper's 1..50 in 1D (and six beyond it); log-spaced 1..128 beyond 1D.
_TABLE_WIDTHS = (1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128)
_CALIFORNIA_WIDTHS = (1, 2, 4, 8, 16, 32, 64)
_BEYOND_50 = (56, 64, 72, 80, 90, 100)


def experiments(quick: bool = False, factor_init: str = "one") -> list[Experiment]:
    """The sweeps behind the figures and Table 1; `quick` shrinks every one of them.
    factor_init: how the GQUs' second factor starts (`inits.FACTOR_INITS`)."""
    cfg = functools.partial(SweepConfig, factor_init=factor_init)
    if quick:
        one_d = cfg(archs=("mlp", "glu", "gqu"), widths=(2, 3, 4, 6, 8, 11, 16, 23, 32), seeds=(0, 1),
                    problem="paper_1d", optimizer="newton-cascade", steps=20, n_data=2000, n_test=2000)
        table = [cfg(archs=("mlp", "glu"), widths=(1, 2, 4, 8, 16, 32), seeds=(0, 1), problem=p,
                     optimizer="newton-cascade", steps=20, n_data=1000 if p != "airfoil" else None)
                 for p in PAPER_SLOPES if p != "paper_1d"]
        frozen = dataclasses.replace(one_d, optimizer="newton-splines", steps=None)
        return _one_d_experiments(one_d, frozen, (4, 32)) + _table_experiments(table)
    # every width of the paper's 1..50, and beyond it (issue: "where it helps the fit") up to 100
    one_d = cfg(archs=("mlp", "glu", "gqu"), widths=(*range(1, 51), *_BEYOND_50), seeds=(0, 1, 2, 3),
                problem="paper_1d", optimizer="newton-cascade", n_data=10_000, n_test=10_000)
    table = [cfg(archs=("mlp", "glu"), widths=_TABLE_WIDTHS, seeds=(0, 1, 2, 3), problem=p,
                 optimizer="newton-cascade")
             for p in ("sin_x_sin_y", "friedman1", "friedman2", "friedman3", "airfoil")]
    table.append(cfg(archs=("mlp", "glu"), widths=_CALIFORNIA_WIDTHS, seeds=(0, 1, 2, 3), problem="california",
                     optimizer="newton-cascade", n_data=4000))
    frozen = dataclasses.replace(one_d, optimizer="newton-splines")
    # slopes fitted on the paper's range (n = 1..50; n < 4 cannot resolve the target's two
    # bumps); the widths beyond it show in the figures and the table's last-octave column
    return _one_d_experiments(one_d, frozen, (4, 50)) + _table_experiments(table)


def _table_experiments(table: Sequence[SweepConfig]) -> list[Experiment]:
    """Table 1's other rows: each problem trained (`table1_<problem>`) and before the
    cascade's all-parameter steps (`table1_<problem>_stages`, 0 steps)."""
    return [exp for c in table for exp in (
        Experiment(f"table1_{c.problem}", c),
        Experiment(f"table1_{c.problem}_stages", dataclasses.replace(c, steps=0), optional=True))]


def _one_d_experiments(one_d: SweepConfig, frozen: SweepConfig, fit_range) -> list[Experiment]:
    """The 1D rows: trained (`one_d`), before its all-parameter steps (`one_d` with 0
    steps) and gates-frozen (`frozen`) from evenly spaced knots, and trained and frozen
    again from knots placed for the target (`inits.placed_knots`), the trained ones
    for the GLU and GQU only (the MLP's gain from placement is small: 1.37x predicted for
    this target, against 2.8x for the GLU)."""
    stages = dataclasses.replace(one_d, steps=0)
    placed = dataclasses.replace(one_d, archs=("glu", "gqu"), knots="placed")
    placed_frozen = dataclasses.replace(frozen, knots="placed")
    return [Experiment("1d", one_d, fit_range), Experiment("1d_stages", stages, fit_range, optional=True),
            Experiment("1d_frozen", frozen, fit_range), Experiment("1d_placed", placed, fit_range),
            Experiment("1d_placed_frozen", placed_frozen, fit_range)]


def _stages_only(config: SweepConfig) -> bool:
    """A `newton-cascade` run with no all-parameter steps: its spline and {G, g} stages only."""
    return config.optimizer == "newton-cascade" and config.steps == 0


def run_experiments(exps: Sequence[Experiment], runs: Path, *, progress: bool = True,
                    log: Callable[[str], None] = print) -> dict[str, list[dict]]:
    """Run (or resume) every experiment into runs/<name>; returns records by experiment name."""
    out = {}
    for i, exp in enumerate(exps, 1):
        t0 = time.perf_counter()
        log(f"[{i}/{len(exps)}] {exp.name}: {', '.join(exp.config.archs)} x {len(exp.config.widths)} widths x "
            f"{len(exp.config.seeds)} seeds on {exp.problem}")
        out[exp.name] = sweeps.run_sweep(exp.config, runs / exp.name, progress=progress, fit_range=exp.fit_range)
        log(f"      done in {time.perf_counter() - t0:.1f} s")
    return out


def load_experiments(exps: Sequence[Experiment], folder: Path) -> dict[str, list[dict]]:
    """Records by experiment name from folder/<name>.jsonl (what a reproduction writes to
    OUT/results/), in `run_sweep`'s order, with no training: every (arch, width, seed) of
    each experiment must be there (the first record of a model wins, as everywhere)."""
    out = {}
    for exp in exps:
        path = Path(folder) / f"{exp.name}.jsonl"
        if not path.is_file():
            raise UsageError(f"--redraw needs {str(path)!r}, the records of experiment {exp.name!r} (a reproduce "
                             "run writes them); run without --redraw to train it")
        found = {results.model_key(r): r for r in results.unique_records(path.parent, path.name)}
        cfg = exp.config
        wanted = [(a, n, s) for a in cfg.archs for n in sorted(cfg.widths) for s in sorted(cfg.seeds)]
        missing = [key for key in wanted if key not in found]
        if missing:
            raise UsageError(f"{str(path)!r} lacks {len(missing)} of the {len(wanted)} models of experiment "
                             f"{exp.name!r} (the first: arch, width, seed = {missing[0]}); run without --redraw "
                             "to train them")
        out[exp.name] = [found[key] for key in wanted]
    return out


# ------------------------------------------------------------------ Table 1


def protocol(config: SweepConfig, dataset: problems.Dataset) -> str:
    """The table's protocol column: points, widths, seeds, optimiser, evaluation."""
    w = config.widths
    if config.optimizer == "newton-splines":
        schedule = "newton-splines (gates frozen at the spline init, one step per layer)"
    elif _stages_only(config):
        gates = "one {G, g} step" if config.gate_steps == 1 else f"{config.gate_steps} {{G, g}} steps"
        schedule = f"newton-cascade with 0 all-parameter steps (its spline stages and {gates})"
    else:
        schedule = f"{config.optimizer} ({train.TrainConfig(config.optimizer, config.steps).n_steps} steps)"
        if config.optimizer == "newton-cascade" and config.gate_steps != 1:
            schedule += f", {config.gate_steps} {{G, g}} steps before them"
    knots = ("; knots placed for the target (|f^(p+1)|^(2/(2p+3)) equidistributed, p = spline degree)"
             if config.knots == "placed" else "")
    if inits.has_later_factors(config.archs):
        start = "the constant 1" if config.factor_init == "one" else "N(0, 1) draws"
        knots += f"; GQU factor 2 starts at {start} (factor_init {config.factor_init!r})"
    return (f"{dataset.x_train.shape[0]} train / {dataset.x_test.shape[0]} test pts; n = {min(w)}..{max(w)} "
            f"({len(w)} widths); {len(config.seeds)} seeds; {schedule}; {config.dtype}{knots}")


def row_label(config: SweepConfig) -> str:
    """The table's problem column: the problem, then what differs from the paper's protocol."""
    parts = [PROBLEM_LABELS.get(config.problem, config.problem)]
    if config.optimizer != "newton-cascade":
        parts.append(config.optimizer)
    elif _stages_only(config):
        parts.append("0 all-parameter steps")
    if config.optimizer == "newton-cascade" and config.gate_steps != 1:
        parts.append(f"{config.gate_steps} gate steps")
    if config.knots != "uniform":
        parts.append(f"knots {config.knots}")
    return ", ".join(parts)


def table1_rows(exps: Sequence[Experiment], records: dict[str, list[dict]]) -> list[dict]:
    """One row per (problem, arch): the paper's slope, ours on test and train RMSE with 95% CIs."""
    rows = []
    for exp in exps:
        recs = records.get(exp.name, [])
        if not recs:
            continue
        dataset = load_dataset(exp.config)
        for arch in exp.config.archs:
            mine = [r for r in recs if r["arch"] == arch]
            test = slopes.fit_records(mine, fit_range=exp.fit_range)
            train = slopes.fit_records(mine, y="train_rmse", fit_range=exp.fit_range)
            if test is None:
                continue
            top = max(r["n_hidden"] for r in mine if r["status"] in slopes.FIT_STATUSES)
            # the last octave: the estimate closest to the asymptotic order
            octave = slopes.fit_records(mine, fit_range=(top / 2, top))
            # the paper's slopes are of trained models
            cascade = exp.config.optimizer == "newton-cascade" and not _stages_only(exp.config)
            rows.append({
                "problem": exp.problem, "label": row_label(exp.config), "knots": exp.config.knots,
                "optimizer": exp.config.optimizer, "n_in": dataset.n_in, "arch": arch,
                "paper": PAPER_SLOPES.get(exp.problem, {}).get(arch) if cascade else None,
                "slope": test.slope, "ci_low": test.ci_low, "ci_high": test.ci_high, "r2": test.r2,
                "train_slope": train.slope, "train_ci_low": train.ci_low, "train_ci_high": train.ci_high,
                "octave_slope": None if octave is None else octave.slope,
                "octave_ci_low": None if octave is None else octave.ci_low,
                "octave_ci_high": None if octave is None else octave.ci_high,
                "octave_range": None if octave is None else list(octave.range),
                "theory": THEORY_1D.get(arch) if dataset.n_in == 1 else None,
                "fit_range": list(test.range), "n_models": len(mine),
                "statuses": {s: sum(r["status"] == s for r in mine) for s in ("ok", "diverged", "stalled")},
                "protocol": protocol(exp.config, dataset),
                "experiment": exp.name,
                "train_seconds": float(sum(r.get("seconds", 0.0) for r in recs)),
            })
    return rows


def _num(v, fmt="{:.2f}") -> str:
    return "n/a" if v is None or not np.isfinite(v) else fmt.format(v)


def _octave(row: dict) -> str:
    if row.get("octave_slope") is None:
        return "n/a"
    lo, hi = row["octave_range"]
    return (f"{_num(row['octave_slope'])} [{_num(row['octave_ci_low'])}, {_num(row['octave_ci_high'])}] "
            f"(n = {lo:.0f}..{hi:.0f})")


def table1_markdown(rows: list[dict], *, quick: bool, seconds: float | None = None, redraw: bool = False) -> str:
    """Table 1 as markdown: paper vs ours (test-set and training-set RMSE slopes vs n)."""
    lines = [
        "# Table 1: convergence order (slope of RMSE vs hidden width n)",
        "",
        "Generated by `glu-scaling reproduce" + (" --quick" if quick else "") + "`; do not edit by hand. "
        "Ours: mean of the per-seed least-squares slopes of log RMSE vs log n, with a 95% "
        "t-interval over seeds (diverged models left out, stalled ones kept); *test* scores on held-out "
        "points (a dense grid in 1D and 2D, fresh "
        "draws for Friedman, the 20% split for real data), *train* on the training points as the "
        "reference did for its real data. Theory: spline order -(degree+1) for a smooth 1D target. "
        "*Last octave*: the same fit on the widths n_max/2..n_max only, the estimate closest to the "
        "asymptotic order (wide intervals: few widths).",
        "",
        "| problem | dx | arch | paper | ours (test) [95% CI] | ours (train) [95% CI] | theory | fitted n | "
        "last octave (test) [95% CI] | models (ok/div/stall) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        st = r["statuses"]
        lines.append(
            f"| {r['label']} | {r['n_in']} | {r['arch'].upper()} | {_num(r['paper'])} | "
            f"{_num(r['slope'])} [{_num(r['ci_low'])}, {_num(r['ci_high'])}] | "
            f"{_num(r['train_slope'])} [{_num(r['train_ci_low'])}, {_num(r['train_ci_high'])}] | "
            f"{_num(r['theory'], '{:.0f}')} | {r['fit_range'][0]:.0f}..{r['fit_range'][1]:.0f} | "
            f"{_octave(r)} | {st['ok']}/{st['diverged']}/{st['stalled']} |")
    lines += ["", "## Protocol", ""]
    seen = set()
    for r in rows:
        if r["label"] not in seen:
            seen.add(r["label"])
            lines.append(f"- {r['label']}: {r['protocol']}; trained in {r['train_seconds']:.0f} s "
                         f"(sum of the sweep's bucket wall times, `results/{r['experiment']}.jsonl`)")
    if seconds is not None:
        total = sum({r["experiment"]: r["train_seconds"] for r in rows}.values())
        how = ("which redrew from the records, training nothing" if redraw
               else "which resumes finished sweeps, then draws")
        lines += ["", f"Training time of all sweeps: {total:.0f} s; wall time of the last `reproduce` call "
                  f"({how}): {seconds:.0f} s."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ figures


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
    from glu_scaling import compare

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
    before its all-parameter steps (`1d_stages`) and after its `steps` of them (`1d`),
    one panel per architecture with the paper's slope in its title."""
    series = (("1d_stages", "0 all-parameter steps"), ("1d", f"{steps} all-parameter steps"))
    if not all(records.get(name) for name, _ in series):
        return []
    panels = []
    for arch in ("mlp", "glu", "gqu"):
        # convergence_axes draws one line per "arch" field: relabel each record by its series
        recs = [{**r, "arch": label} for name, label in series for r in records.get(name, []) if r["arch"] == arch]
        if recs:
            panels.append((f"{arch.upper()} (paper {PAPER_SLOPES['paper_1d'][arch]:.2f})", recs))
    return _convergence_panels(panels, out / "fig13_all_parameter_steps",
                               fit_ranges={name: fit_range for name, _ in panels},
                               title="Fig. 13 (beyond the paper): the cascade before and after its all-parameter steps",
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


# ------------------------------------------------------------------ the command


FACTOR_INIT_FILE = "factor_init.json"  # under OUT/results/: how each experiment's GQUs were made


def _copy_results(records: dict[str, list[dict]], out: Path, by_name: dict[str, Experiment]) -> None:
    """The records behind the figures, one JSONL per experiment, under out/results/, and
    FACTOR_INIT_FILE: the factor_init of each experiment with GQUs (which the records do
    not carry), read back by `--redraw`; the file's entries for experiments this run did
    not write stay (read again now, in case another run wrote it meanwhile)."""
    folder = out / "results"
    folder.mkdir(parents=True, exist_ok=True)
    for name, recs in records.items():
        results.write_records_atomic(folder / f"{name}.jsonl", recs)
    inits = {name: by_name[name].config.factor_init for name in records
             if inits.has_later_factors(by_name[name].config.archs)}
    if inits:
        results.write_json_atomic(folder / FACTOR_INIT_FILE, {**_recorded_factor_inits(folder), **inits})



def _recorded_factor_inits(folder: Path) -> dict[str, str]:
    """FACTOR_INIT_FILE's {experiment: factor_init}; {} when there is none (records written
    before the option existed, whose GQUs drew their factors: "random")."""
    path = folder / FACTOR_INIT_FILE
    if not path.is_file():
        return {}
    try:
        inits = json.loads(path.read_text())
    except ValueError:
        inits = None
    if not isinstance(inits, dict) or any(v not in inits.FACTOR_INITS for v in inits.values()):
        raise UsageError(f"{str(path)!r} must map experiment names to one of {', '.join(inits.FACTOR_INITS)}; "
                         "fix it or move it away")
    return inits


def parse_only(text: str | None) -> tuple[str, ...]:
    """'fig3,fig5' -> ('fig3', 'fig5'); None -> every figure."""
    if text is None:
        return FIGURES
    names = tuple(t.strip().lower() for t in text.split(",") if t.strip())
    if not names:
        raise UsageError(f"--only {text!r} names no figure; e.g. --only fig3,fig5")
    for name in names:
        if name not in FIGURES and name != "table1":
            raise unknown("figure", name, (*FIGURES, "table1"))
    return names


def needed_experiments(exps: Sequence[Experiment], figures: Sequence[str], table: bool) -> list[Experiment]:
    """The experiments that the requested figures (and the table) draw on."""
    if table:
        return list(exps)
    wanted = set()
    if {"fig3", "fig4", "fig5"} & set(figures):
        wanted.add("1d")
    if "fig12" in figures:
        wanted |= {name for name, _ in KNOT_SERIES}
    if "fig13" in figures:
        wanted |= {"1d", "1d_stages"}
    if "fig6" in figures:
        wanted |= {f"table1_{p}" for p in FIG6_PROBLEMS}
    if "fig7" in figures:
        wanted |= {f"table1_{p}" for p in FIG7_PROBLEMS}
    return [e for e in exps if e.name in wanted]


def reproduce(out: str | Path = "figures", *, runs: str | Path | None = None, quick: bool = False,
              figures: Sequence[str] = FIGURES, table: bool = True, progress: bool = True,
              log: Callable[[str], None] = print, redraw: bool = False, factor_init: str | None = None) -> dict:
    """Run the reproduction's sweeps (resuming any finished ones), then draw and write.

    Args:
      out: folder for figN_*.png/.pdf, table1.md, table1.json and results/*.jsonl.
      runs: folder of the sweeps' results folders (default runs/reproduce/{quick,full}).
      quick: the small version (a few minutes on two CPU cores).
      figures: subset of `FIGURES` to draw; table: write Table 1.
      redraw: run no sweeps; draw from out/results/<experiment>.jsonl (`load_experiments`),
        which must hold every model (read before `out` is created; the illustrative
        figures 1, 2, 8-11 still compute their few small models, Fig. 2 training four).
      factor_init: how the GQUs' second factor starts (`inits.FACTOR_INITS`; None: "one";
        "random" resumes a runs folder written before "one" became the default).  Not with
        `redraw`, which reads it from out/results/factor_init.json ("random" where missing).

    Returns a summary dict: paths written, Table 1 rows, seconds.
    """
    t0 = time.perf_counter()
    if redraw and runs is not None:
        raise UsageError("--redraw runs no sweeps and reads OUT/results/; --runs does not go with it")
    if redraw and factor_init is not None:
        raise UsageError("--redraw reads how the GQUs were made from OUT/results/factor_init.json; "
                         "--factor-init does not go with it")
    factor_init = "one" if factor_init is None else factor_init
    check_choice("factor_init", factor_init, inits.FACTOR_INITS)
    exps = experiments(quick, factor_init)
    # read (or refuse) before anything is trained or drawn (and read again when written)
    recorded = _recorded_factor_inits(results.check_folder(out) / "results")
    if redraw:  # as the records were made
        exps = [dataclasses.replace(e, config=dataclasses.replace(e.config, factor_init=recorded.get(e.name, "random")))
                if inits.has_later_factors(e.config.archs) else e for e in exps]
    by_name = {e.name: e for e in exps}
    needed = needed_experiments(exps, figures, table)
    if redraw:  # every record is read (or refused) before the folder is made
        folder = results.check_folder(out) / "results"
        absent = [e.name for e in needed if e.optional and not (folder / f"{e.name}.jsonl").is_file()]
        if absent:
            log(f"--redraw: {str(folder)!r} has no records of {', '.join(absent)} (written before these "
                "experiments existed); their rows and figures are left out")
            needed = [e for e in needed if e.name not in absent]
        records = load_experiments(needed, folder)
        out = results.prepare_folder(out)
    else:
        out = results.prepare_folder(out)
        runs = results.prepare_folder(Path(runs) if runs is not None else
                                      Path("runs") / "reproduce" / ("quick" if quick else "full"))
        records = run_experiments(needed, runs, progress=progress, log=log)
    paths: list[Path] = []
    if "1d" in records:
        exp = by_name["1d"]
        if "fig3" in figures:
            paths += fig3(records["1d"], out, exp.fit_range)
        if "fig4" in figures:
            paths += fig4(records["1d"], exp.config, out, exp.fit_range)
        if "fig5" in figures:
            paths += fig5(records["1d"], out, exp.fit_range)
    if "fig12" in figures and "1d" in by_name:
        paths += fig12(records, out, by_name["1d"].fit_range)
    if "fig13" in figures and "1d" in by_name:
        one_d = by_name["1d"].config
        paths += fig13(records, out, train.TrainConfig(one_d.optimizer, one_d.steps).n_steps, by_name["1d"].fit_range)
    if "fig6" in figures:
        paths += fig6(records, out)
    if "fig7" in figures:
        paths += fig7(records, out)
    illustrative = [f for f in figures if f in ("fig1", "fig2", "fig8", "fig9", "fig10", "fig11")]
    if illustrative:
        from glu_scaling import illustrations

        log("illustrative figures " + ", ".join(illustrative))
        for name in illustrative:
            paths += getattr(illustrations, name)(out)
    _copy_results(records, out, by_name)
    rows = table1_rows(exps, records) if table else []
    seconds = time.perf_counter() - t0
    if table:
        results.write_json_atomic(out / "table1.json", {"quick": quick, "seconds": seconds, "rows": rows})
        (out / "table1.md").write_text(table1_markdown(rows, quick=quick, seconds=seconds, redraw=redraw))
        paths += [out / "table1.md", out / "table1.json"]
    return {"paths": paths, "rows": rows, "seconds": seconds}


def print_table(rows: list[dict], file=sys.stdout) -> None:
    width = max([20, *(len(r["label"]) for r in rows)])
    print(f"{'problem':<{width}} {'dx':>2} {'arch':<4} {'paper':>6} {'ours':>7}  {'95% CI':<17} {'train':>7}",
          file=file)
    for r in rows:
        print(f"{r['label']:<{width}} {r['n_in']:>2} {r['arch']:<4} {_num(r['paper']):>6} "
              f"{_num(r['slope'], '{:.3f}'):>7}"
              f"  [{_num(r['ci_low'], '{:.3f}')}, {_num(r['ci_high'], '{:.3f}')}] "
              f"{_num(r['train_slope'], '{:.3f}'):>7}", file=file)
