"""Tests for glu_scaling.compare: constructions vs LSQ splines vs trained networks (Fig. 4).

conftest.py enables float64.  Kept small (few widths, 400 training points, 3 Newton
steps): most of the time is XLA compilation, one per (arch, optimizer, bucket width).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from glu_scaling import compare, problems, results
from glu_scaling.errors import UsageError
from glu_scaling.knots import knot_placement_gain

ARCHS = ("mlp", "glu", "gqu")


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("problem,needle", [
    ("x2_y2", "n_in=2"),                 # a registered 2D problem
    ("friedman1", "n_in=5"),
    ("no_such_problem", "no_such_problem"),
    ("file:/tmp/data.csv", "file:"),
])
def test_bad_problem_raises_one_line_usage_error(tmp_path, problem, needle):
    with pytest.raises(UsageError) as err:
        compare.run_construct(problem, "mlp", "4,8", out=tmp_path / "out")
    message = str(err.value)
    assert needle in message and "\n" not in message
    assert not (tmp_path / "out").exists()  # nothing written for a user mistake


@pytest.mark.parametrize("kwargs,needle", [
    ({"archs": "gated3"}, "gated3"),
    ({"archs": ()}, "archs"),
    ({"widths": "0,4"}, "widths"),
    ({"curvature": "right"}, "right"),
    ({"methods": ("magic",)}, "magic"),
    ({"steps": -1}, "steps"),
    ({"n_data": 1}, "n_data"),
])
def test_bad_arguments_raise_usage_error(tmp_path, kwargs, needle):
    args = {"archs": "mlp", "widths": "4,8", **kwargs}
    with pytest.raises(UsageError, match=needle):
        compare.run_construct("sin", args.pop("archs"), args.pop("widths"), out=tmp_path / "out", **args)


def test_refuses_a_folder_written_by_another_kind_of_run(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"problem": "sin", "optimizer": "newton-cascade"}))
    with pytest.raises(UsageError, match="holds results of a .sweep. run, not of a .construct. run"):
        compare.run_construct("sin", "mlp", "4,8", out=tmp_path, methods=("construction",))


def test_rerun_with_other_settings_is_refused_and_keeps_the_results(tmp_path):
    """Only constructions and splines (no training): the same settings recompute the same
    records and leave no previous copy; other widths are refused with the folder untouched."""
    recs = compare.run_construct("sin", "mlp", "4,8", out=tmp_path, methods=("construction", "lsq-spline"))
    before = (tmp_path / "results.jsonl").read_bytes()
    with pytest.raises(UsageError, match=r"widths=\[4, 8\], not \[4, 16\].*never mixed.*another --out"):
        compare.run_construct("sin", "mlp", "4,16", out=tmp_path, methods=("construction", "lsq-spline"))
    assert (tmp_path / "results.jsonl").read_bytes() == before
    again = compare.run_construct("sin", "mlp", "4,8", out=tmp_path, methods=("construction", "lsq-spline"))
    assert [r["test_rmse"] for r in again] == [r["test_rmse"] for r in recs]
    assert not (tmp_path / compare.PREVIOUS).exists()
    assert len(results.read_records(tmp_path)) == len(recs)


def test_an_interrupted_rerun_keeps_the_last_complete_results(tmp_path, monkeypatch):
    methods = ("construction", "lsq-spline")
    compare.run_construct("sin", "mlp", "4,8", out=tmp_path, methods=methods)
    complete = (tmp_path / "results.jsonl").read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    for _ in range(2):  # interrupted twice, after the constructions were written
        monkeypatch.setattr(compare, "spline_records", crash)
        with pytest.raises(KeyboardInterrupt):
            compare.run_construct("sin", "mlp", "4,8", out=tmp_path, methods=methods)
        assert (tmp_path / compare.PREVIOUS).read_bytes() == complete
    monkeypatch.undo()
    compare.run_construct("sin", "mlp", "4,8", out=tmp_path, methods=methods)
    assert not (tmp_path / compare.PREVIOUS).exists()

    def untimed(text):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in text.splitlines()]

    assert untimed((tmp_path / "results.jsonl").read_text()) == untimed(complete.decode())


# ------------------------------------------------------------------ constructions and splines


def test_construction_slopes_and_linear_spline_below_mlp_construction(tmp_path):
    recs = compare.run_construct("sin", ARCHS, "8,16,32", out=tmp_path, n_data=400,
                                 methods=("construction", "lsq-spline"))
    assert {r["method"] for r in recs} == {"construction", "lsq-spline-deg1", "lsq-spline-deg2", "lsq-spline-deg3"}
    rows = json.loads((tmp_path / "slopes.json").read_text())
    slope = {(r["method"], r["arch"]): r["slope"] for r in rows if r["x"] == "n_hidden"}
    # theory -2, -3, -4.  The error is C h^p (1 + O(h)), so over n = 8..32 the fitted slope
    # is off by about c (1/8 - 1/32) / ln 4 ~ 0.07 c for a relative correction c/n
    # (measured -1.98, -2.99, -3.96)
    for arch, expected in (("mlp", -2.0), ("glu", -3.0), ("gqu", -4.0)):
        assert slope[("construction", arch)] == pytest.approx(expected, abs=0.1), arch
    # the LSQ splines converge at the same orders (measured -2.07, -3.07 on 400 points); the
    # cubic one has only 4..16 cells here, still pre-asymptotic (measured -4.7)
    assert slope[("lsq-spline-deg1", "mlp")] == pytest.approx(-2.0, abs=0.15)
    assert slope[("lsq-spline-deg2", "glu")] == pytest.approx(-3.0, abs=0.15)
    assert slope[("lsq-spline-deg3", "gqu")] == pytest.approx(-4.0, abs=0.8)

    by = {(r["method"], r["arch"], r["n_hidden"]): r for r in recs}
    for n in (8, 16, 32):
        # same space (continuous piecewise-linear on the same n cells): least squares wins on the training set
        lsq, con = by[("lsq-spline-deg1", "mlp", n)], by[("construction", "mlp", n)]
        assert lsq["train_rmse"] <= con["train_rmse"] * (1 + 1e-12)
        assert lsq["n_knots"] == n and lsq["degree"] == 1 and lsq["n_params"] == n + 1
        assert by[("lsq-spline-deg3", "gqu", n)]["n_knots"] == n // 2  # the GQU construction's cells
    for arch in ARCHS:  # leading-order theory: relative error O(h), a few % by n = 32 (measured 0.998, 1.000, 0.990)
        con = by[("construction", arch, 32)]
        assert con["test_rmse"] / con["predicted_rmse"] == pytest.approx(1.0, abs=0.05), arch


def test_spline_knots_width_uses_n_cells(tmp_path):
    dataset, _, _ = compare.load_data("sin", n_data=400, n_test=500)
    recs = compare.spline_records("sin", "gqu", [8], dataset, spline_knots="width")
    assert recs[0]["n_knots"] == 8 and recs[0]["method"] == "lsq-spline-deg3"


@pytest.mark.parametrize("arch", ["mlp", "glu"])
def test_placed_spline_gains_the_predicted_factor(arch):
    # 1/(1+9x^2): the knot-placement gain is 2.04 (linear) and 3.39 (quadratic); the
    # placed-knot spline's test RMSE is below the uniform one's by about that factor
    dataset, _, _ = compare.load_data("one_over_1_p_9x2", n_data=4000, n_test=4001)
    uniform = compare.spline_records("one_over_1_p_9x2", arch, [32, 64], dataset, spline_knots="width")
    placed = compare.spline_records("one_over_1_p_9x2", arch, [32, 64], dataset, spline_knots="width",
                                    family="placed-spline")
    gain = knot_placement_gain(problems.scalar_target("one_over_1_p_9x2"), compare.SPLINE_DEGREE[arch])
    assert placed[0]["method"] == f"placed-spline-deg{compare.SPLINE_DEGREE[arch]}"
    assert compare.method_family(placed[0]["method"]) == "placed-spline"
    for u, p in zip(uniform, placed):
        assert p["n_knots"] == u["n_knots"] and p["n_params"] == u["n_params"]
        assert 0.8 * gain < u["test_rmse"] / p["test_rmse"] < 1.2 * gain


# ------------------------------------------------------------------ training from a construction


@pytest.mark.parametrize("method,optimizer", [("cascade-from-construction", "newton-cascade"),
                                              ("newton-from-construction", "newton")])
def test_training_from_a_construction_never_ends_above_it(method, optimizer):
    """Newton's line search accepts only decreases, so training from a construction ends
    at or below the construction's training error (widths 3 and 6 share one padded bucket)."""
    _, data, chunk = compare.load_data("one_over_1_p_9x2", n_data=400, n_test=500)
    for arch in ARCHS:
        con = compare.construction_records("one_over_1_p_9x2", arch, [3, 6], data)
        trained = compare.from_construction_records("one_over_1_p_9x2", arch, [3, 6], data, method=method,
                                                    steps=3, chunk=chunk)
        for c, t in zip(con, trained):
            assert t["n_hidden"] == c["n_hidden"] and t["bucket_width"] == 6
            assert t["status"] in ("ok", "stalled")
            assert t["train_rmse"] <= c["train_rmse"] + 1e-15, (arch, c["n_hidden"])
            assert t["optimizer"] == optimizer and t["method"] == method


# ------------------------------------------------------------------ the whole study


def test_run_construct_writes_every_file_and_record(tmp_path):
    out = tmp_path / "cmp"
    # widths 3, 6 with 400 / 500 points: the same compiled shapes as the test above
    recs = compare.run_construct("one_over_1_p_9x2", "mlp", "3,6", out=out, n_data=400, n_test=500, steps=3)
    for name in ("config.json", "results.jsonl", "slopes.json", "fig4_construction.png", "fig4_construction.pdf"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "construct" and config["problem"] == "one_over_1_p_9x2"
    assert config["widths"] == [3, 6] and config["steps"] == 3 and config["n_data"] == 400

    on_disk = results.read_records(out)
    assert len(on_disk) == len(recs) == 5 * 2
    methods = ["construction", "lsq-spline-deg1", "newton-splines", "newton-cascade", "cascade-from-construction"]
    assert [r["method"] for r in recs] == [m for m in methods for _ in (3, 6)]
    for r in on_disk:
        for field in (*results.RECORD_FIELDS, "method"):
            assert field in r, (r["method"], field)
        assert r["problem"] == "one_over_1_p_9x2" and r["n_in"] == 1 and r["activation"] == "relu"
        assert np.isfinite(r["train_rmse"]) and np.isfinite(r["test_rmse"])
    by = {(r["method"], r["n_hidden"]): r for r in recs}
    for n in (3, 6):
        con = by[("construction", n)]
        assert con["predicted_rmse"] > 0 and con["optimizer"] == "none"
        assert by[("cascade-from-construction", n)]["train_rmse"] <= con["train_rmse"] + 1e-15
        assert by[("lsq-spline-deg1", n)]["train_rmse"] <= con["train_rmse"] * (1 + 1e-12)
        # the cascade's first stage solves {D, d} by least squares on the construction's knots:
        # that is the LSQ linear spline, and later stages only go down
        lsq = by[("lsq-spline-deg1", n)]["train_rmse"]
        assert by[("cascade-from-construction", n)]["train_rmse"] <= lsq * (1 + 1e-9)
        assert by[("newton-cascade", n)]["optimizer"] == "newton-cascade"

    rows = json.loads((out / "slopes.json").read_text())
    assert {r["method"] for r in rows} == set(methods)
    for r in rows:
        assert {"method", "arch", "problem", "x", "slope", "ci_low", "ci_high", "r2", "range"} <= set(r)
        assert r["x"] in ("n_hidden", "n_params") and np.isfinite(r["slope"])
    assert compare.slope_summary(rows)[0].startswith("method")


def test_figure_and_summary_tolerate_missing_values(tmp_path):
    """Files hold None where a value was not finite (strict JSON); plotting and printing skip it."""
    recs = [{"arch": "mlp", "method": "construction", "n_hidden": n, "seed": 0, "status": "ok", "test_rmse": e}
            for n, e in ((4, 1e-2), (8, 2.5e-3), (16, None))]
    recs.append({"arch": "glu", "method": "newton-cascade", "n_hidden": 4, "seed": 0, "status": "diverged",
                 "test_rmse": None})
    paths = compare.construct_figure(recs, tmp_path / "fig")
    assert all(p.is_file() for p in paths)
    rows = [{"method": "construction", "arch": "mlp", "x": "n_hidden", "slope": -2.0, "ci_low": None,
             "ci_high": None, "r2": 1.0}]
    lines = compare.slope_summary(rows)
    assert len(lines) == 2 and "nan" in lines[1] and "-2.000" in lines[1]
