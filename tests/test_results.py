"""Tests for glu_scaling.results (the results folder) and the crash-safety of sweeps
built on it: cut-off lines, interrupted sweeps, config mismatches, bad --out paths.

The sweeps reuse the tiny study of tests/test_sweep.py (shared compiled calls).
"""

from __future__ import annotations

import json
import math
import os

import pytest
from conftest import CountingTrainBucket

from glu_scaling import results, sweeps
from glu_scaling.config import effective_settings, sweep_config
from glu_scaling.errors import UsageError

# the study of tests/test_sweep.py (same shapes and config: its compiled calls are reused)
BASE = sweep_config(archs=("mlp", "glu"), widths=(2, 4), seeds=(0, 1), problem="one_over_1_p_9x2",
                         optimizer="newton-splines", steps=2, n_data=64, n_test=64)


def _lines(folder):
    return (folder / "results.jsonl").read_text().splitlines()


def _strip(records, drop=("seconds",)):
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


def _rec(arch="mlp", n=2, seed=0, **extra):
    return {"arch": arch, "n_hidden": n, "seed": seed, "test_rmse": 0.5, **extra}


# ---------------------------------------------------------------- folder primitives


def test_append_and_read_round_trip(tmp_path):
    assert results.read_records(tmp_path) == []
    a = [_rec(n=1), _rec(n=2, note="x\ny")]  # a newline inside a value stays one line
    results.append_records(tmp_path, a)
    results.append_records(tmp_path, [])
    results.append_records(tmp_path, [_rec(arch="glu")])
    assert results.read_records(tmp_path) == a + [_rec(arch="glu")]
    assert len(_lines(tmp_path)) == 3
    assert results.repair(tmp_path) == 0


def test_cut_off_last_line_is_ignored_and_repaired(tmp_path):
    results.append_records(tmp_path, [_rec(n=1), _rec(n=2)])
    whole = (tmp_path / "results.jsonl").read_bytes()
    partial = b'{"arch": "mlp", "n_hidden": 3, "se'
    (tmp_path / "results.jsonl").write_bytes(whole + partial)
    assert results.read_records(tmp_path) == [_rec(n=1), _rec(n=2)]
    assert results.repair(tmp_path) == len(partial)
    assert (tmp_path / "results.jsonl").read_bytes() == whole
    assert results.repair(tmp_path) == 0
    # a complete object without its newline is also a cut-off line (the newline is the commit)
    (tmp_path / "results.jsonl").write_bytes(whole + json.dumps(_rec(n=9)).encode())
    assert results.repair(tmp_path) > 0 and (tmp_path / "results.jsonl").read_bytes() == whole


def test_model_key():
    assert results.model_key({"arch": "gqu", "n_hidden": 7.0, "seed": "3"}) == ("gqu", 7, 3)


def test_write_json_atomic_leaves_no_temporary(tmp_path):
    path = tmp_path / "slopes.json"
    results.write_json_atomic(path, [{"b": 1, "a": [1.5, 2]}])
    results.write_json_atomic(path, [{"b": 2}])
    assert json.loads(path.read_text()) == [{"b": 2}]
    assert sorted(os.listdir(tmp_path)) == ["slopes.json"]


def test_prepare_folder(tmp_path):
    assert results.prepare_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    with pytest.raises(UsageError, match="is a file") as err:
        results.prepare_folder(f)
    assert str(f) in str(err.value)
    with pytest.raises(UsageError, match="cannot create"):
        results.prepare_folder(f / "sub")
    assert f.read_text() == "keep me"


def test_check_config_merges_growing_axes_and_refuses_changes(tmp_path):
    cfg = BASE.to_json()
    results.check_config(tmp_path, cfg)
    assert json.loads((tmp_path / "config.json").read_text()) == cfg
    grown = dict(cfg, widths=[4, 6], seeds=[2], archs=["gqu"])
    results.check_config(tmp_path, grown)
    merged = json.loads((tmp_path / "config.json").read_text())
    assert set(merged["widths"]) == {2, 4, 6} and set(merged["seeds"]) == {0, 1, 2}
    assert set(merged["archs"]) == {"mlp", "glu", "gqu"}
    for key, value in (("problem", "cos"), ("optimizer", "newton"), ("n_data", 65), ("activation", "gelu"),
                       ("steps", None), ("data_seed", 1)):
        with pytest.raises(UsageError) as err:
            results.check_config(tmp_path, dict(cfg, **{key: value}))
        msg = str(err.value)
        assert key in msg and repr(value) in msg and repr(cfg[key]) in msg
        assert json.loads((tmp_path / "config.json").read_text()) == merged  # untouched
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        results.check_config(tmp_path, cfg)


def test_factor_init_binds_a_folder_only_through_its_gqus(tmp_path):
    """factor_init changes only models with a second factor: a folder without GQUs accepts
    either value (and takes the one its first GQUs are made with), a folder with GQUs
    refuses the other value, and resuming it with mlp alone neither is refused nor
    rewrites the value its GQUs were made with (so a later GQU run cannot mix them)."""

    def resume(folder, archs, **changes):
        results.check_config(folder, dict(BASE.to_json(), archs=archs, **changes), effective=effective_settings)
        return json.loads((folder / "config.json").read_text())

    made = tmp_path / "gqu"
    made.mkdir()
    assert resume(made, ["gqu"])["factor_init"] == "one"
    assert resume(made, ["mlp"], factor_init="random")["factor_init"] == "one"  # kept: its gqus are "one"
    with pytest.raises(UsageError, match="holds results for factor_init='one', not 'random'"):
        resume(made, ["gqu"], factor_init="random")
    assert resume(made, ["gqu"])["archs"] == ["gqu", "mlp"]
    old = tmp_path / "old"  # written before the setting existed: drawn factors
    old.mkdir()
    (old / "config.json").write_text(json.dumps({k: v for k, v in BASE.to_json().items() if k != "factor_init"}))
    assert resume(old, ["mlp", "glu", "gqu"], factor_init="random")["factor_init"] == "random"  # no gqu there yet
    (old / "config.json").write_text(json.dumps(dict({k: v for k, v in BASE.to_json().items() if k != "factor_init"},
                                                     archs=["gqu"])))
    with pytest.raises(UsageError, match="factor_init='random', not 'one'.*rerun with factor_init='random'"):
        resume(old, ["gqu"])
    assert resume(old, ["gqu", "mlp"], factor_init="random")["factor_init"] == "random"


def test_gate_steps_bind_only_a_cascade_folder(tmp_path):
    """gate_steps changes newton-cascade's models only: a cascade folder refuses another
    count, reads a config.json written before the setting existed as 1 gate step, and a
    newton-splines folder (no gate stage) does not compare it."""

    def resume(folder, **changes):
        results.check_config(folder, dict(BASE.to_json(), **changes), effective=effective_settings)
        return json.loads((folder / "config.json").read_text())

    cascade = tmp_path / "cascade"
    cascade.mkdir()
    assert resume(cascade, optimizer="newton-cascade", gate_steps=3)["gate_steps"] == 3
    with pytest.raises(UsageError, match="holds results for gate_steps=3, not 1"):
        resume(cascade, optimizer="newton-cascade")
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({k: v for k, v in dict(BASE.to_json(), optimizer="newton-cascade")
                                                 .items() if k != "gate_steps"}))
    assert resume(old, optimizer="newton-cascade")["optimizer"] == "newton-cascade"
    with pytest.raises(UsageError, match="holds results for gate_steps=1, not 3"):
        resume(old, optimizer="newton-cascade", gate_steps=3)
    splines = tmp_path / "splines"
    splines.mkdir()
    resume(splines)
    resume(splines, gate_steps=3)  # not refused: newton-splines has no gate stage


# ---------------------------------------------------------------- sweeps on top of it


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    return sweeps.run_sweep(BASE, out, progress=False)


def test_interrupted_sweep_resumes_without_duplicates(reference, tmp_path, monkeypatch):
    out = tmp_path / "crash"
    crash = CountingTrainBucket(fail_on={2})
    monkeypatch.setattr(sweeps, "launch_bucket", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sweeps.run_sweep(BASE, out, progress=False)
    first = [json.loads(s) for s in _lines(out)]
    assert {r["arch"] for r in first} == {"mlp"} and len(first) == 4  # bucket 1 was saved at once
    # the process also died while appending: a cut-off line at the end
    with open(out / "results.jsonl", "a") as fh:
        fh.write('{"arch": "glu", "n_hidden": 2, "seed": 0, "train_rm')
    resume = CountingTrainBucket()
    monkeypatch.setattr(sweeps, "launch_bucket", resume)
    recs = sweeps.run_sweep(BASE, out, progress=False)
    assert [(a, w, len(p)) for a, w, p in resume.calls] == [("glu", 4, 4)]  # mlp not retrained
    lines = _lines(out)
    assert len(lines) == 8
    parsed = [json.loads(s) for s in lines]  # every line whole again
    keys = [results.model_key(r) for r in parsed]
    assert len(set(keys)) == 8
    assert parsed[:4] == first
    assert _strip(recs) == _strip(reference)


@pytest.mark.parametrize("key,value", [("problem", "cos"), ("optimizer", "newton"), ("n_data", 32)])
def test_config_mismatch_is_refused(reference, tmp_path, key, value):
    out = tmp_path / "mismatch"
    sweeps.run_sweep(BASE.replace(archs=("mlp",)), out, progress=False)
    before = {p: (out / p).read_text() for p in ("config.json", "results.jsonl", "slopes.json")}
    with pytest.raises(UsageError) as err:
        sweeps.run_sweep(BASE.replace(archs=("mlp",), **{key: value}), out, progress=False)
    msg = str(err.value)
    assert f"{key}=" in msg and repr(value) in msg and "\n" not in msg
    assert {p: (out / p).read_text() for p in before} == before


def test_out_pointing_at_a_file_is_refused(tmp_path):
    f = tmp_path / "results.txt"
    f.write_text("precious")
    with pytest.raises(UsageError, match="is a file") as err:
        sweeps.run_sweep(BASE.replace(archs=("mlp",)), f, progress=False)
    assert repr(str(f)) in str(err.value)
    assert f.read_text() == "precious"


def _strict_loads(text):
    """json.loads that refuses NaN / Infinity, which are not JSON (RFC 8259) and break
    strict readers (JavaScript's JSON.parse, many other languages' parsers)."""

    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def test_results_files_are_strict_json(tmp_path):
    """A sweep with one seed and two widths has no OLS interval (NaN ci_low/ci_high), and a
    diverged model has a non-finite RMSE; slopes.json and results.jsonl must stay valid JSON
    (e.g. null for a missing value), as the public contract calls them JSON."""
    from glu_scaling import slopes

    recs = [{"arch": "mlp", "problem": "p", "n_in": 1, "n_hidden": n, "n_params": 3 * n + 1, "seed": 0,
             "test_rmse": n**-2.0, "status": "ok"} for n in (2, 4)]
    rows = slopes.slopes_table(recs)
    results.write_json_atomic(tmp_path / "slopes.json", rows)
    loaded = _strict_loads((tmp_path / "slopes.json").read_text())
    # vs n_hidden: -2 exactly; vs n_params (7 and 13): log(4^-2 / 2^-2) / log(13 / 7)
    assert [r["x"] for r in loaded] == ["n_hidden", "n_params"]
    assert [r["slope"] for r in loaded] == pytest.approx([-2.0, -2 * math.log(2) / math.log(13 / 7)], abs=1e-12)
    diverged = dict(recs[0], n_hidden=8, status="diverged", test_rmse=float("nan"), train_rmse=float("inf"))
    results.append_records(tmp_path, [diverged])
    for line in _lines(tmp_path):
        assert _strict_loads(line)["status"] == "diverged"
