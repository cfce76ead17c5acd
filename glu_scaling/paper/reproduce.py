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
  (`glu_scaling.paper.illustrations`).

`--quick` runs the same pipeline with fewer widths, seeds, points and Newton steps
(a small fraction of the full run's time); its slopes are rougher and say so in the
table's protocol column.  `--redraw` runs no sweeps: it draws from the records a
previous run left in OUT/results/ (the committed full run's `figures/results/`); only the
illustrative figures compute their few small models.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from glu_scaling import inits, results, sweeps
from glu_scaling.errors import UsageError, check_choice, unknown
from glu_scaling.paper import illustrations
from glu_scaling.paper.experiments import (
    FIG6_PROBLEMS,
    FIG7_PROBLEMS,
    FIGURES,
    KNOT_SERIES,
    STEP_SERIES,
    Experiment,
    experiments,
)
from glu_scaling.paper.figures import fig3, fig4, fig5, fig6, fig7, fig12, fig13
from glu_scaling.paper.table1 import table1_markdown, table1_rows


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


# ------------------------------------------------------------------ figures


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
    starts = {name: by_name[name].config.init.factor_init for name in records
              if inits.has_later_factors(by_name[name].config.archs)}
    if starts:
        results.write_json_atomic(folder / FACTOR_INIT_FILE, {**_recorded_factor_inits(folder), **starts})


def _recorded_factor_inits(folder: Path) -> dict[str, str]:
    """FACTOR_INIT_FILE's {experiment: factor_init}; {} when there is none (records written
    before the option existed, whose GQUs drew their factors: "random")."""
    path = folder / FACTOR_INIT_FILE
    if not path.is_file():
        return {}
    try:
        starts = json.loads(path.read_text())
    except ValueError:
        starts = None
    if not isinstance(starts, dict) or any(v not in inits.FACTOR_INITS for v in starts.values()):
        raise UsageError(f"{str(path)!r} must map experiment names to one of {', '.join(inits.FACTOR_INITS)}; "
                         "fix it or move it away")
    return starts


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
        wanted |= {name for name, _ in STEP_SERIES}
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
      quick: the small version (fewer widths, seeds, points and steps).
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
        exps = [dataclasses.replace(e, config=e.config.replace(factor_init=recorded.get(e.name, "random")))
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
        paths += fig13(records, out, one_d.train.n_steps, by_name["1d"].fit_range)
    if "fig6" in figures:
        paths += fig6(records, out)
    if "fig7" in figures:
        paths += fig7(records, out)
    illustrative = [f for f in figures if f in ("fig1", "fig2", "fig8", "fig9", "fig10", "fig11")]
    if illustrative:
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


