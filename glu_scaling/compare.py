"""Constructions vs least-squares splines vs trained networks (paper.md §4, §7 Fig. 4).

`run_construct(problem, archs, widths, ...)` scores, for a registered 1D problem
and every architecture and width n, on the very train/test data a sweep of that
problem uses (`load_dataset`):

=============================  ==============================================================
method                         what it is
=============================  ==============================================================
``construction``               `constructions.construct(arch, f, n, curvature=...)`, no training;
                               the record carries ``predicted_rmse`` (`constructions.predicted_rmse`)
``lsq-spline-deg{p}``          least-squares spline of degree p = 1, 2, 3 for mlp, glu, gqu on
                               ``n_knots = constructions.n_cells(arch, n, curvature)`` uniform cells
                               (the construction's cells; ``spline_knots="width"``: n cells)
``placed-spline-deg{p}``       (optional) the same on as many cells placed for the target
                               (`knots.equidistributed_breakpoints`): what moving knots can buy
``newton-splines``             `sweeps.run_sweep` from the spline init, gates frozen
``newton-cascade``             `sweeps.run_sweep` from the spline init, the reference's cascade
``cascade-from-construction``  `train.train_batch` from the construction, ``newton-cascade``
``newton-from-construction``   (optional) the same start, ``newton``: all-parameter steps only
=============================  ==============================================================

From a construction the layer cascade is the better start (docs/constructions.md,
"Training from a construction"), and never ends above the construction's training error.
Deterministic methods are written once (``seed = seeds[0]``), trained ones per seed.
A results folder holds config.json (``"kind": "construct"``), results.jsonl (one record
per method, arch, width and seed), slopes.json (rows per method) and fig4_construction.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from glu_scaling import (
    compilation,
    models,
    planning,
    plots,
    problems,
    results,
    schedules,
    slopes,
    specs,
    splines,
    sweeps,
    train,
)
from glu_scaling import constructions as C
from glu_scaling.config import MAX_POINTS, check_sweep, load_dataset, sweep_config
from glu_scaling.errors import UsageError, check_choice, check_positive_int
from glu_scaling.knots import equidistributed_breakpoints

METHODS = ("construction", "lsq-spline", "placed-spline", "newton-splines", "newton-cascade",
           "cascade-from-construction", "newton-from-construction")
DEFAULT_METHODS = ("construction", "lsq-spline", "newton-splines", "newton-cascade", "cascade-from-construction")
SPLINE_FAMILIES = ("lsq-spline", "placed-spline")  # method "<family>-deg{p}"
# Newton schedule of each method trained from a construction (see the module docstring)
FROM_CONSTRUCTION = {"cascade-from-construction": "newton-cascade", "newton-from-construction": "newton"}
TRAINED_METHODS = ("newton-splines", "newton-cascade", *FROM_CONSTRUCTION)  # each needs a Newton step's memory
SPLINE_DEGREE = {"mlp": 1, "glu": 2, "gqu": 3}
SPLINE_KNOTS = ("cells", "width")
# line style and marker of each method in the figure (colour is the architecture)
STYLES = {
    "construction": ("-", "o"),
    "lsq-spline": (":", "x"),
    "placed-spline": ((0, (6, 2)), "+"),
    "newton-splines": ((0, (1, 1, 3, 1)), "v"),
    "newton-cascade": ("--", "s"),
    "cascade-from-construction": ("-.", "^"),
    "newton-from-construction": ((0, (3, 1, 1, 1, 1, 1)), "D"),
}
SLOPE_STATUSES = slopes.FIT_STATUSES  # a stalled model still has a valid, finite RMSE


def spline_method(arch: str, family: str = "lsq-spline") -> str:
    """Method name of the spline matched to `arch`: "lsq-spline-deg1/2/3" (or "placed-spline-...")."""
    return f"{family}-deg{SPLINE_DEGREE[arch]}"


def method_family(method: str) -> str:
    """"lsq-spline-deg2" -> "lsq-spline", "placed-spline-deg2" -> "placed-spline"; other
    methods are their own family."""
    return next((f for f in SPLINE_FAMILIES if method.startswith(f + "-deg")), method)


def arch_curvature(arch: str, curvature: str) -> str:
    """The curvature a construction of `arch` uses: the MLP has none ("left", ignored);
    the GLU has no Hermite variant, so "hermite" means its best Taylor choice, "mid"."""
    check_choice("curvature", curvature, C.CURVATURES)
    if arch == "mlp":
        return "left"
    if arch == "glu" and curvature == "hermite":
        return "mid"
    return curvature


# ------------------------------------------------------------------ checks


def check_problem(problem: str):
    """The scalar target f of a registered 1D problem; UsageError for anything else."""
    if isinstance(problem, str) and problem.startswith("file:"):
        raise UsageError(f"construct needs an analytic 1D target, not a data file ({problem!r}); "
                         "accepted: " + ", ".join(_one_d_problems()))
    spec = problems.get_problem(problem)
    if spec.n_in != 1:
        raise UsageError(f"construct needs a 1D problem; {problem!r} has n_in={spec.n_in}; "
                         "accepted: " + ", ".join(_one_d_problems()))
    return problems.scalar_target(problem)


def _one_d_problems() -> list[str]:
    names = []
    for name, spec in problems.REGISTRY.items():
        if spec.n_in == 1 and not spec.tabular:
            try:
                problems.scalar_target(name)
            except UsageError:
                continue
            names.append(name)
    return names


def _check_archs(archs) -> tuple[str, ...]:
    archs = (archs,) if isinstance(archs, str) else tuple(archs)
    if not archs:
        raise UsageError("archs is empty; accepted: " + ", ".join(C.ARCHS))
    for arch in archs:
        check_choice("construction architecture", arch, C.ARCHS)
    return tuple(dict.fromkeys(archs))


def _check_methods(methods) -> tuple[str, ...]:
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    if not methods:
        raise UsageError("methods is empty; accepted: " + ", ".join(METHODS))
    for m in methods:
        check_choice("method", m, METHODS)
    return tuple(m for m in METHODS if m in methods)


# ------------------------------------------------------------------ data


def load_data(problem: str, *, n_data: int = 2000, n_test: int = 2000,
              chunk: int = 2048) -> tuple[problems.Dataset, train.TrainData, int]:
    """The dataset a sweep of `problem` trains on (`load_dataset`, data seed 0, float64),
    and its `train.prepare_data` form.  Returns (dataset, data, chunk used)."""
    check_problem(problem)
    if check_positive_int("n_data", n_data, maximum=MAX_POINTS) < 2:
        raise UsageError(f"n_data must be at least 2, got {n_data!r}")
    check_positive_int("n_test", n_test, maximum=MAX_POINTS)
    config = sweep_config(archs=("mlp",), widths=(1,), seeds=(0,), problem=problem, n_data=n_data,
                               n_test=n_test, chunk=chunk)
    dataset = load_dataset(config)  # checks n_data, n_test and float64 (jax_enable_x64)
    data, chunk = train.prepare_data(dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test, chunk)
    return dataset, data, chunk


# ------------------------------------------------------------------ records


def _base_record(arch: str, problem: str, n: int, seed: int, method: str, optimizer: str) -> dict:
    return {"arch": arch, "activation": "relu", "problem": problem, "n_in": 1, "n_out": 1, "n_hidden": n,
            "n_params": models.param_count(arch, 1, n, 1), "seed": seed, "optimizer": optimizer,
            "method": method}


@compilation.jit
def _rmse_pair(params: models.Params, data: train.TrainData):
    """(train RMSE, test RMSE) exactly as `train.train_one` scores a model."""
    return (train.rmse(params, data.x, data.t, data.weight), train.rmse(params, data.x_test, data.t_test))


def construction_records(problem: str, arch: str, widths: Sequence[int], data: train.TrainData, *,
                         curvature: str = "left", seed: int = 0, dtype=None) -> list[dict]:
    """Score `constructions.construct(arch, f, n)` for each n on the (padded) training and the test data.

    Records carry method "construction", optimizer "none", status "ok", curvature,
    n_cells and predicted_rmse (`constructions.predicted_rmse`, leading-order theory on
    the whole interval, to compare with test_rmse).
    """
    f = check_problem(problem)
    curv = arch_curvature(arch, curvature)
    recs = []
    for n in widths:
        t0 = time.perf_counter()
        params = C.construct(arch, f, n, curvature=curv, dtype=dtype)
        tr, te = (float(v) for v in _rmse_pair(params, data))
        seconds = time.perf_counter() - t0
        rec = _base_record(arch, problem, n, seed, "construction", "none")
        rec.update(train_rmse=tr, test_rmse=te, status="ok" if np.isfinite(tr) and np.isfinite(te) else "diverged",
                   seconds=seconds, curvature=curv, n_cells=C.n_cells(arch, n, curv),
                   predicted_rmse=C.predicted_rmse(arch, f, n, curvature=curv, dtype=dtype))
        recs.append(rec)
    return recs


def spline_records(problem: str, arch: str, widths: Sequence[int], dataset: problems.Dataset, *,
                   curvature: str = "left", spline_knots: str = "cells", seed: int = 0,
                   family: str = "lsq-spline") -> list[dict]:
    """The least-squares spline baseline matched to `arch` for each width n.

    Degree 1, 2, 3 for mlp, glu, gqu; n_knots = `constructions.n_cells(arch, n, curvature)`
    (spline_knots="cells", the construction's cells) or n ("width"); uniform cells, or
    (family "placed-spline") cells placed for the problem's f by
    `knots.equidistributed_breakpoints`.  Records carry method "{family}-deg{p}",
    optimizer "lsq", degree, n_knots, and n_params = n_knots + p (the spline's
    coefficients; n_hidden is the matched width n).
    """
    check_choice("spline_knots", spline_knots, SPLINE_KNOTS)
    check_choice("spline family", family, SPLINE_FAMILIES)
    f = check_problem(problem) if family == "placed-spline" else None
    curv = arch_curvature(arch, curvature)
    degree = SPLINE_DEGREE[arch]
    x_train, y_train = np.asarray(dataset.x_train)[:, 0], np.asarray(dataset.y_train)[:, 0]
    x_test, y_test = np.asarray(dataset.x_test)[:, 0], np.asarray(dataset.y_test)[:, 0]
    recs = []
    for n in widths:
        t0 = time.perf_counter()
        n_knots = C.n_cells(arch, n, curv) if spline_knots == "cells" else n
        breaks = None if f is None else equidistributed_breakpoints(f, n_knots, degree)
        spline = splines.fit_lsq_spline(x_train, y_train, degree, n_knots, breaks=breaks)
        tr = splines.rmse(spline(x_train), y_train)
        te = splines.rmse(spline(x_test), y_test)
        rec = _base_record(arch, problem, n, seed, spline_method(arch, family), "lsq")
        rec.update(train_rmse=tr, test_rmse=te, status="ok", seconds=time.perf_counter() - t0,
                   degree=degree, n_knots=n_knots, n_params=n_knots + degree)
        recs.append(rec)
    return recs


def train_from_constructions(arch: str, f, widths: Sequence[int], width: int, data: train.TrainData,
                             config: schedules.TrainConfig, *, curvature: str = "left", dtype=None,
                             batch_size: int | None = None) -> tuple[models.Params, dict, float]:
    """Train the constructions of `widths` (each padded to `width`) in one compiled call.

    The construction params are stacked along a leading batch axis and passed to
    `train.train_batch`.  Returns (trained params (B, ...), info arrays (B,) as NumPy,
    wall seconds).
    """
    t0 = time.perf_counter()
    curv = arch_curvature(arch, curvature)
    stack = [C.construct(arch, f, n, curvature=curv, dtype=dtype, width=width) for n in widths]
    params = jax.tree.map(lambda *leaves: jnp.stack(leaves), *stack)
    batch = batch_size or planning.default_batch_size(len(widths))
    params, info = train.train_batch(params, data, config, batch_size=batch)
    info = jax.tree.map(np.asarray, info)
    return params, info, time.perf_counter() - t0


def from_construction_records(problem: str, arch: str, widths: Sequence[int], data: train.TrainData, *,
                              method: str = "cascade-from-construction", curvature: str = "left",
                              steps: int | None = None, seed: int = 0, dtype=None, chunk: int = 2048) -> list[dict]:
    """Train from each construction with the schedule of `method` (`FROM_CONSTRUCTION`:
    "cascade-from-construction" -> "newton-cascade", "newton-from-construction" -> "newton"),
    widths bucketed as a sweep buckets them (`planning.plan_buckets`).  Records carry
    optimizer (the schedule), steps (accepted Newton steps), bucket_width, curvature."""
    f = check_problem(problem)
    check_choice("from-construction method", method, FROM_CONSTRUCTION)
    optimizer = FROM_CONSTRUCTION[method]
    curv = arch_curvature(arch, curvature)
    config = schedules.TrainConfig(optimizer, steps, chunk=chunk)
    n_points = int(np.asarray(data.weight).sum())
    cost = planning.seconds_per_w2(arch, 1, 1, n_points, 1, config)
    recs = []
    for bucket in planning.plan_buckets(widths, seconds_per_w2=cost):
        width = max(bucket)
        _, info, seconds = train_from_constructions(arch, f, bucket, width, data, config, curvature=curv,
                                                    dtype=dtype)
        for b, n in enumerate(bucket):
            rec = _base_record(arch, problem, n, seed, method, optimizer)
            rec.update(train_rmse=float(info["train_rmse"][b]), test_rmse=float(info["test_rmse"][b]),
                       status=train.STATUSES[int(info["status"][b])], seconds=seconds / len(bucket),
                       steps=int(info["steps"][b]), bucket_width=width, curvature=curv)
            recs.append(rec)
    return recs


# ------------------------------------------------------------------ slopes and figure


def slopes_by_method(records: list[dict], *, fit_range=None) -> list[dict]:
    """slopes.json rows: `slopes.slopes_table` per method (statuses ok and stalled), each with "method"."""
    rows = []
    arch_order = {a: i for i, a in enumerate(dict.fromkeys(r["arch"] for r in records))}
    for method in dict.fromkeys(r["method"] for r in records):
        sel = [r for r in records if r["method"] == method]
        table = slopes.slopes_table(sel, fit_range=fit_range, statuses=SLOPE_STATUSES)
        for row in sorted(table, key=lambda r: arch_order[r["arch"]]):  # stable: n_hidden before n_params
            rows.append({"method": method, **row})
    return rows


def _positive(value) -> bool:
    """A finite, positive number (files hold None where a value was not finite)."""
    return value is not None and bool(np.isfinite(value)) and value > 0


def construct_figure(records: list[dict], path_stem, *, title: str | None = None, fit_range=None) -> list[Path]:
    """Fig. 4 style: test RMSE vs n, log-log; colour per arch, line style per method, slopes in the legend.

    Several seeds: points for every model, the line through the medians; the slope is
    `slopes.fit_slope` over all of them (seeds as groups).
    """
    plt = plots._mpl()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    archs = list(dict.fromkeys(r["arch"] for r in records))
    methods = list(dict.fromkeys(r["method"] for r in records))
    for i, arch in enumerate(archs):
        color = plots.PALETTE[i % len(plots.PALETTE)]
        for method in methods:
            rec = [r for r in records if r["arch"] == arch and r["method"] == method
                   and r["status"] in SLOPE_STATUSES and _positive(r["test_rmse"])]
            if not rec:
                continue
            ls, marker = STYLES.get(method_family(method), ("-", "o"))
            xs = np.array([r["n_hidden"] for r in rec], float)
            ys = np.array([r["test_rmse"] for r in rec], float)
            ux = np.unique(xs)
            med = np.array([np.median(ys[xs == u]) for u in ux])
            label = f"{arch} {method}"
            if len(ux) >= 2:
                fit = slopes.fit_slope(xs, ys, groups=[r["seed"] for r in rec], fit_range=fit_range)
                label += f"  {fit.slope:.2f}"
            if len(ys) > len(ux):
                ax.scatter(xs, ys, s=5, color=color, marker=marker, alpha=0.4, lw=0)
            ax.plot(ux, med, color=color, ls=ls, marker=marker, ms=2.5, lw=1.0, mfc="none", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    plots.superscript_decades(ax.yaxis)
    widths = sorted({int(r["n_hidden"]) for r in records})
    if len(widths) <= 12:  # label the widths themselves, not powers of ten
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_xticks([], minor=True)
    else:
        plots.superscript_decades(ax.xaxis)
    ax.set_xlabel(plots.AXIS_LABELS["n_hidden"])
    ax.set_ylabel("test RMSE")
    ax.grid(True, which="major", lw=0.3, alpha=0.5)
    ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=6, title="arch method  slope",
              title_fontsize=6)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    paths = plots.save(fig, Path(path_stem))
    plt.close(fig)
    return paths


# ------------------------------------------------------------------ the study


PREVIOUS = "results.previous.jsonl"  # the last run's records, kept until this run has finished


def _prepare_out(out, config: dict) -> Path:
    """The construct folder `out`, checked against `config`: a folder of another kind of
    run, or of a construct run with other settings, is refused (results are never mixed).
    A rerun with the same settings recomputes everything; the previous records are kept
    as results.previous.jsonl until the new run has finished."""
    folder = results.prepare_folder(out)
    old = results.read_config(folder)
    if old is not None:
        kind = old.get("kind", "sweep")
        if kind != "construct":
            raise UsageError(f"{str(folder)!r} holds results of a {kind!r} run, not of a 'construct' run; "
                             "use another --out")
        diffs = [k for k in config if old.get(k) != config[k]]
        if diffs:
            k = diffs[0]
            raise UsageError(f"{str(folder)!r} holds construct results with {k}={old.get(k)!r}, not {config[k]!r}; "
                             "results are never mixed: use another --out, or delete the folder to start afresh")
    if (folder / PREVIOUS).exists():  # an interrupted rerun: PREVIOUS is complete, results.jsonl partial
        (folder / "results.jsonl").unlink(missing_ok=True)
    elif (folder / "results.jsonl").exists():
        (folder / "results.jsonl").replace(folder / PREVIOUS)
    (folder / "slopes.json").unlink(missing_ok=True)
    return folder


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def run_construct(problem: str, archs, widths, *, out, seeds=(0,), n_data: int = 2000, n_test: int = 2000,
                  curvature: str = "left", steps: int | None = None, progress: bool = False,
                  methods: Sequence[str] = DEFAULT_METHODS, spline_knots: str = "cells", fit_range=None) -> list[dict]:
    """Constructions vs LSQ splines vs trained networks on a registered 1D problem.

    Args:
      problem: a registered 1D analytic problem (`glu-scaling problems`, n_in=1).
      archs: "mlp", "glu", "gqu" or a sequence of them.
      widths, seeds: sequences or SPEC strings ("8,16,32", "4:65:4").
      out: results folder (config.json, results.jsonl, slopes.json, fig4_construction.png/.pdf).
      n_data, n_test: training points (uniform random, data seed 0) and test grid points,
        exactly the data of `sweeps.run_sweep` with the same settings.
      curvature: Taylor point of the GLU and GQU constructions ("left", "mid"; "hermite"
        for GQU, meaning "mid" for the GLU; the MLP has none); see `arch_curvature`.
      steps: all-parameter Newton steps of every trained method after its layer stages
        (None: 100; newton-splines has none).
      progress: messages (and the sweep's progress bar) on stderr.
      methods: a subset of `METHODS` (default `DEFAULT_METHODS`, all but
        "placed-spline" and "newton-from-construction"); "lsq-spline" and
        "placed-spline" give the degree matched to each arch.
      spline_knots: "cells" (n_knots = constructions.n_cells(arch, n, curvature)) or "width" (n).
      fit_range: optional (lo, hi) on n for the slopes.

    Returns:
      Records, one per (method, arch, width[, seed]), in `METHODS` order: the
      results.jsonl fields (arch, activation, problem, n_in, n_hidden, n_params,
      seed, optimizer, train_rmse, test_rmse, status, seconds) plus method, n_out,
      and: construction: curvature, n_cells, predicted_rmse; lsq-spline, placed-spline: degree,
      n_knots (n_params = n_knots + degree); trained: steps, bucket_width (the
      *-from-construction methods also curvature).  optimizer is "none" (construction),
      "lsq" (spline) or the Newton schedule ("newton-splines", "newton-cascade" for
      both newton-cascade and cascade-from-construction, "newton" for
      newton-from-construction).
    """
    check_problem(problem)
    if out is None or not str(out).strip():
        raise UsageError(f"out must be a results folder path, got {out!r}")
    if fit_range is not None:
        fit_range = slopes.check_fit_range(fit_range)
    archs = _check_archs(archs)
    widths = tuple(specs.parse_spec(widths, "widths"))
    seeds = tuple(specs.parse_spec(seeds, "seeds", minimum=0))
    methods = _check_methods(methods)
    check_choice("curvature", curvature, C.CURVATURES)
    check_choice("spline_knots", spline_knots, SPLINE_KNOTS)
    base = sweep_config(archs=archs, widths=widths, seeds=seeds, problem=problem, optimizer="newton-cascade",
                             steps=steps, n_data=n_data, n_test=n_test)
    check_sweep(base)  # steps, n_data, n_test with the sweep's limits, before anything is written
    dataset, data, chunk = load_data(problem, n_data=n_data, n_test=n_test)
    if any(m in methods for m in TRAINED_METHODS):
        planning.check_memory(base, dataset)
    config = {"kind": "construct", "problem": problem, "archs": list(archs), "widths": list(widths),
              "seeds": list(seeds), "n_data": n_data, "n_test": n_test, "data_seed": base.data_seed,
              "curvature": curvature, "steps": steps, "methods": list(methods), "spline_knots": spline_knots,
              "fit_range": None if fit_range is None else list(fit_range), "dtype": base.dtype,
              "activation": "relu",
              "from_construction": {m: FROM_CONSTRUCTION[m] for m in methods if m in FROM_CONSTRUCTION}}
    folder = _prepare_out(out, results.json_safe(config))
    results.write_json_atomic(folder / "config.json", config)
    seed0 = seeds[0]
    records: list[dict] = []

    def add(recs: list[dict]) -> None:
        results.append_records(folder, recs)
        records.extend(recs)

    for arch in archs:
        if "construction" in methods:
            _say(progress, f"{arch}: constructions")
            add(construction_records(problem, arch, widths, data, curvature=curvature, seed=seed0))
        for family in SPLINE_FAMILIES:
            if family in methods:
                placed = ", knots placed for f" if family == "placed-spline" else ""
                _say(progress, f"{arch}: least-squares splines{placed}")
                add(spline_records(problem, arch, widths, dataset, curvature=curvature, spline_knots=spline_knots,
                                   seed=seed0, family=family))
    for optimizer in ("newton-splines", "newton-cascade"):
        if optimizer in methods:
            _say(progress, f"{optimizer} from the spline init")
            recs = sweeps.run_sweep(base.replace(optimizer=optimizer), None, progress=progress)
            add([{**r, "method": optimizer} for r in recs])
    for method in FROM_CONSTRUCTION:
        if method in methods:
            for arch in archs:
                _say(progress, f"{arch}: {method}")
                add(from_construction_records(problem, arch, widths, data, method=method, curvature=curvature,
                                              steps=steps, seed=seed0, chunk=chunk))
    order = {m: i for i, m in enumerate(METHODS)}
    records.sort(key=lambda r: (order[method_family(r["method"])], archs.index(r["arch"]), r["n_hidden"], r["seed"]))
    results.write_json_atomic(folder / "slopes.json", slopes_by_method(records, fit_range=fit_range))
    construct_figure(records, folder / "fig4_construction", title=f"{problem}: constructions, splines, training",
                     fit_range=fit_range)
    (folder / PREVIOUS).unlink(missing_ok=True)
    return records


def slope_summary(rows: list[dict], x: str = "n_hidden") -> list[str]:
    """Lines of a slopes table (method, arch, slope, 95% CI, r2) for printing."""
    def num(v):  # slopes.json holds None where a value is not finite (e.g. a CI from 2 widths)
        return f"{float('nan') if v is None else v:7.3f}"

    lines = [f"{'method':<26} {'arch':<5} {'slope':>7}  {'95% CI':<17} {'r2':>7}"]
    for r in rows:
        if r["x"] == x:
            lines.append(f"{r['method']:<26} {r['arch']:<5} {num(r['slope'])}  "
                         f"[{num(r['ci_low'])}, {num(r['ci_high'])}] {num(r['r2'])}")
    return lines
