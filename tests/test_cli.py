"""Tests for the `glu-scaling` command line: user mistakes end with one line on stderr
naming the bad value, exit status 2 and no traceback; a tiny sweep writes a complete
results folder; `plot` regenerates its figures.

Most calls run `cli.main` in-process (the tiny sweep reuses the compiled calls of
tests/test_sweep.py); one subprocess run checks the real exit status end to end.
GLU_SCALING_CACHE=off keeps the persistent XLA cache out of the test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from glu_scaling import cli, models, problems, results, train

TINY = ["sweep", "--arch", "mlp,glu", "--widths", "2,4", "--seeds", "0,1", "--steps", "2",
        "--optimizer", "newton-splines", "--n-data", "64", "--n-test", "64", "--quiet"]


@pytest.fixture(autouse=True)
def _no_persistent_cache(monkeypatch):
    monkeypatch.setenv("GLU_SCALING_CACHE", "off")


def _usage_error(capsys, argv, bad):
    """Run main(argv); expect exit 2, one stderr line naming `bad`, no traceback."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        code = exc.code
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, (code, err)
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert bad in err, (bad, err)
    assert "Traceback" not in err + captured.out
    return err


def test_problems_lists_every_registered_name(capsys):
    assert cli.main(["problems"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert names == [*problems.REGISTRY, "file:PATH"]
    for name, prob in problems.REGISTRY.items():
        line = next(s for s in out.splitlines() if s.split()[0] == name)
        assert f"n_in={prob.n_in}" in line
    for required in ("x2", "one_over_1_p_9x2", "atan_x_atan_y", "paper_1d", "friedman1", "airfoil", "california"):
        assert required in names


@pytest.mark.parametrize("flag,value,accepted", [
    ("--arch", "mpl", "glu"),
    ("--arch", "mlp,gluu", "glu"),
    ("--optimizer", "newtn", "newton-cascade"),
    ("--problem", "one_over_1_p_9x", "one_over_1_p_9x2"),
    ("--activation", "rellu", "gelu"),
])
def test_unknown_names(capsys, tmp_path, flag, value, accepted):
    argv = [*TINY, "--out", str(tmp_path / "out")]
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    err = _usage_error(capsys, argv, repr(value.split(",")[-1]))
    assert accepted in err  # the accepted values are named too
    assert not (tmp_path / "out" / "results.jsonl").exists()


@pytest.mark.parametrize("flag,value,bad", [
    ("--widths", "5:1", "'5:1'"),
    ("--widths", "1:x", "'1:x'"),
    ("--widths", "0,2", "0"),
    ("--widths", "", "''"),
    ("--seeds", "-1", "-1"),
    ("--seeds", "1:5:0", "'1:5:0'"),
    ("--steps", "-1", "-1"),
    ("--n-data", "0", "0"),
    ("--fit-range", "4", "'4'"),
    ("--fit-range", "8:2", "'8:2'"),
    ("--batch-size", "-1", "-1"),
    ("--batch-size", "0", "0"),
])
def test_malformed_values(capsys, tmp_path, flag, value, bad):
    argv = [*TINY, "--out", str(tmp_path / "out")]
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    err = _usage_error(capsys, argv, bad)
    assert flag.lstrip("-").replace("-", "_") in err.replace("-", "_")  # names the option
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_out_pointing_at_a_file(capsys, tmp_path):
    f = tmp_path / "notadir"
    f.write_text("x")
    _usage_error(capsys, [*TINY, "--out", str(f)], str(f))
    assert f.read_text() == "x"


@pytest.mark.parametrize("argv,bad", [
    (["sweep", "--widths", "2,4"], "--arch"),
    (["sweep", "--arch", "mlp"], "--widths"),
    (["sweep", "--arch", "mlp", "--widths", "2", "--steps", "two"], "'two'"),
    (["sweep", "--arch", "mlp", "--widths", "2", "--dtype", "float16"], "'float16'"),
    (["nosuchcommand"], "'nosuchcommand'"),
    ([], "COMMAND"),
    (["plot"], "dir"),
])
def test_argparse_errors_are_one_line(capsys, argv, bad):
    _usage_error(capsys, argv, bad)


def test_plot_without_results(capsys, tmp_path):
    _usage_error(capsys, ["plot", str(tmp_path)], str(tmp_path))


def test_subprocess_exit_status_and_single_line(tmp_path):
    env = dict(os.environ, GLU_SCALING_CACHE="off")
    proc = subprocess.run([sys.executable, "-m", "glu_scaling.cli", "sweep", "--arch", "mlp,transformer",
                           "--widths", "2", "--out", str(tmp_path / "o")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "'transformer'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("GLU_SCALING_CACHE", "off")
    try:
        code = cli.main([*TINY, "--out", str(out)])
    finally:
        mp.undo()
    return code, out


def test_tiny_sweep_writes_everything(tiny_sweep):
    code, out = tiny_sweep
    assert code == 0
    for name in ("config.json", "results.jsonl", "slopes.json", "convergence.png", "convergence.pdf"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "convergence.pdf").read_bytes()[:5] == b"%PDF-"
    recs = [json.loads(s) for s in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["arch"], r["n_hidden"], r["seed"]) for r in recs) == \
        sorted((a, n, s) for a in ("mlp", "glu") for n in (2, 4) for s in (0, 1))
    assert all(r["optimizer"] == "newton-splines" and r["status"] in train.STATUSES for r in recs)
    assert all(r["n_params"] == models.param_count(r["arch"], 1, r["n_hidden"], 1) for r in recs)
    rows = json.loads((out / "slopes.json").read_text())
    assert {(r["arch"], r["x"]) for r in rows} == {(a, x) for a in ("mlp", "glu") for x in ("n_hidden", "n_params")}
    config = json.loads((out / "config.json").read_text())
    assert config["archs"] == ["mlp", "glu"] and config["widths"] == [2, 4] and config["seeds"] == [0, 1]
    assert config["steps"] == 2 and config["n_data"] == 64 and config["optimizer"] == "newton-splines"


def test_plot_regenerates_the_figures(tiny_sweep, capsys):
    _, out = tiny_sweep
    slopes_before = json.loads((out / "slopes.json").read_text())
    for name in ("slopes.json", "convergence.png", "convergence.pdf"):
        (out / name).unlink()
    assert cli.main(["plot", str(out)]) == 0
    assert "convergence.png" in capsys.readouterr().out
    for name in ("slopes.json", "convergence.png", "convergence.pdf"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "slopes.json").read_text()) == slopes_before


def test_rerun_of_the_same_command_trains_nothing(tiny_sweep, capsys):
    _, out = tiny_sweep
    before = (out / "results.jsonl").read_text()
    assert cli.main([*TINY, "--out", str(out)]) == 0
    assert (out / "results.jsonl").read_text() == before
    assert "models: 8 (8 ok, 0 diverged, 0 stalled)" in capsys.readouterr().out


def test_plot_refits_on_the_range_the_sweep_stored(tmp_path, capsys):
    """`plot` (and `merge`) reuse config.json's fit_range: n = 1 (off the n^-2 line) stays out."""
    records = [{"arch": "mlp", "activation": "relu", "problem": "x2", "n_in": 1, "n_out": 1, "n_hidden": n,
                "n_params": 3 * n + 1, "seed": 0, "optimizer": "newton-splines", "status": "ok", "seconds": 0.0,
                "train_rmse": 0.1 * n**-2.0, "test_rmse": 0.1 * n**-2.0 if n > 1 else 1.0} for n in (1, 2, 4, 8)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "config.json").write_text(json.dumps({"fit_range": [2.0, 8.0]}))
    assert cli.main(["plot", str(tmp_path)]) == 0
    (row,) = [r for r in json.loads((tmp_path / "slopes.json").read_text()) if r["x"] == "n_hidden"]
    assert row["range"] == [2.0, 8.0] and row["slope"] == pytest.approx(-2.0, abs=1e-12)
    (tmp_path / "config.json").write_text(json.dumps({}))  # a folder from before: every width
    assert cli.main(["plot", str(tmp_path)]) == 0
    (row,) = [r for r in json.loads((tmp_path / "slopes.json").read_text()) if r["x"] == "n_hidden"]
    n = np.array([1.0, 2, 4, 8])  # n = 1 sits 10x above the line
    expected = np.polyfit(np.log(n), np.log(np.where(n > 1, 0.1 * n**-2.0, 1.0)), 1)[0]
    assert row["range"] == [1.0, 8.0] and row["slope"] == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(-2.996578, abs=1e-6)


def test_plot_reuses_an_open_ended_fit_range(tmp_path, capsys):
    """--fit-range 2:inf is stored as [2.0, null] (strict JSON); plot reads it back as 2..inf."""
    records = [{"arch": "mlp", "activation": "relu", "problem": "x2", "n_in": 1, "n_out": 1, "n_hidden": n,
                "n_params": 3 * n + 1, "seed": 0, "optimizer": "newton-splines", "status": "ok", "seconds": 0.0,
                "train_rmse": 0.1 * n**-2.0, "test_rmse": 0.1 * n**-2.0 if n > 1 else 1.0} for n in (1, 2, 4, 8)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    results.write_json_atomic(tmp_path / "config.json", {"fit_range": [2.0, float("inf")]})
    assert json.loads((tmp_path / "config.json").read_text())["fit_range"] == [2.0, None]
    assert results.stored_fit_range(tmp_path) == (2.0, float("inf"))
    assert cli.main(["plot", str(tmp_path)]) == 0
    (row,) = [r for r in json.loads((tmp_path / "slopes.json").read_text()) if r["x"] == "n_hidden"]
    assert row["slope"] == pytest.approx(-2.0, abs=1e-12)  # n = 1 left out, as the sweep fitted
