"""The `glu-scaling` command line.

Subcommands: speedrun, sweep, construct, reproduce, problems, plot, merge.  Bad input ends with one line
on stderr naming the bad value and what is accepted, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
from pathlib import Path

from glu_scaling.errors import UsageError, did_you_mean, suggest


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes on one line (exit 2) instead of usage + error, with
    the closest subcommand, choice or flag suggested for a typo ("did you mean ...?")."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {_choice_hint(message)} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        args, extras = self.parse_known_args(args, namespace)
        if extras:  # reported by the subcommand's parser, which knows the flags it takes
            parser = self._subparser(getattr(args, "command", None)) or self
            parser.error(f"unrecognized arguments: {' '.join(extras)}{_flag_hint(extras, parser)}")
        return args

    def _subparser(self, name):
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(name)
        return None


_INVALID_CHOICE = re.compile(r"invalid choice: (?P<value>'[^']*'|\S+) \(choose from (?P<choices>.*)\)")


def _choice_hint(message: str) -> str:
    """argparse's "invalid choice: 'v' (choose from ...)" with "(did you mean 'w'?)" after 'v'."""
    m = _INVALID_CHOICE.search(message)
    if m is None:
        return message
    choices = [c.strip().strip("'") for c in m["choices"].split(",")]
    return message[:m.end("value")] + did_you_mean(m["value"].strip("'"), choices) + message[m.end("value"):]


def _flag_hint(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """" (did you mean --steps instead of --stpes?)" for the unknown flags among `extras`."""
    options = list(parser._option_string_actions)
    hints = []
    for arg in extras:
        flag = arg.split("=", 1)[0]
        hits = suggest(flag, options) if flag.startswith("-") else []
        if hits:
            hints.append(f"{hits[0]} instead of {flag}")
    return f" (did you mean {'; '.join(hints)}?)" if hints else ""


def _configure_jax() -> None:
    """float64 for convergence studies, and a persistent compilation cache so that a
    rerun skips XLA compilation (GLU_SCALING_CACHE=DIR moves it, =off disables it)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    cache = os.environ.get("GLU_SCALING_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "glu_scaling", "xla"))
    if cache.lower() not in ("off", "0", "none", ""):
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def _theory(row: dict) -> str:
    """The 1D order -(p + 1) of a piecewise-polynomial unit of degree p, for a width slope."""
    from glu_scaling import architectures

    try:
        degree = architectures.degree(row["arch"]) if row["x"] == "n_hidden" and row.get("n_in") == 1 else None
    except UsageError:  # a folder's architecture this process cannot load
        degree = None
    return "" if degree is None else f"{-(degree + 1):>7d}"


def _print_slopes(rows: list[dict]) -> None:
    w = max([6, *(len(r["arch"]) for r in rows)])
    print(f"{'arch':<{w}} {'problem':<18} {'x':<9} {'slope':>7}  {'95% CI':<17} {'r2':>6} {'theory':>7}")
    for r in rows:
        print(f"{r['arch']:<{w}} {r['problem']:<18} {r['x']:<9} {r['slope']:7.3f}  "
              f"[{r['ci_low']:7.3f}, {r['ci_high']:7.3f}] {r['r2']:6.3f} {_theory(r)}".rstrip())


def _summary(records: list[dict]) -> str:
    from collections import Counter

    counts = Counter(r["status"] for r in records)
    return ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "diverged", "stalled"))


def _finish(out: Path, records: list[dict], *, title: str, fit_range=None) -> None:
    from glu_scaling import plots, results, slopes

    all_records = results.unique_records(out)  # what run_sweep fitted into slopes.json
    rows = slopes.slopes_table(all_records, fit_range=fit_range)
    _print_slopes(rows)
    paths = plots.convergence_figure(all_records, out / "convergence", title=title, fit_range=fit_range)
    print(f"models: {len(records)} ({_summary(records)}); results in {out}/ ; plot {paths[0]}")


def _run_sweep(config, out: Path, **kwargs) -> list[dict]:
    """sweeps.run_sweep, with a note on stderr when it repaired a cut-off last line of results.jsonl."""
    from glu_scaling import results, sweeps

    cut = results.cut_off_bytes(out / "results.jsonl")
    records = sweeps.run_sweep(config, out, **kwargs)
    if cut:
        print(f"note: dropped the cut-off last line of {out / 'results.jsonl'} ({cut} bytes left by an "
              "interrupted run); finished records kept, the missing models retrained", file=sys.stderr)
    return records


def cmd_speedrun(args) -> int:
    from glu_scaling import plots, slopes, specs
    from glu_scaling.config import sweep_config
    from glu_scaling.paper.experiments import SPEEDRUN

    t0 = time.perf_counter()
    # matplotlib's import and a warm-up drawing overlap the training, whose main thread
    # mostly waits on XLA
    preload = threading.Thread(target=plots.import_pyplot, args=(True,), name="glu_scaling-import-pyplot",
                               daemon=True)
    preload.start()
    config = sweep_config(SPEEDRUN["archs"], tuple(specs.parse_spec(SPEEDRUN["widths"])),
                          tuple(specs.parse_spec(SPEEDRUN["seeds"], "seeds", minimum=0)), problem=SPEEDRUN["problem"],
                          optimizer=SPEEDRUN["optimizer"], n_data=SPEEDRUN["n_data"], n_test=SPEEDRUN["n_test"],
                          factor_init=args.factor_init)
    out = Path(args.out)
    # n = 1 is a single global polynomial, not yet a spline: fit the order from n >= 4
    fit_range = (4, max(config.widths))
    records = _run_sweep(config, out, progress=not args.quiet, fit_range=fit_range)
    preload.join()
    _finish(out, records, title="speedrun: 1/(1+9x^2), gates frozen at spline init", fit_range=fit_range)
    all_widths = {r["arch"]: r["slope"] for r in slopes.slopes_table(records) if r["x"] == "n_hidden"}
    print("slopes fitted on n >= 4; over all widths: "
          + ", ".join(f"{a} {s:.3f}" for a, s in all_widths.items()))
    print(f"speedrun wall time {time.perf_counter() - t0:.2f} s")
    return 0


def cmd_sweep(args) -> int:
    from glu_scaling import distributed, specs
    from glu_scaling.config import sweep_config

    distributed.initialize()  # multi-host when JAX_COORDINATOR_ADDRESS etc. say so (docs/scale-out.md)
    archs = tuple(a.strip() for a in args.arch.split(",") if a.strip())
    if not archs:
        raise UsageError(f"--arch {args.arch!r} names no architecture; e.g. --arch mlp,glu")
    config = sweep_config(
        archs, tuple(specs.parse_spec(args.widths, "widths")),
        tuple(specs.parse_spec(args.seeds, "seeds", minimum=0)), problem=args.problem,
        optimizer=args.optimizer, steps=args.steps, gate_steps=args.gate_steps, knot_moves=args.knot_moves,
        learning_rate=args.lr,
        n_data=args.n_data, n_test=args.n_test, data_seed=args.data_seed, activation=args.activation,
        spline_init=not args.random_init, knots=args.knots, factor_init=args.factor_init, eval=args.eval,
        target=args.target, dtype=args.dtype, batch_size=args.batch_size, devices=args.devices,
    )
    out = Path(args.out)
    fit_range = _parse_range(args.fit_range) if args.fit_range else None
    records = _run_sweep(config, out, progress=not args.quiet, fit_range=fit_range)
    if distributed.process_index() != 0:  # process 0 alone prints the slopes and draws the plot
        print(f"process {distributed.process_index()}: {len(records)} models ({_summary(records)}) in "
              f"{out / distributed.records_filename()}; `glu-scaling merge {out}` once every host is done")
        return 0
    _finish(out, records, title=f"{args.problem}, {args.optimizer}", fit_range=fit_range)
    return 0


def _folder(text: str) -> str:
    """argparse type of --out: any path but an empty one (which would mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a folder path, e.g. --out runs/mine")
    return text


def _factor_init_option(parser: argparse.ArgumentParser, default: str | None = "one") -> None:
    # checked by check_sweep, as --knots is, so the CLI and the API say the same
    parser.add_argument("--factor-init", default=default,
                        help="how a gqu's (gatedK's) factors after the first start: one (the constant 1, "
                             "so each unit starts as the glu's; default) or random (N(0,1), as the reference)")


def _parse_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise UsageError(f"malformed --fit-range {text!r}; use lo:hi, e.g. 4:128") from None
    if not 0 < lo < hi:
        raise UsageError(f"--fit-range needs 0 < lo < hi, got {text!r}")
    return lo, hi


def cmd_construct(args) -> int:
    from glu_scaling import compare

    archs = tuple(a.strip() for a in args.arch.split(",") if a.strip())
    if not archs:
        raise UsageError(f"--arch {args.arch!r} names no architecture; e.g. --arch mlp,glu,gqu")
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    out = Path(args.out)
    records = compare.run_construct(
        args.problem, archs, args.widths, out=out, seeds=args.seeds, n_data=args.n_data, n_test=args.n_test,
        curvature=args.curvature, steps=args.steps, progress=not args.quiet, methods=methods,
        fit_range=_parse_range(args.fit_range) if args.fit_range else None,
    )
    print("\n".join(compare.slope_summary(compare.slopes_by_method(records))))
    print(f"models: {len(records)} ({_summary(records)}); results in {out}/ ; "
          f"plot {out / 'fig4_construction.png'}")
    return 0


def cmd_reproduce(args) -> int:
    from glu_scaling.paper import reproduce
    from glu_scaling.paper.table1 import print_table

    names = reproduce.parse_only(args.only)
    figures = tuple(n for n in names if n != "table1")
    table = not args.no_table and (args.only is None or "table1" in names)  # --only fig3 runs fig3's sweeps only
    out = args.out or ("figures/quick" if args.quick else "figures")  # --quick never overwrites the full run
    summary = reproduce.reproduce(out, runs=args.runs, quick=args.quick, figures=figures, table=table,
                                  progress=not args.quiet, redraw=args.redraw, factor_init=args.factor_init)
    if summary["rows"]:
        print_table(summary["rows"])
    print(f"wrote {len(summary['paths'])} files to {out}/ in {summary['seconds']:.1f} s")
    return 0


def cmd_problems(args) -> int:
    from glu_scaling import problems

    for name, prob in problems.REGISTRY.items():
        print(f"{name:<22} n_in={prob.n_in}  {prob.description}")
    print(f"{'file:PATH':<22} n_in=*  your .npz (arrays x, y) or .csv (last column the target, or --target)")
    return 0


def cmd_merge(args) -> int:
    from glu_scaling import results, slopes

    folder = Path(args.dir)
    if not folder.is_dir():
        raise UsageError(f"{str(folder)!r} is not a folder; give a results folder written by sweep")
    if results.folder_kind(folder) == "sweep":  # (merge refuses other kinds itself)
        for record in results.read_records(folder):  # refused before any host file is folded in
            slopes.check_fit_record(record)
    records, n_hosts = results.merge(folder)
    rows = slopes.slopes_table(records, fit_range=results.stored_fit_range(folder))
    results.write_json_atomic(folder / "slopes.json", rows)
    _print_slopes(rows)
    print(f"merged {n_hosts} host file(s): {len(records)} models in {folder / 'results.jsonl'}; "
          f"slopes in {folder / 'slopes.json'}")
    return 0


def cmd_plot(args) -> int:
    from glu_scaling import plots, results, slopes

    folder = Path(args.dir)
    if not (folder / "results.jsonl").exists():
        raise UsageError(f"{str(folder)!r} holds no results.jsonl; give a folder written by sweep or speedrun")
    kind = results.folder_kind(folder)
    if kind != "sweep":  # a construct folder has several methods per model and draws its own figure
        raise UsageError(f"{str(folder)!r} holds results of a {kind!r} run; plot redraws a sweep or speedrun "
                         "folder (construct draws its figure itself)")
    records = results.unique_records(folder)
    fit_range = results.stored_fit_range(folder)
    rows = slopes.slopes_table(records, fit_range=fit_range)
    results.write_json_atomic(folder / "slopes.json", rows)
    _print_slopes(rows)
    paths = plots.convergence_figure(records, folder / "convergence", fit_range=fit_range)
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from glu_scaling import architectures, models, problems, schedules

    parser = _Parser(prog="glu-scaling", description="Convergence-order studies of shallow MLP/GLU/GQU networks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("speedrun", help="the reference's minimal experiment (gates frozen, Newton on the rest)")
    p.add_argument("--out", type=_folder, default="runs/speedrun", help="results folder (default runs/speedrun)")
    _factor_init_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_speedrun)

    p = sub.add_parser("sweep", help="train every arch x width x seed in batched, compiled calls")
    p.add_argument("--arch", required=True,
                   help=f"comma list of {', '.join(architectures.all_accepted())} (module:PKG.MOD:NAME, a units.Unit "
                        "an importable module defines; docs/architectures.md)")
    p.add_argument("--widths", required=True, help="lo:hi[:step] (hi exclusive) or a comma list")
    p.add_argument("--seeds", default="0", help="lo:hi[:step] or a comma list (default 0)")
    p.add_argument("--problem", default="one_over_1_p_9x2",
                   help="a name from `glu-scaling problems`, or file:PATH (default one_over_1_p_9x2)")
    p.add_argument("--optimizer", default="newton-cascade", help=f"one of {', '.join(schedules.OPTIMIZERS)}")
    p.add_argument("--steps", type=int, default=None,
                   help="all-parameter Newton steps or first-order steps (newton-cascade --steps 0: only its "
                        "spline and {G, g} stages)")
    p.add_argument("--gate-steps", type=int, default=1,
                   help="newton-cascade: Newton steps on the gates {G, g} between the spline stages and the "
                        "all-parameter steps (default 1, as paper.md; the reference's code takes 3)")
    p.add_argument("--knot-moves", type=int, default=schedules.DEFAULT_KNOT_MOVES,
                   help="newton-cascade and newton-knots, 1D spline models: the most knot moves (each moves the "
                        "knots to equidistribute the fit's |f^(p+1)|^(2/(2p+3)), then solves the linear layers "
                        f"again; default {schedules.DEFAULT_KNOT_MOVES}, 0 for the reference's stages)")
    p.add_argument("--lr", type=float, default=None, help="learning rate of adam/adamw/lbfgs")
    p.add_argument("--n-data", type=int, default=None, help="training points (default 2000; real data: all)")
    p.add_argument("--n-test", type=int, default=None, help="test points (default 2000; real data: all held-out rows)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the data and split (default 0)")
    p.add_argument("--activation", default="relu", help=f"one of {', '.join(models.ACTIVATIONS)}")
    p.add_argument("--random-init", action="store_true", help="plain N(0,1) gates instead of the spline init")
    p.add_argument("--knots", default="uniform",
                   help="the 1D spline init's knots: uniform (evenly spaced, default) or placed (for the "
                        "problem's target f, where |f^(p+1)|^(2/(2p+3)) has equal mass between neighbours)")
    _factor_init_option(p)
    p.add_argument("--eval", default="test", choices=list(problems.EVAL_MODES),
                   help="score on the held-out split (test) or the training set (train)")
    p.add_argument("--target", default=None, help="target column of a file:PATH csv")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--batch-size", type=int, default=None, help="models vmapped together (default: auto)")
    p.add_argument("--devices", type=int, default=None,
                   help="devices the models of a bucket are split over (default: all visible)")
    p.add_argument("--out", type=_folder, default="runs/sweep", help="results folder (default runs/sweep)")
    p.add_argument("--fit-range", default=None, help="lo:hi range of n_hidden for the slope fit (default all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("construct", help="analytic constructions vs least-squares splines vs trained networks (Fig. 4)")
    p.add_argument("--problem", default="one_over_1_p_9x2",
                   help="a 1D problem from `glu-scaling problems` (default one_over_1_p_9x2)")
    p.add_argument("--arch", default="mlp,glu,gqu", help="comma list of mlp, glu, gqu (default all three)")
    p.add_argument("--widths", required=True, help="lo:hi[:step] (hi exclusive) or a comma list")
    p.add_argument("--seeds", default="0", help="seeds of the models trained from the spline init (default 0)")
    p.add_argument("--curvature", default="left", choices=["left", "mid", "hermite"],
                   help="Taylor point of the GLU/GQU constructions; hermite: GQU Hermite cubic (GLU: mid)")
    p.add_argument("--steps", type=int, default=None,
                   help="all-parameter Newton steps after the layer stages (default 100)")
    p.add_argument("--n-data", type=int, default=2000, help="training points (default 2000)")
    p.add_argument("--n-test", type=int, default=2000, help="test grid points (default 2000)")
    p.add_argument("--methods", default="construction,lsq-spline,newton-splines,newton-cascade,"
                   "cascade-from-construction",
                   help="comma list; also placed-spline (LSQ spline on knots placed for f) and "
                   "newton-from-construction (all-parameter Newton from the construction)")
    p.add_argument("--fit-range", default=None, help="lo:hi range of n_hidden for the slope fit (default all)")
    p.add_argument("--out", type=_folder, default="runs/construct", help="results folder (default runs/construct)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=cmd_construct)

    p = sub.add_parser("reproduce", help="regenerate the paper's figures and Table 1 (figures/)")
    p.add_argument("--quick", action="store_true", help="small widths, seeds and steps: a few minutes on a CPU")
    p.add_argument("--out", type=_folder, default=None,
                   help="folder for the figures and table1.md/json (default figures, or figures/quick with --quick)")
    p.add_argument("--runs", default=None,
                   help="folder of the sweeps' results, resumable (default runs/reproduce/quick or /full)")
    p.add_argument("--only", default=None,
                   help="comma list of fig1..fig13 and table1, e.g. fig3,fig5: only their sweeps run (default all)")
    p.add_argument("--no-table", action="store_true", help="skip Table 1 (runs only the sweeps the figures need)")
    p.add_argument("--redraw", action="store_true",
                   help="run no sweeps: draw from the records in OUT/results/ (e.g. the committed figures/results/); "
                        "the illustrative figures still compute their few small models")
    _factor_init_option(p, default=None)  # None: "one", or with --redraw what OUT/results/ records
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("problems", help="list registered problems")
    p.set_defaults(func=cmd_problems)

    p = sub.add_parser("plot", help="slopes.json and convergence figures from a results folder")
    p.add_argument("dir", help="a results folder")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("merge", help="fold a multi-host sweep's results.host*.jsonl into results.jsonl")
    p.add_argument("dir", help="a results folder")
    p.set_defaults(func=cmd_merge)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_jax()
    try:
        return args.func(args)
    except UsageError as err:
        print(f"glu-scaling {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished buckets are saved, rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped (`| head`): no traceback
        return _closed_pipe()


def _closed_pipe() -> int:
    """After a BrokenPipeError on stdout: point stdout at /dev/null, so that the exit's own
    flush of what is still buffered raises nothing, and return 141 (128 + SIGPIPE, what a
    shell reports for a command killed by a closed pipe)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141


def run() -> None:
    """The `glu-scaling` console command: `main`, then a fast exit.

    Every result is written, closed and fsynced by the time `main` returns; what is left
    is the interpreter's teardown of JAX and XLA (a noticeable part of a short run), which
    `os._exit` skips once stdout and stderr are flushed.  Any other ending (an error, an
    interrupt, which may leave a compile-ahead thread writing to the compilation cache)
    and a multi-process run (so that `jax.distributed` shuts down in step with the other
    processes) exit the normal way.
    """
    code = main()
    if code == 0:
        try:
            sys.stdout.flush()  # block-buffered into a pipe: the output may only leave now
        except BrokenPipeError:
            code = _closed_pipe()
    if code != 0 or ("jax" in sys.modules and sys.modules["jax"].distributed.is_initialized()):
        sys.exit(code)
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()


__all__ = ["main", "build_parser", "run"]
