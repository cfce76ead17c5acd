"""Bad input, row by row of docs/errors.md: the CLI prints one line on stderr naming the
bad value (and, for a typo, the closest accepted spelling), exits with status 2 and
shows no traceback; the Python API raises a ValueError (`UsageError`) or TypeError
with the same message.  Also: a refused command never touches an existing results
folder, a cut-off results.jsonl line is repaired with a note, and no code path
unpickles or evaluates user data.

Every error row fails before any training, so the rows are fast; one test trains
two tiny buckets.  GLU_SCALING_CACHE=off keeps the persistent XLA cache out of it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import glu_scaling as gs
from glu_scaling import (
    cli,
    compare,
    constructions,
    datasets,
    errors,
    linsolve,
    results,
    schedules,
    slopes,
    sweeps,
    train,
)
from glu_scaling import nnx as gs_nnx
from glu_scaling.config import effective_settings, sweep_config

SWEEP = ["sweep", "--arch", "mlp", "--widths", "2", "--steps", "0", "--optimizer", "newton-splines",
         "--n-data", "8", "--n-test", "8", "--quiet"]
API = {"optimizer": "newton-splines", "steps": 0, "n_data": 8, "n_test": 8}  # the same sweep in Python
PREFIX = re.compile(r"^glu-scaling(?: \w+)?: error: ")


@pytest.fixture(autouse=True)
def _no_persistent_cache(monkeypatch):
    monkeypatch.setenv("GLU_SCALING_CACHE", "off")


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    """A folder of bad data files and results folders, shared by the rows (none modifies them)."""
    d = tmp_path_factory.mktemp("bad")
    (d / "nan.csv").write_text("a,y\n1,2\nnan,3\n4,5\n")
    (d / "inf.csv").write_text("a,y\n1,2\n2,inf\n4,5\n")
    (d / "words.csv").write_text("a,y\n1,2\n4,abc\n")
    (d / "one_row.csv").write_text("a,y\n1,2\n")
    (d / "ok.csv").write_text("a,price\n1,2\n2,3\n4,5\n")
    (d / "latin1.csv").write_bytes(b"\xff\xfe\x00\x81\x82")
    (d / "folder.csv").mkdir()
    np.savez(d / "nan.npz", x=np.array([0.0, 1.0, np.nan, 3.0]), y=np.ones(4))
    np.savez(d / "no_y.npz", x=np.ones(3), z=np.ones(3))
    np.savez(d / "cube.npz", x=np.ones((4, 2, 2)), y=np.ones(4))
    np.savez(d / "lengths.npz", x=np.ones(5), y=np.ones(4))
    np.savez(d / "objects.npz", x=np.array([1, "a", None], dtype=object), y=np.ones(3))
    (d / "afile").write_text("precious")
    # results folders: another problem, another kind of run, a broken config.json
    config = sweep_config(archs=("mlp",), widths=(2,), seeds=(0,), problem="cos", **API)
    for name, cfg in (("cos_run", config.to_json()), ("construct_run", {"kind": "construct", "problem": "sin"})):
        (d / name).mkdir()
        results.write_json_atomic(d / name / "config.json", cfg)
    (d / "broken_run").mkdir()
    (d / "broken_run" / "config.json").write_text("{not json")
    (d / "construct_run" / "results.jsonl").write_text('{"arch": "glu", "n_hidden": 2, "seed": 0}\n')
    # a file:PATH folder whose data file has changed since (another sha256)
    ok = sweep_config(archs=("mlp",), widths=(2,), seeds=(0,), problem=f"file:{d}/ok.csv", **API)
    for name, cfg in (("changed_file_run", {**ok.to_json(), "data_sha256": "0" * 64}),
                      ("bad_widths_run", {**config.to_json(), "problem": "one_over_1_p_9x2", "widths": 5}),
                      ("bad_record_run", {**config.to_json(), "problem": "one_over_1_p_9x2"})):
        (d / name).mkdir()
        results.write_json_atomic(d / name / "config.json", cfg)
    (d / "bad_record_run" / "results.jsonl").write_text('{"foo": 1}\n')
    # records the slope fit cannot read: a hand-edited status left out, a test RMSE that is a word
    record = {"arch": "mlp", "problem": "one_over_1_p_9x2", "n_in": 1, "n_hidden": 2, "n_params": 7, "seed": 0,
              "status": "ok", "train_rmse": 0.1, "test_rmse": 0.1}
    for name, edited in (("no_status_run", {k: v for k, v in record.items() if k != "status"}),
                         ("word_rmse_run", {**record, "test_rmse": "abc"})):
        (d / name).mkdir()
        results.write_json_atomic(d / name / "config.json", {**config.to_json(), "problem": "one_over_1_p_9x2"})
        (d / name / "results.jsonl").write_text(json.dumps(edited) + "\n")
    # merge: an unmerged host file holding such a record is refused before anything is folded
    (d / "bad_host_run").mkdir()
    results.write_json_atomic(d / "bad_host_run" / "config.json", {**config.to_json(), "problem": "one_over_1_p_9x2"})
    (d / "bad_host_run" / "results.jsonl").write_text(json.dumps(record) + "\n")
    (d / "bad_host_run" / "results.host1.jsonl").write_text(json.dumps({**record, "n_hidden": 4, "status": 1}) + "\n")
    return d


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of docs/errors.md: CLI arguments, the bad value the message must name, the
    suggestion it must make (if any), and the Python call that must raise the same error
    (`same`: the same text; False where argparse words the CLI's message)."""

    id: str
    argv: list[str]
    bad: str
    hint: str | None = None
    api: Callable | None = None
    same: bool = True
    out: str | None = None  # the --out folder, relative to d (default: a fresh one)


def _sweep(**kw):
    """gs.sweep of the SWEEP command with some options replaced; "{d}" in problem is the data folder."""

    def call(d, out):
        args = {"archs": "mlp", "widths": "2", "seeds": "0", "problem": "one_over_1_p_9x2", **API, **kw}
        args["problem"] = args["problem"].format(d=d)
        return gs.sweep(args.pop("archs"), args.pop("widths"), args.pop("seeds"), out=out, **args)

    return call


def _file(name, **kw):
    return _sweep(problem=f"file:{{d}}/{name}", **kw)


ROWS = [
    # ---- unknown names
    Row("arch", ["--arch", "mpl"], "'mpl'", "did you mean 'mlp'?", _sweep(archs="mpl")),
    Row("arch-list", ["--arch", "mlp,gluu"], "'gluu'", "did you mean 'glu'?", _sweep(archs=["mlp", "gluu"])),
    Row("arch-gated", ["--arch", "gated12"], "'gated12'", "did you mean 'gated2'?", _sweep(archs="gated12")),
    Row("arch-empty", ["--arch", ","], "','"),
    Row("activation", ["--activation", "rellu"], "'rellu'", "did you mean 'relu'?", _sweep(activation="rellu")),
    Row("problem", ["--problem", "one_over_1_p_9x"], "'one_over_1_p_9x'", "did you mean 'one_over_1_p_9x2'?",
        _sweep(problem="one_over_1_p_9x")),
    Row("problem-path", ["--problem", "data.csv"], "'data.csv'", "did you mean 'file:data.csv'?",
        _sweep(problem="data.csv")),
    Row("optimizer", ["--optimizer", "adma"], "'adma'", "did you mean 'adam'?", _sweep(optimizer="adma")),
    Row("knots", ["--knots", "placd"], "'placd'", "did you mean 'placed'?", _sweep(knots="placd")),
    Row("factor-init", ["--factor-init", "ones"], "'ones'", "did you mean 'one'?", _sweep(factor_init="ones")),
    Row("knots-placed-problem", ["--knots", "placed", "--problem", "friedman1"], "got problem 'friedman1'", None,
        _sweep(knots="placed", problem="friedman1")),
    Row("knots-placed-random", ["--knots", "placed", "--random-init"], "cannot go with the random init", None,
        _sweep(knots="placed", spline_init=False)),
    Row("knots-placed-arch", ["--knots", "placed", "--arch", "gated3"], "got arch 'gated3' (degree 4)", None,
        _sweep(knots="placed", archs="gated3")),
    Row("dtype", ["--dtype", "float16"], "'float16'", "did you mean 'float64'?", _sweep(dtype="float16"), False),
    Row("eval", ["--eval", "tset"], "'tset'", "did you mean 'test'?", _sweep(eval="tset"), False),
    Row("curvature", ["construct", "--widths", "4", "--curvature", "lft"], "'lft'", "did you mean 'left'?",
        lambda d, out: compare.run_construct("sin", "mlp", "4", out=out, curvature="lft"), False),
    Row("method", ["construct", "--widths", "4", "--methods", "lsq"], "'lsq'", "did you mean 'lsq-spline'?",
        lambda d, out: compare.run_construct("sin", "mlp", "4", out=out, methods=("lsq",))),
    Row("target-not-file", ["--target", "y"], "'y'", None, _sweep(target="y")),
    # ---- widths and seeds (SPEC)
    Row("widths-empty", ["--widths", ""], "''", None, _sweep(widths="")),
    Row("widths-empty-range", ["--widths", "5:1"], "'5:1'", None, _sweep(widths="5:1")),
    Row("widths-zero", ["--widths", "0,2"], "got 0", None, _sweep(widths="0,2")),
    Row("widths-negative", ["--widths=-3:2"], "got -3", None, _sweep(widths="-3:2")),
    Row("widths-not-int", ["--widths", "1:x"], "'1:x'", None, _sweep(widths="1:x")),
    Row("widths-empty-item", ["--widths", "1,,2"], "'1,,2'", None, _sweep(widths="1,,2")),
    Row("widths-step-zero", ["--widths", "1:5:0"], "'1:5:0'", None, _sweep(widths="1:5:0")),
    Row("widths-four-parts", ["--widths", "1:2:3:4"], "'1:2:3:4'", None, _sweep(widths="1:2:3:4")),
    Row("widths-float-api", ["--widths", "2.5"], "'2.5'", None, _sweep(widths=[2.5]), False),
    Row("seeds-negative", ["--seeds", "-1"], "got -1", None, _sweep(seeds="-1")),
    Row("seeds-too-large", ["--seeds", str(2**32)], str(2**32), None, _sweep(seeds=2**32)),
    Row("widths-too-large", ["--widths", "99999999999"], "got 99999999999", None, _sweep(widths="99999999999")),
    Row("widths-too-many", ["--widths", "1:1000000"], "999999 values", None, _sweep(widths="1:1000000")),
    Row("width-beyond-memory", ["--widths", "1000000"], "width 1000000 needs about", None,
        _sweep(widths="1000000")),
    # ---- counts and numbers
    Row("steps-negative", ["--steps", "-1"], "-1", None, _sweep(steps=-1)),
    Row("steps-not-int", ["--steps", "two"], "'two'", None, _sweep(steps="two"), False),
    Row("gate-steps-negative", ["--gate-steps", "-1", "--optimizer", "newton-cascade"], "got -1", None,
        _sweep(gate_steps=-1, optimizer="newton-cascade")),
    Row("gate-steps-not-int", ["--gate-steps", "2.5"], "'2.5'", None,
        _sweep(gate_steps=2.5, optimizer="newton-cascade"), False),
    Row("gate-steps-no-gate-stage", ["--gate-steps", "3"], "optimizer 'newton-splines' has no gate stage", None,
        _sweep(gate_steps=3)),
    Row("knot-moves-negative", ["--knot-moves", "-1", "--optimizer", "newton-cascade"], "got -1", None,
        _sweep(knot_moves=-1, optimizer="newton-cascade")),
    Row("knot-moves-no-knot-stage", ["--knot-moves", "2"], "optimizer 'newton-splines' has none", None,
        _sweep(knot_moves=2)),
    Row("n-data-zero", ["--n-data", "0"], "got 0", None, _sweep(n_data=0)),
    Row("n-data-one", ["--n-data", "1"], "got 1", None, _sweep(n_data=1)),
    Row("n-test-zero", ["--n-test", "0"], "got 0", None, _sweep(n_test=0)),
    Row("n-data-too-large", ["--n-data", "100000000000"], "got 100000000000", None, _sweep(n_data=10**11)),
    Row("steps-too-large", ["--steps", str(2**64)], str(2**64), None, _sweep(steps=2**64)),
    Row("batch-size-zero", ["--batch-size", "0"], "got 0", None, _sweep(batch_size=0)),
    Row("lr-negative", ["--lr", "-1"], "-1.0", None, _sweep(learning_rate=-1.0)),
    Row("lr-nan", ["--lr", "nan"], "nan", None, _sweep(learning_rate=float("nan"))),
    Row("data-seed-negative", ["--data-seed", "-1"], "got -1", None, _sweep(data_seed=-1)),
    Row("fit-range-one-number", ["--fit-range", "4"], "'4'"),
    Row("fit-range-words", ["--fit-range", "a:b"], "'a:b'"),
    Row("fit-range-reversed", ["--fit-range", "8:2"], "'8:2'"),
    # ---- users' data (file:PATH)
    Row("csv-nan", ["--problem", "file:{d}/nan.csv"], "'nan'", None, _file("nan.csv")),
    Row("csv-inf", ["--problem", "file:{d}/inf.csv"], "'inf'", None, _file("inf.csv")),
    Row("npz-nan", ["--problem", "file:{d}/nan.npz"], "nan at row 2", None, _file("nan.npz")),
    Row("npz-no-y", ["--problem", "file:{d}/no_y.npz"], "lacks array(s) 'y'", None, _file("no_y.npz")),
    Row("npz-3d", ["--problem", "file:{d}/cube.npz"], "(4, 2, 2)", None, _file("cube.npz")),
    Row("npz-lengths", ["--problem", "file:{d}/lengths.npz"], "x has 5 rows but y has 4", None, _file("lengths.npz")),
    Row("npz-objects", ["--problem", "file:{d}/objects.npz"], "object arrays", None, _file("objects.npz")),
    Row("csv-non-numeric", ["--problem", "file:{d}/words.csv"], "'abc'", None, _file("words.csv")),
    Row("csv-one-row", ["--problem", "file:{d}/one_row.csv"], "1 row(s)", None, _file("one_row.csv")),
    Row("csv-target", ["--problem", "file:{d}/ok.csv", "--target", "pric"], "'pric'", "did you mean 'price'?",
        _file("ok.csv", target="pric")),
    Row("file-missing", ["--problem", "file:{d}/missing.csv"], "missing.csv' not found", None,
        _file("missing.csv")),
    Row("file-directory", ["--problem", "file:{d}/folder.csv"], "is not a regular file", None,
        _file("folder.csv")),
    Row("file-not-utf8", ["--problem", "file:{d}/latin1.csv"], "cannot read data file", None,
        _file("latin1.csv")),
    Row("file-extension", ["--problem", "file:{d}/data.cvs"], "'.cvs'", "did you mean '.csv'?",
        _file("data.cvs")),
    Row("file-no-path", ["--problem", "file:"], "file:", None, _sweep(problem="file:")),
    # ---- the results folder
    Row("out-is-file", [], "afile' is a file", None, _sweep(), out="afile"),
    Row("out-under-file", [], "cannot create --out folder", None, _sweep(), out="afile/sub"),
    Row("out-other-config", [], "problem='cos', not 'one_over_1_p_9x2'", None, _sweep(), out="cos_run"),
    Row("out-other-kind", [], "'construct' run", None, _sweep(), out="construct_run"),
    Row("out-broken-config", [], "config.json' is not valid JSON", None, _sweep(), out="broken_run"),
    Row("out-empty", ["--out", ""], "--out: is empty"),
    Row("out-data-changed", ["--problem", "file:{d}/ok.csv"], "trained on other data", None, _file("ok.csv"),
        out="changed_file_run"),
    Row("out-config-widths", [], "has widths=5 where a list belongs", None, _sweep(), out="bad_widths_run"),
    Row("out-not-a-record", [], "line 1 is not a model record", None, _sweep(), out="bad_record_run"),
    Row("plot-construct", ["plot", "{d}/construct_run"], "'construct' run; plot redraws", None,
        out="construct_run"),
    Row("out-record-without-status", [], "n_hidden=2, seed=0 has no status", None, _sweep(), out="no_status_run"),
    Row("plot-record-rmse-word", ["plot", "{d}/word_rmse_run"], "has test_rmse='abc'", None, out="word_rmse_run"),
    Row("merge-host-record-status", ["merge", "{d}/bad_host_run"], "n_hidden=4, seed=0 has status=1", None,
        out="bad_host_run"),
    # ---- construct checks as sweep does, before it writes its folder
    Row("construct-steps-too-large", ["construct", "--widths", "4", "--steps", "99999999999"], "got 99999999999",
        None, lambda d, out: compare.run_construct("one_over_1_p_9x2", "mlp", "4", out=out, steps=99999999999)),
    Row("construct-n-data-too-large", ["construct", "--widths", "4", "--n-data", "100000001"], "got 100000001",
        None, lambda d, out: compare.run_construct("one_over_1_p_9x2", "mlp", "4", out=out, n_data=100000001)),
    Row("construct-beyond-memory", ["construct", "--widths", "1000000"], "width 1000000 needs about", None,
        lambda d, out: compare.run_construct("one_over_1_p_9x2", "mlp", "1000000", out=out)),
    # ---- argparse: subcommands and flags
    Row("subcommand", ["sweeep"], "'sweeep'", "did you mean 'sweep'?"),
    Row("flag", ["--stpes", "3"], "--stpes", "did you mean --steps instead of --stpes?"),
    Row("flag-underscore", ["--n_data=3"], "--n_data", "did you mean --n-data instead of --n_data?"),
    Row("flag-missing-value", ["--steps"], "--steps"),
    Row("required-flag", ["construct"], "--widths"),
    Row("no-subcommand", [], "COMMAND"),
]
SUBCOMMAND_ROWS = {"subcommand", "no-subcommand", "curvature", "method", "required-flag", "plot-construct",
                   "plot-record-rmse-word", "merge-host-record-status", "construct-steps-too-large",
                   "construct-n-data-too-large", "construct-beyond-memory"}


def _argv(row: Row, d: Path, out: Path) -> list[str]:
    args = [a.format(d=d) for a in row.argv]
    if row.id in SUBCOMMAND_ROWS:
        return args + (["--out", str(out)] if args[:1] == ["construct"] and len(args) > 1 else [])
    return [*SWEEP, "--out", str(out), *args]


def _cli_message(capsys, argv: list[str]) -> str:
    """Run cli.main(argv); assert exit 2, one stderr line and no traceback; return the message."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse exits from inside parse_args
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2, (code, captured.err)
    assert captured.err.endswith("\n") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert PREFIX.match(captured.err), captured.err
    return PREFIX.sub("", captured.err.rstrip("\n"))


def _snapshot(path: Path):
    """The bytes of a file, or of every file in a folder; None if `path` does not exist."""
    if path.is_file():
        return path.read_bytes()
    return {p.name: p.read_bytes() for p in path.iterdir()} if path.is_dir() else None


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row, d, capsys):
    out = d / (row.out or f"out-{row.id}")
    before = _snapshot(out)
    message = _cli_message(capsys, _argv(row, d, out))
    assert row.bad in message, (row.bad, message)
    if row.hint:
        assert row.hint in message, (row.hint, message)
    if row.out is None:
        assert not out.exists()  # nothing written for a user mistake
    assert _snapshot(out) == before  # a refused folder (or file) stays as it was
    if row.api is not None:
        with pytest.raises((ValueError, TypeError)) as err:
            row.api(d, out)
        if row.same:
            assert str(err.value) == message
        else:
            assert row.bad.strip("'") in str(err.value), str(err.value)
            if row.hint:
                assert row.hint in str(err.value)
        assert "\n" not in str(err.value)


def test_api_misspelt_option_is_a_type_error():
    with pytest.raises(TypeError, match="'stepz'"):
        gs.sweep("mlp", "2", stepz=3)
    with pytest.raises(TypeError, match=r"unknown sweep setting 'stpes' \(did you mean 'steps'\?\)"):
        gs.sweep("mlp", "2", stpes=3)


def test_packaged_data_failing_its_checksum(d, capsys, monkeypatch):
    name = "airfoil_self_noise.tsv"
    monkeypatch.setitem(datasets.CHECKSUMS, name, "0" * 64)
    datasets._packaged_table.cache_clear()  # read the file again, as a fresh process would
    try:
        message = _cli_message(capsys, [*SWEEP, "--problem", "airfoil", "--out", str(d / "out-airfoil")])
        assert f"checksum mismatch for data file {name!r}" in message and "reinstall" in message
        with pytest.raises(ValueError) as err:
            _sweep(problem="airfoil")(d, None)
        assert str(err.value) == message
    finally:
        datasets._packaged_table.cache_clear()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_out_not_writable(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        message = _cli_message(capsys, [*SWEEP, "--out", str(locked)])
    finally:
        locked.chmod(0o700)
    assert repr(str(locked)) in message and "not writable" in message


# ---------------------------------------------------------------- suggestions


@pytest.mark.parametrize("value,candidates,expected", [
    ("mpl", ["mlp", "glu", "gqu"], ["mlp"]),
    ("GLU", ["mlp", "glu", "gqu"], ["glu"]),  # case-insensitive
    ("lsq", ["construction", "lsq-spline"], ["lsq-spline"]),  # a prefix
    ("transformer", ["mlp", "glu", "gqu"], []),  # nothing close: no guess
    ("", ["mlp"], []),
    (None, ["mlp"], []),
])
def test_suggest(value, candidates, expected):
    assert errors.suggest(value, candidates) == expected
    assert errors.did_you_mean(value, candidates) == (f" (did you mean {expected[0]!r}?)" if expected else "")


def test_unknown_lists_accepted_and_suggests_from_candidates():
    err = errors.unknown("architecture", "gate3", ["mlp", "gatedK"], candidates=["mlp", "gated3"])
    assert str(err) == "unknown architecture 'gate3' (did you mean 'gated3'?); accepted: mlp, gatedK"
    assert isinstance(err, ValueError)


# ---------------------------------------------------------------- results are never lost


def _folder_with_results(folder: Path, config, cut_off: bytes = b"") -> bytes:
    folder.mkdir()
    results.check_config(folder, config.to_json())
    recs = [{"arch": "mlp", "problem": config.problem, "n_in": 1, "n_hidden": 2, "n_params": 7, "seed": 0,
             "test_rmse": 0.1, "train_rmse": 0.1, "status": "ok", "seconds": 1.0}]
    results.append_records(folder, recs)
    with open(folder / "results.jsonl", "ab") as fh:
        fh.write(cut_off)
    return (folder / "results.jsonl").read_bytes()


@pytest.mark.parametrize("change", [["--problem", "cos"], ["--optimizer", "newton"], ["--n-data", "16"],
                                    ["--arch", "mpl"], ["--problem", "file:nowhere.csv"]])
def test_a_refused_command_leaves_the_results_folder_untouched(tmp_path, capsys, change):
    """Even the cut-off last line stays: repair happens only once the command is accepted."""
    config = sweep_config(archs=("mlp",), widths=(2,), seeds=(0,), problem="one_over_1_p_9x2", **API)
    out = tmp_path / "run"
    data = _folder_with_results(out, config, cut_off=b'{"arch": "mlp", "n_hid')
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    message = _cli_message(capsys, [*SWEEP, "--out", str(out), *change])
    assert change[1].removeprefix("file:") in message
    if change[0] != "--arch" and "file:" not in change[1]:
        assert "another --out" in message and "delete the folder" in message
    assert (out / "results.jsonl").read_bytes() == data
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


def test_cut_off_line_is_repaired_with_a_note_and_retraining_reproduces_it(tmp_path, capsys):
    """A run killed while appending leaves a cut-off last line: the rerun drops it with a
    one-line note, keeps every finished record, and retrains the missing models to the
    same numbers (everything but "seconds")."""
    argv = ["sweep", "--arch", "mlp,glu", "--widths", "2,3", "--steps", "0", "--optimizer", "newton-splines",
            "--n-data", "16", "--n-test", "16", "--quiet", "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 0
    capsys.readouterr()
    path = tmp_path / "run" / "results.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    first = [json.loads(s) for s in lines]
    assert [r["arch"] for r in first] == ["mlp", "mlp", "glu", "glu"]
    path.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # glu's bucket cut off mid-line
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: dropped the cut-off last line")
    again = [json.loads(s) for s in path.read_text().splitlines()]
    assert again[:2] == first[:2]  # finished records kept verbatim

    def strip(recs):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in recs]

    assert strip(again) == strip(first)  # the retrained glu models are the same models
    assert cli.main(argv) == 0 and capsys.readouterr().err == ""  # nothing cut off, no note


# ---------------------------------------------------------------- no pickles, no eval


def test_no_pickle_or_eval_in_the_package():
    """User data are read by numpy (allow_pickle=False) and csv; nothing unpickles or evaluates."""
    package = Path(gs.__file__).parent
    forbidden = re.compile(r"\bpickle\b|allow_pickle\s*=\s*True|(?<![.\w])(eval|exec)\s*\(|\bmarshal\b|"
                           r"yaml\.load\b|\bshelve\b")
    hits = [f"{p.name}:{i}: {line.strip()}" for p in sorted(package.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if forbidden.search(line.replace("allow_pickle=False", "")) and "no pickles" not in line]
    assert hits == []
    assert "allow_pickle=False" in Path(datasets.__file__).read_text()


# ---------------------------------------------------------------- end to end


@pytest.mark.parametrize("argv,bad", [
    (["sweeep", "--arch", "mlp"], "did you mean 'sweep'?"),
    ([*SWEEP, "--problem", "file:{d}/nan.csv", "--out", "{d}/out-subprocess"], "'nan'"),
])
def test_subprocess_exit_status_and_one_line(d, argv, bad):
    argv = [a.format(d=d) for a in argv]
    env = dict(os.environ, GLU_SCALING_CACHE="off")
    proc = subprocess.run([sys.executable, "-m", "glu_scaling.cli", *argv], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and bad in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_float64_without_x64_is_refused_not_downgraded():
    """docs/errors.md: dtype float64 with jax_enable_x64 off raises, never trains in float32."""
    from glu_scaling.errors import UsageError

    config = sweep_config(archs=("mlp",), widths=(2,), seeds=(0,), n_data=8, n_test=8)
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(UsageError, match=r"dtype float64 needs jax_enable_x64; call jax.config.update"):
            sweeps.run_sweep(config, None, progress=False)
        # nor does a model or a data set come back in float32 (the NNX modules go through init)
        with pytest.raises(UsageError, match=r"dtype float64 requested but jax_enable_x64 is off"):
            gs.init(jax.random.PRNGKey(0), "glu", 1, 4, 1, dtype="float64")
        with pytest.raises(UsageError, match=r"dtype float64 requested but jax_enable_x64 is off"):
            gs.make_dataset("cos", n_train=8, n_test=8, dtype="float64")
        assert gs.init(jax.random.PRNGKey(0), "glu", 1, 4, 1).G.dtype == np.float32  # the default follows x64
    finally:
        jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize("call,message", [
    (lambda: gs.init(jax.random.PRNGKey(0), "glu", 1, 4, 1, dtype="int32"), "dtype must be float32 or float64"),
    (lambda: gs.make_dataset("cos", dtype="int32"), "dtype must be float32 or float64"),
    (lambda: gs.apply("glu", jax.tree.map(lambda a: jnp.stack([a, a]), gs.init(jax.random.PRNGKey(0), "glu", 1, 4, 1)),
                      jnp.zeros((3, 1))), r"params carry leading batch axes \(2,\)"),
    (lambda: gs.sweep("mlp", "2", problem=lambda x: x[:, 0] ** 2, **API), "problem must be a registered name"),
    (lambda: gs.sweep("mlp", "2", chunk=0, **API), "chunk must be a positive integer, got 0"),
    (lambda: linsolve.Ladder(rungs_per_round=0), "rungs_per_round must be a positive integer, got 0"),
    (lambda: linsolve.Ladder(cholesky_block=-8),
     r"cholesky_block must be a non-negative integer \(0: unblocked\), got -8"),
    (lambda: schedules.TrainConfig("newton", steps=-1), r"steps must be an integer in \[0, 2147483647\], got -1"),
    (lambda: gs.fit_slope([1, 2, 4], [1, 2, 3], groups=[0, 1]), r"one label per point \(3\), got 2"),
    (lambda: gs.fit_slope([1, 2, 4], [1, 2, 3], confidence=1.5), r"confidence must be in \(0, 1\), got 1.5"),
    (lambda: gs.fit_slope([1, 2, 4], [1, 2, 3], fit_range=(4, 2)), r"fit_range needs lo <= hi, got \(4, 2\)"),
    (lambda: slopes.local_slopes([1, 2, 3], [1, 2]), "the same length"),
    (lambda: compare.run_construct("sin", "mlp", "4", out=None), "out must be a results folder path, got None"),
    (lambda: compare.run_construct("sin", "mlp", "4", out="x", fit_range=5), "fit_range must be a pair"),
    (lambda: train.prepare_data(jnp.zeros(5), jnp.zeros((5, 1)), jnp.zeros((2, 1)), jnp.zeros((2, 1)), 8),
     r"x and t must be \(N, n_in\) and \(N, n_out\), got shapes \(5,\)"),
    (lambda: train.prepare_data(jnp.zeros((3, 1)), jnp.array([[0.0], [jnp.nan], [1.0]]), jnp.zeros((2, 1)),
                                jnp.zeros((2, 1)), 8), r"t holds non-finite values \(NaN or inf\)"),
    (lambda: gs.apply("glu", {"G": 1}, jnp.zeros((2, 1))), "params must be a models.Params .from init., got dict"),
    (lambda: gs_nnx.GLU(1, 4, 1, rngs=0), r"GLU needs rngs=nnx.Rngs\(...\) \(or params=...\), got rngs=0"),
    (lambda: constructions.construct("glu", 3.0, 4), "f must be a callable scalar function"),
], ids=["init-int32", "dataset-int32", "apply-batched", "sweep-callable", "sweep-chunk", "ladder-rungs", "ladder-block",
        "train-steps", "fit-groups", "fit-confidence", "fit-range-reversed", "local-slopes-lengths",
        "construct-out-none", "construct-fit-range", "prepare-data-1d", "prepare-data-nan", "apply-dict",
        "nnx-rngs-int", "construct-f-not-callable"])
def test_api_bad_arguments_are_one_line_usage_errors(call, message):
    with pytest.raises(errors.UsageError, match=message) as err:
        call()
    assert "\n" not in str(err.value)


def test_output_into_a_closed_pipe_ends_quietly_with_status_141():
    """`glu-scaling problems | head -0`: the reader is gone before anything is written; the
    command ends with 128 + SIGPIPE and no traceback (docs/errors.md)."""
    env = dict(os.environ, GLU_SCALING_CACHE="off")
    proc = subprocess.Popen([sys.executable, "-m", "glu_scaling.cli", "problems"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""


# ---------------------------------------------------------------- resuming compares what the models are


def test_resume_compares_settings_as_the_models_were_made(tmp_path, capsys):
    """An explicit default equals a left-out one, and a setting the run ignores is not compared:
    both resume without training anything; a real difference is still refused."""
    out = tmp_path / "run"
    base = ["sweep", "--arch", "mlp", "--widths", "2", "--optimizer", "newton-splines", "--quiet", "--out", str(out)]
    assert cli.main(base) == 0
    records = (out / "results.jsonl").read_bytes()
    for extra in (["--n-data", "2000", "--n-test", "2000"], ["--steps", "7", "--lr", "0.5"]):
        assert cli.main([*base, *extra]) == 0, capsys.readouterr().err
        assert (out / "results.jsonl").read_bytes() == records  # nothing retrained, nothing appended
    capsys.readouterr()
    message = _cli_message(capsys, [*base, "--n-data", "16"])
    assert "n_data=2000, not 16" in message and "rerun with n_data=2000" in message


def test_effective_settings():
    eff = effective_settings
    adam = eff({"optimizer": "adam", "steps": None, "learning_rate": None, "problem": "airfoil", "n_data": None,
                "n_test": None, "eval": "test"})
    assert (adam["steps"], adam["learning_rate"]) == (1000, 1e-4)
    assert (adam["n_data"], adam["n_test"]) == (None, None)  # tabular: None means every row, not 2000
    cascade = eff({"optimizer": "newton-cascade", "steps": None, "learning_rate": 0.3, "problem": "cos",
                   "n_data": None, "n_test": 50, "eval": "train"})
    assert (cascade["steps"], cascade["learning_rate"]) == (100, None)
    assert (cascade["n_data"], cascade["n_test"]) == (2000, None)  # eval train: the test points are the training ones
    assert eff({"optimizer": "newton-splines", "steps": 5})["steps"] is None


def test_a_file_folder_follows_the_data_not_the_path(tmp_path, monkeypatch, capsys):
    """The same relative file:PATH from another folder resumes when the file's bytes are the
    same, and is refused (nothing written) when they differ."""
    rows = "a,y\n" + "".join(f"{i / 10},{(i / 10) ** 2}\n" for i in range(12))
    for name in ("here", "there"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.csv").write_text(rows)
    out = tmp_path / "run"
    argv = ["sweep", "--arch", "mlp", "--widths", "2", "--optimizer", "newton-splines", "--problem",
            "file:data.csv", "--quiet", "--out", str(out)]
    monkeypatch.chdir(tmp_path / "here")
    assert cli.main(argv) == 0
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.chdir(tmp_path / "there")
    assert cli.main(argv) == 0
    assert (out / "results.jsonl").read_bytes() == files["results.jsonl"]
    (tmp_path / "there" / "data.csv").write_text(rows + "1.2,1.44\n")
    capsys.readouterr()
    assert "trained on other data" in _cli_message(capsys, argv)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


@pytest.mark.parametrize("content", [b"\xff\xfe", b"not json", None])
def test_construct_refuses_a_broken_config_json(tmp_path, capsys, content):
    out = tmp_path / "c"
    out.mkdir()
    if content is None:
        (out / "config.json").mkdir()
    else:
        (out / "config.json").write_bytes(content)
    message = _cli_message(capsys, ["construct", "--widths", "2", "--arch", "glu", "--out", str(out)])
    assert "config.json' is not valid JSON" in message


def test_sweep_takes_numpy_dtypes():
    """dtype=np.float64 (or a jnp dtype) means "float64", as the string does: the same records
    (but the wall times); jnp.float32 means "float32", whose RMSE is not float64's."""
    def sweep(dtype):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in gs.sweep("mlp", "2", dtype=dtype, **API)]

    double = sweep("float64")
    assert sweep(np.float64) == double and sweep(jnp.float64) == double
    single = sweep(jnp.float32)
    assert single == sweep("float32")
    assert not math.isclose(single[0]["test_rmse"], double[0]["test_rmse"], rel_tol=1e-12)
    with pytest.raises(errors.UsageError, match="unknown dtype 'int32'"):
        gs.sweep("mlp", "2", dtype=np.int32, **API)
