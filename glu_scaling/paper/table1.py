"""Table 1: the paper's slope beside ours for every experiment, with confidence
intervals, theory and each row's protocol, as Markdown, JSON rows and a printout."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from glu_scaling import inits, problems, slopes
from glu_scaling.config import SweepConfig, load_dataset
from glu_scaling.paper.experiments import PAPER_SLOPES, PROBLEM_LABELS, THEORY_1D, Experiment, stages_only


def _knot_moves(config: SweepConfig) -> int | None:
    """The schedule's knot moves where they apply (a 1D problem, a schedule with a knot
    stage), else None."""
    spec = problems.REGISTRY.get(config.problem)
    return config.train.knot_moves if config.train.has_knot_stage and spec is not None and spec.n_in == 1 \
        else None


def protocol(config: SweepConfig, dataset: problems.Dataset) -> str:
    """The table's protocol column: points, widths, seeds, optimiser, evaluation."""
    w, train = config.widths, config.train
    moves = _knot_moves(config)
    knot_moves = "" if moves is None else (f"up to {moves} knot moves, " if moves else "no knot moves, ")
    if train.splines_only:
        schedule = "newton-splines (gates frozen at the spline init, one step per layer)"
    elif not train.uses_steps:
        schedule = f"{train.optimizer} (its spline stages and {knot_moves}each followed by them again)"
    elif stages_only(config):
        gates = "one {G, g} step" if train.gate_steps == 1 else f"{train.gate_steps} {{G, g}} steps"
        schedule = f"newton-cascade with 0 all-parameter steps (its spline stages, {knot_moves}{gates})"
    else:
        schedule = f"{train.optimizer} ({knot_moves}{train.n_steps} steps)"
        if train.has_gate_stage and train.gate_steps != 1:
            schedule += f", {train.gate_steps} {{G, g}} steps before them"
    knots = ("; knots placed for the target (|f^(p+1)|^(2/(2p+3)) equidistributed, p = spline degree)"
             if config.init.knots == "placed" else "")
    if inits.has_later_factors(config.archs):
        start = "the constant 1" if config.init.factor_init == "one" else "N(0, 1) draws"
        knots += f"; GQU factor 2 starts at {start} (factor_init {config.init.factor_init!r})"
    return (f"{dataset.x_train.shape[0]} train / {dataset.x_test.shape[0]} test pts; n = {min(w)}..{max(w)} "
            f"({len(w)} widths); {len(config.seeds)} seeds; {schedule}; {config.dtype}{knots}")


def row_label(config: SweepConfig) -> str:
    """The table's problem column: the problem, then what differs from the paper's protocol."""
    parts = [PROBLEM_LABELS.get(config.problem, config.problem)]
    if config.train.optimizer != "newton-cascade":  # the paper's optimiser goes unnamed
        parts.append(config.train.optimizer)
    elif stages_only(config):
        parts.append("0 all-parameter steps")
    if config.train.has_gate_stage and config.train.gate_steps != 1:
        parts.append(f"{config.train.gate_steps} gate steps")
    if _knot_moves(config) == 0:
        parts.append("no knot moves")
    if config.init.knots != "uniform":
        parts.append(f"knots {config.init.knots}")
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
            local = octave_slopes(mine, top) if dataset.n_in == 1 else []
            # the last octave: the estimate closest to the asymptotic order
            octave = slopes.fit_records(mine, fit_range=(top / 2, top))
            # the paper's slopes are of trained models
            cascade = exp.config.train.optimizer == "newton-cascade" and not stages_only(exp.config)
            rows.append({
                "problem": exp.problem, "label": row_label(exp.config), "knots": exp.config.init.knots,
                "optimizer": exp.config.train.optimizer, "n_in": dataset.n_in, "arch": arch,
                "paper": PAPER_SLOPES.get(exp.problem, {}).get(arch) if cascade else None,
                "slope": test.slope, "ci_low": test.ci_low, "ci_high": test.ci_high, "r2": test.r2,
                "train_slope": train.slope, "train_ci_low": train.ci_low, "train_ci_high": train.ci_high,
                "octave_slope": None if octave is None else octave.slope,
                "octave_ci_low": None if octave is None else octave.ci_low,
                "octave_ci_high": None if octave is None else octave.ci_high,
                "octave_range": None if octave is None else list(octave.range),
                "theory": THEORY_1D.get(arch) if dataset.n_in == 1 else None,
                "octaves": local,
                "fit_range": list(test.range), "n_models": len(mine),
                "statuses": {s: sum(r["status"] == s for r in mine) for s in ("ok", "diverged", "stalled")},
                "protocol": protocol(exp.config, dataset),
                "experiment": exp.name,
                "train_seconds": float(sum(r.get("seconds", 0.0) for r in recs)),
            })
    return rows


ASYMPTOTIC_FROM = 16  # 1D: the slope over n = 16..n_max, where the local slopes have mostly settled


def octave_slopes(records: list[dict], top: int) -> list[dict]:
    """Local slopes of test RMSE vs n: the mean per-seed slope on each octave n..2n from
    n = 2 up to `top` (the last one ending at `top`), then on ASYMPTOTIC_FROM..top; a
    reader sees pre-asymptotic and asymptotic behaviour apart.  [{"range": [lo, hi],
    "slope", "ci_low", "ci_high"}], octaves with fewer than two widths left out."""
    bounds, lo = [], 2
    while 2 * lo < top:
        bounds.append((lo, 2 * lo))
        lo *= 2
    bounds += [(top / 2, top), (ASYMPTOTIC_FROM, top)]
    out = []
    for lo, hi in bounds:
        fit = slopes.fit_records(records, fit_range=(lo, hi))
        if fit is not None:
            out.append({"range": [lo, hi], "slope": fit.slope, "ci_low": fit.ci_low, "ci_high": fit.ci_high})
    return out


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
    one_d = [r for r in rows if r.get("octaves")]
    if one_d:
        heads = [o["range"] for o in one_d[0]["octaves"]]
        lines += ["", "## Local slopes (1D, test RMSE)", "",
                  "The same fit on each octave of widths, n..2n (the last: n_max/2..n_max), and on "
                  f"n = {ASYMPTOTIC_FROM}..n_max: the pre-asymptotic range apart from the asymptotic one.", "",
                  "| problem | arch | " + " | ".join(f"n = {lo:.0f}..{hi:.0f}" for lo, hi in heads) + " | theory |",
                  "| --- | --- | " + "--- | " * len(heads) + "--- |"]
        for r in one_d:
            by_range = {tuple(o["range"]): o["slope"] for o in r["octaves"]}
            lines.append(f"| {r['label']} | {r['arch'].upper()} | "
                         + " | ".join(_num(by_range.get(tuple(h))) for h in heads)
                         + f" | {_num(r['theory'], '{:.0f}')} |")
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


def print_table(rows: list[dict], file=sys.stdout) -> None:
    width = max([20, *(len(r["label"]) for r in rows)])
    print(f"{'problem':<{width}} {'dx':>2} {'arch':<4} {'paper':>6} {'ours':>7}  {'95% CI':<17} {'train':>7}",
          file=file)
    for r in rows:
        print(f"{r['label']:<{width}} {r['n_in']:>2} {r['arch']:<4} {_num(r['paper']):>6} "
              f"{_num(r['slope'], '{:.3f}'):>7}"
              f"  [{_num(r['ci_low'], '{:.3f}')}, {_num(r['ci_high'], '{:.3f}')}] "
              f"{_num(r['train_slope'], '{:.3f}'):>7}", file=file)
