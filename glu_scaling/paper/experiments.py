"""The paper's experiments as data: the speedrun's settings, the sweeps behind every
figure and Table 1 (`experiments`), and the paper's own numbers to set beside ours."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

from glu_scaling.config import SweepConfig, sweep_config

# The reference's minimal experiment (`glu-scaling speedrun`): gates frozen at the spline init.
SPEEDRUN = {
    "archs": ("mlp", "glu", "gqu"),
    "widths": "1:101:3",  # 1, 4, ..., 100: the reference's 34 widths
    "seeds": "0",
    "problem": "one_over_1_p_9x2",
    "optimizer": "newton-splines",
    "n_data": 2000,
    "n_test": 2000,
}


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
# and the 1D cascade before and after its all-parameter steps, without and with knot moves
FIGURES = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9", "fig10", "fig11", "fig12",
           "fig13")


# Fig. 12's series: (experiment, legend label); the reference's cascade (no knot moves)
KNOT_SERIES = (("1d_reference", "cascade, uniform knots"), ("1d_placed", "cascade, placed knots"),
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
    cfg = functools.partial(sweep_config, factor_init=factor_init)
    if quick:
        one_d = cfg(archs=("mlp", "glu", "gqu"), widths=(2, 3, 4, 6, 8, 11, 16, 23, 32), seeds=(0, 1),
                    problem="paper_1d", optimizer="newton-cascade", steps=20, n_data=2000, n_test=2000)
        table = [cfg(archs=("mlp", "glu"), widths=(1, 2, 4, 8, 16, 32), seeds=(0, 1), problem=p,
                     optimizer="newton-cascade", steps=20, n_data=1000 if p != "airfoil" else None)
                 for p in PAPER_SLOPES if p != "paper_1d"]
        frozen = one_d.replace(optimizer="newton-splines", steps=None)
        return _one_d_experiments(one_d, frozen, (4, 32)) + _table_experiments(table)
    # every width of the paper's 1..50, and beyond it (issue: "where it helps the fit") up to 100
    one_d = cfg(archs=("mlp", "glu", "gqu"), widths=(*range(1, 51), *_BEYOND_50), seeds=(0, 1, 2, 3),
                problem="paper_1d", optimizer="newton-cascade", n_data=10_000, n_test=10_000)
    table = [cfg(archs=("mlp", "glu"), widths=_TABLE_WIDTHS, seeds=(0, 1, 2, 3), problem=p,
                 optimizer="newton-cascade")
             for p in ("sin_x_sin_y", "friedman1", "friedman2", "friedman3", "airfoil")]
    table.append(cfg(archs=("mlp", "glu"), widths=_CALIFORNIA_WIDTHS, seeds=(0, 1, 2, 3), problem="california",
                     optimizer="newton-cascade", n_data=4000))
    frozen = one_d.replace(optimizer="newton-splines")
    # slopes fitted on the paper's range (n = 1..50; n < 4 cannot resolve the target's two
    # bumps); the widths beyond it show in the figures and the table's last-octave column
    return _one_d_experiments(one_d, frozen, (4, 50)) + _table_experiments(table)


def _table_experiments(table: Sequence[SweepConfig]) -> list[Experiment]:
    """Table 1's other rows: each problem trained (`table1_<problem>`) and before the
    cascade's all-parameter steps (`table1_<problem>_stages`, 0 steps)."""
    return [exp for c in table for exp in (
        Experiment(f"table1_{c.problem}", c),
        Experiment(f"table1_{c.problem}_stages", c.replace(steps=0), optional=True))]


def _one_d_experiments(one_d: SweepConfig, frozen: SweepConfig, fit_range) -> list[Experiment]:
    """The 1D rows: trained by the default schedule, with knot moves (`one_d`), and by the
    reference's (`1d_reference`: no knot moves), before its all-parameter steps (0 steps),
    the knot moves alone (`newton-knots`) and gates-frozen (`frozen`) from evenly spaced
    knots; and the reference's schedule and frozen gates again from knots placed for the
    target (`inits.placed_knots`), the trained ones for the GLU and GQU only (the MLP's
    gain from placement is small: 1.37x predicted for this target, against 2.8x for the
    GLU)."""
    reference = one_d.replace(knot_moves=0)
    stages = reference.replace(steps=0)
    knot_moves = one_d.replace(optimizer="newton-knots", steps=None)
    placed = reference.replace(archs=("glu", "gqu"), knots="placed")
    placed_frozen = frozen.replace(knots="placed")
    return [Experiment("1d", one_d, fit_range), Experiment("1d_reference", reference, fit_range),
            Experiment("1d_stages", stages, fit_range, optional=True),
            Experiment("1d_knot_moves", knot_moves, fit_range, optional=True),
            Experiment("1d_frozen", frozen, fit_range), Experiment("1d_placed", placed, fit_range),
            Experiment("1d_placed_frozen", placed_frozen, fit_range)]


# Fig. 13's series: (experiment, legend label; {steps}: the all-parameter steps)
STEP_SERIES = (("1d_stages", "0 all-parameter steps"), ("1d_reference", "{steps} all-parameter steps"),
               ("1d_knot_moves", "knot moves, 0 all-parameter steps"),
               ("1d", "knot moves, then {steps} all-parameter steps"))


def stages_only(config: SweepConfig) -> bool:
    """A `newton-cascade` run with no all-parameter steps: its spline and {G, g} stages only."""
    return config.train.has_gate_stage and config.train.steps == 0
