"""How to train: `TrainConfig` (optimizer, steps, learning rate, gate steps) and the
Newton schedules as data.

A Newton optimiser is a schedule: a chain of stage builders (`SplineStages`,
`KnotStage`, `GateStage`, `AllStage`), as optax chains transformations into optimisers,
each giving a model with k factors its stages (which parameter groups move, for how many
steps):

* ``newton-splines``: one least-squares step each on {D, d}, then {U_1, u_1}, ...,
  {U_k, u_k}; gates frozen at the spline init (the reference's "newton_only_splines").
* ``newton-cascade``: the above; for a 1D spline model, up to `knot_moves` knot moves
  (default 4), each followed by the least-squares steps again; then `gate_steps` steps on
  {G, g} (default 1; the reference's code takes 3), then `steps` on all parameters
  (default 100; the reference's "newton_layer_cascade" has no knot moves).
* ``newton-knots``: the spline stages and the knot moves only.
* ``newton``: `steps` steps on all parameters from the start.

Why knot moves before the all-parameter steps: Newton on all parameters is local, and
from evenly spaced knots it leaves wide 1D models 2-3x above the same spline on knots
placed for f.  The knot stage moves the knots as de Boor's adaptive placement does, from
the fit alone, so the all-parameter steps start near the best knots (docs/design.md,
"Knot moves").

``adam``, ``adamw`` and ``lbfgs`` are full-batch optax baselines (`FIRST_ORDER`; adam and
adamw default to lr 1e-4 and 1000 steps, as the reference).  A new training stage is a
builder here (and, if it needs a new kind of solve, a step in `newton`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import optax

from glu_scaling.errors import MAX_COUNT, UsageError, check_choice, check_positive_int
from glu_scaling.models import Group, Layout, gated_layout


class Stage(NamedTuple):
    """A Newton stage: which parameter groups move, for how many steps; kind "knots": up to
    `steps` knot moves of the gate group (`train._knot_stage`), each with its least-squares
    steps on the layout's cascade."""

    groups: tuple[Group, ...]
    steps: int
    kind: str = "newton"


@dataclasses.dataclass(frozen=True)
class SplineStages:
    """One linear least-squares step on each group the output is linear in, in the layout's
    cascade order ({D, d}, then each factor group in turn for the gated family); the
    gates stay where the init put them (the model is then a spline on fixed knots)."""

    def stages(self, layout: Layout, config: TrainConfig) -> list[Stage]:
        return [Stage((group,), 1) for group in layout.cascade]


@dataclasses.dataclass(frozen=True)
class KnotStage:
    """Up to `config.knot_moves` knot moves (`knots.moved_knots`), each followed by the
    spline stages again; only for units whose knots can move (`Layout.knots`: a 1D affine
    gate and a degree), none for any other."""

    def stages(self, layout: Layout, config: TrainConfig) -> list[Stage]:
        return [Stage((layout.gate,), config.knot_moves, "knots")] if layout.knots else []


@dataclasses.dataclass(frozen=True)
class GateStage:
    """`config.gate_steps` Newton steps on the gates {G, g} (the knots and facings); none
    for a unit without a gate group."""

    def stages(self, layout: Layout, config: TrainConfig) -> list[Stage]:
        return [] if layout.gate is None else [Stage((layout.gate,), config.gate_steps)]


@dataclasses.dataclass(frozen=True)
class AllStage:
    """`config.n_steps` Newton steps on every parameter."""

    def stages(self, layout: Layout, config: TrainConfig) -> list[Stage]:
        return [Stage(layout.groups, config.n_steps)]


NEWTON_SCHEDULES = {
    "newton-splines": (SplineStages(),),
    "newton-cascade": (SplineStages(), KnotStage(), GateStage(), AllStage()),
    "newton-knots": (SplineStages(), KnotStage()),
    "newton": (AllStage(),),
}


class FirstOrder(NamedTuple):
    """An optax baseline: its transformation for a learning rate, and whether its update
    needs the loss and its function (optax's line-search optimisers, L-BFGS)."""

    transform: Callable[[float], optax.GradientTransformation]
    needs_value: bool = False


FIRST_ORDER = {"adam": FirstOrder(optax.adam), "adamw": FirstOrder(optax.adamw),
               "lbfgs": FirstOrder(optax.lbfgs, needs_value=True)}


OPTIMIZERS = (*NEWTON_SCHEDULES, *FIRST_ORDER)


DEFAULT_STEPS = {"newton-splines": 0, "newton-knots": 0, "newton-cascade": 100, "newton": 100, "adam": 1000,
                 "adamw": 1000, "lbfgs": 1000}


DEFAULT_LR = {"adam": 1e-4, "adamw": 1e-4, "lbfgs": 1.0}


DEFAULT_KNOT_MOVES = 4


def _check_count(name: str, flag: str, value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value <= MAX_COUNT:
        raise UsageError(f"{name} ({flag}) must be an integer in [0, {MAX_COUNT}] ({what}), got {value!r}")
    return int(value)


def check_gate_steps(gate_steps) -> int:
    """`gate_steps` if it is an integer in [0, MAX_COUNT], else a one-line UsageError."""
    return _check_count("gate_steps", "--gate-steps", gate_steps,
                        "newton-cascade's Newton steps on the gates; 1 by default, the reference's code takes 3")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train one model, each setting checked here once (hashable: it keys the jit cache)."""

    optimizer: str = "newton-cascade"  # a Newton schedule (NEWTON_SCHEDULES) or an optax baseline (FIRST_ORDER)
    steps: int | None = None  # all-parameter Newton steps, or first-order steps (None: DEFAULT_STEPS)
    learning_rate: float | None = None  # first-order optimisers' (None: DEFAULT_LR)
    gate_steps: int = 1  # steps of a schedule's gate stage (the reference's code takes 3)
    knot_moves: int = DEFAULT_KNOT_MOVES  # most knot moves of a schedule's knot stage (1D spline models)
    chunk: int = 2048  # data points per Jacobian chunk in the Hessian build (memory, not the model)

    def __post_init__(self):
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int | np.integer)
                                       or not 0 <= self.steps <= MAX_COUNT):
            raise UsageError(f"steps must be an integer in [0, {MAX_COUNT}], got {self.steps!r}")
        lr = self.learning_rate
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float | np.number)
                               or not np.isfinite(lr) or lr <= 0):
            raise UsageError(f"learning rate (--lr) must be a positive finite number, got {lr!r}")
        check_gate_steps(self.gate_steps)
        _check_count("knot_moves", "--knot-moves", self.knot_moves, "the most knot moves of a 1D spline model")
        if self.knot_moves != DEFAULT_KNOT_MOVES and not self.has_knot_stage:
            raise UsageError(f"knot_moves (--knot-moves) counts the knot stage's moves; optimizer "
                             f"{self.optimizer!r} has none (newton-cascade and newton-knots do), so leave it at "
                             f"{DEFAULT_KNOT_MOVES} (got {self.knot_moves!r})")
        if self.gate_steps != 1 and not self.has_gate_stage:
            raise UsageError(f"gate_steps (--gate-steps) counts newton-cascade's steps on the gates; optimizer "
                             f"{self.optimizer!r} has no gate stage, so leave it at 1 (got {self.gate_steps!r})")
        check_positive_int("chunk", self.chunk)

    @property
    def schedule(self) -> tuple:
        """The Newton schedule's stage builders (empty for a first-order optimiser)."""
        return NEWTON_SCHEDULES.get(self.optimizer, ())

    @property
    def newton(self) -> bool:
        return self.optimizer in NEWTON_SCHEDULES

    @property
    def has_gate_stage(self) -> bool:
        return any(isinstance(b, GateStage) for b in self.schedule)

    @property
    def has_knot_stage(self) -> bool:
        return any(isinstance(b, KnotStage) for b in self.schedule)

    @property
    def uses_steps(self) -> bool:
        """Whether `steps` counts anything: an all-parameter stage or first-order steps."""
        return not self.newton or any(isinstance(b, AllStage) for b in self.schedule)

    @property
    def splines_only(self) -> bool:
        """Only least-squares stages on the factors and D: models of several factor counts
        can share a program (`train_batch`'s `factors`)."""
        return self.schedule == (SplineStages(),)

    def stages(self, layout: Layout | int) -> list[Stage]:
        """The schedule's stages for a unit row `layout` (`models.Layout`; an int k: the gated
        family's model with k factors), those of 0 steps left out."""
        if not isinstance(layout, Layout):
            layout = gated_layout(layout, 1, 1)  # the groups do not depend on the sizes
        return [stage for builder in self.schedule for stage in builder.stages(layout, self) if stage.steps > 0]

    @property
    def n_steps(self) -> int:
        return DEFAULT_STEPS[self.optimizer] if self.steps is None else self.steps

    @property
    def lr(self) -> float:
        return DEFAULT_LR.get(self.optimizer, 0.0) if self.learning_rate is None else self.learning_rate
