"""Tests for glu_scaling.sweep: SPEC parsing, bucket planning, and run_sweep's outputs,
resume, determinism and bucketing invariance.

Every sweep here is the same tiny study (64 training / 64 test points, widths 2 and 4,
seeds 0 and 1, `newton-splines` with steps=2) so the compiled training calls are shared
across tests (and with tests/test_results.py and tests/test_cli.py).
"""

from __future__ import annotations

import itertools
import json
import math

import jax
import numpy as np
import pytest
from conftest import CountingTrainBucket

from glu_scaling import inits, linsolve, models, planning, results, specs, sweeps, train
from glu_scaling.config import load_dataset, sweep_config
from glu_scaling.errors import UsageError
from glu_scaling.knots import knot_placement_gain

BASE = sweep_config(archs=("mlp", "glu"), widths=(2, 4), seeds=(0, 1), problem="one_over_1_p_9x2",
                         optimizer="newton-splines", steps=2, n_data=64, n_test=64)
DESIGN_FIELDS = {"arch", "activation", "problem", "n_in", "n_hidden", "n_params", "seed", "optimizer",
                 "train_rmse", "test_rmse", "status", "seconds"}
SLOPE_FIELDS = {"arch", "problem", "x", "slope", "ci_low", "ci_high", "r2", "range"}


def _lines(folder):
    return (folder / "results.jsonl").read_text().splitlines()


def _strip(records, drop=("seconds",)):
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    recs = sweeps.run_sweep(BASE, out, progress=False)
    return out, recs


# ---------------------------------------------------------------- parse_spec


@pytest.mark.parametrize("spec,expected", [
    ("1:10:3", [1, 4, 7]), ("1:4", [1, 2, 3]), ("4,2,2", [2, 4]), (" 3 ", [3]), ("7", [7]),
    ("2:3", [2]), (5, [5]), ([4, 1, 4], [1, 4]), ("1:104:3", list(range(1, 104, 3))),
])
def test_parse_spec_accepts(spec, expected):
    assert specs.parse_spec(spec) == expected


@pytest.mark.parametrize("spec,bad", [
    ("5:1", "'5:1'"), ("a:b", "'a:b'"), ("1:5:0", "'1:5:0'"), ("1:5:-1", "'1:5:-1'"), ("", "''"),
    ("0,1", "0"), ("1:2:3:4", "'1:2:3:4'"), ("x", "'x'"), ("2,-3", "-3"), ("0:3", "0"),
])
def test_parse_spec_rejects_widths(spec, bad):
    with pytest.raises(UsageError) as err:
        specs.parse_spec(spec, "widths")
    msg = str(err.value)
    assert bad in msg and "widths" in msg and "\n" not in msg


def test_parse_spec_seed_minimum_is_zero():
    assert specs.parse_spec("0:3", "seeds", minimum=0) == [0, 1, 2]
    assert specs.parse_spec("0", "seeds", minimum=0) == [0]
    with pytest.raises(UsageError, match=r"seeds must be >= 0, got -1"):
        specs.parse_spec("-1", "seeds", minimum=0)
    with pytest.raises(UsageError, match=r"seeds.*'-2:1'|-2"):
        specs.parse_spec("-2:1", "seeds", minimum=0)


# ---------------------------------------------------------------- plan_buckets


def _cost(buckets, spw2, compile_s):
    return sum(compile_s + spw2 * len(b) * max(b) ** 2 for b in buckets)


def _all_partitions(w, max_buckets):
    m = len(w)
    for k in range(1, min(max_buckets, m) + 1):
        for cuts in itertools.combinations(range(1, m), k - 1):
            edges = (0, *cuts, m)
            yield [w[edges[i]:edges[i + 1]] for i in range(k)]


def _check_partition(buckets, widths, max_buckets):
    w = sorted(set(widths))
    assert 1 <= len(buckets) <= max_buckets
    assert [x for b in buckets for x in b] == w  # every width once, contiguous, in order
    assert all(b == sorted(b) and len(b) > 0 for b in buckets)


def test_plan_buckets_partitions_and_is_optimal():
    rng = np.random.default_rng(0)
    for trial in range(40):
        widths = [int(v) for v in rng.integers(1, 200, size=rng.integers(1, 9))]
        spw2 = float(10.0 ** rng.uniform(-7, -1))
        compile_s = float(rng.uniform(0.5, 5))
        max_b = int(rng.integers(1, 6))
        buckets = planning.plan_buckets(widths, seconds_per_w2=spw2, compile_seconds=compile_s, max_buckets=max_b)
        _check_partition(buckets, widths, max_b)
        best = min(_cost(p, spw2, compile_s) for p in _all_partitions(sorted(set(widths)), max_b))
        assert math.isclose(_cost(buckets, spw2, compile_s), best, rel_tol=1e-12), trial


def test_plan_buckets_extremes():
    widths = list(range(1, 104, 3))
    assert planning.plan_buckets(widths, seconds_per_w2=0.0) == [widths]
    assert planning.plan_buckets([5, 1, 3, 3]) == [[1, 3, 5]]
    many = planning.plan_buckets(widths, seconds_per_w2=1e6, max_buckets=8)
    assert len(many) == 8
    _check_partition(many, widths, 8)
    assert planning.plan_buckets([2, 4, 6], seconds_per_w2=1e6, max_buckets=8) == [[2], [4], [6]]


# ---------------------------------------------------------------- run_sweep outputs


def test_run_sweep_writes_the_results_folder(base_run):
    out, recs = base_run
    config = json.loads((out / "config.json").read_text())
    assert config == {**BASE.to_json(), "fit_range": None}  # the slope range, not part of a model
    lines = _lines(out)
    assert len(lines) == 8
    file_recs = [json.loads(line) for line in lines]
    keys = [results.model_key(r) for r in file_recs]
    assert sorted(keys) == sorted((a, n, s) for a in BASE.archs for n in BASE.widths for s in BASE.seeds)
    for r in file_recs:
        assert DESIGN_FIELDS <= set(r), DESIGN_FIELDS - set(r)
        assert r["n_params"] == models.param_count(r["arch"], 1, r["n_hidden"], 1)
        assert r["n_params"] == ((models.n_factors(r["arch"]) + 1) * 2 + 1) * r["n_hidden"] + 1
        want = ("relu", BASE.problem, BASE.train.optimizer, 1)
        assert (r["activation"], r["problem"], r["optimizer"], r["n_in"]) == want
        assert r["status"] in train.STATUSES and r["status"] == "ok"
        assert r["seconds"] > 0 and 0 < r["test_rmse"] < 1 and 0 < r["train_rmse"] < 1
    # the returned records are the file's, in (arch, width, seed) order
    assert _strip(recs) == _strip(sorted(file_recs, key=lambda r: (BASE.archs.index(r["arch"]), r["n_hidden"],
                                                                   r["seed"])))


def test_slopes_json(base_run):
    out, recs = base_run
    rows = json.loads((out / "slopes.json").read_text())
    assert isinstance(rows, list) and len(rows) == 4
    assert {(r["arch"], r["x"]) for r in rows} == {(a, x) for a in BASE.archs for x in ("n_hidden", "n_params")}
    for row in rows:
        assert SLOPE_FIELDS <= set(row)
        assert row["problem"] == BASE.problem
        sel = [r for r in recs if r["arch"] == row["arch"]]
        x = {n: next(r[row["x"]] for r in sel if r["n_hidden"] == n) for n in (2, 4)}
        assert row["range"] == [x[2], x[4]]
        # two widths per seed: each seed's slope is log(e4/e2)/log(x4/x2); the slope is their mean
        per_seed = []
        for s in BASE.seeds:
            e = {r["n_hidden"]: r["test_rmse"] for r in sel if r["seed"] == s}
            per_seed.append(math.log(e[4] / e[2]) / math.log(x[4] / x[2]))
        assert math.isclose(row["slope"], float(np.mean(per_seed)), rel_tol=1e-12, abs_tol=1e-12)
        assert row["ci_low"] <= row["slope"] <= row["ci_high"]
        assert row["r2"] <= 1.0


def test_python_entry_point_matches_run_sweep(base_run):
    _, recs = base_run
    got = sweeps.sweep(["mlp"], "2,4", "0:2", problem=BASE.problem, optimizer=BASE.train.optimizer, steps=2,
                      n_data=64, n_test=64)
    assert _strip(got) == _strip([r for r in recs if r["arch"] == "mlp"])


# ---------------------------------------------------------------- determinism and bucketing


def test_same_sweep_twice_is_identical(base_run, tmp_path):
    _, recs = base_run
    again = sweeps.run_sweep(BASE, tmp_path / "again", progress=False)
    assert _strip(again) == _strip(recs)
    assert _strip([json.loads(s) for s in _lines(tmp_path / "again")]) == \
        _strip([json.loads(s) for s in _lines(base_run[0])])


def _forced_plan(monkeypatch, buckets):
    planned = []

    def plan(widths, **kw):
        planned.append(sorted(widths))
        return [list(b) for b in buckets]

    monkeypatch.setattr(planning, "plan_buckets", plan)
    return planned


def test_bucketing_does_not_change_the_models(tmp_path, monkeypatch):
    """Widths 2, 4, 6 in buckets [2, 4] + [6] (padded to 4 and 6) vs one bucket padded to 6
    (shapes shared with the other tests: only the 6-model bucket compiles anew)."""
    config = BASE.replace(archs=("mlp",), widths=(2, 4, 6))
    planned = _forced_plan(monkeypatch, [[2, 4], [6]])
    split = sweeps.run_sweep(config, tmp_path / "split", progress=False)
    assert planned == [[2, 4, 6]]
    _forced_plan(monkeypatch, [[2, 4, 6]])
    one = sweeps.run_sweep(config, tmp_path / "one", progress=False)
    assert [r["bucket_width"] for r in split] == [4, 4, 4, 4, 6, 6]
    assert {r["bucket_width"] for r in one} == {6}
    assert [results.model_key(r) for r in split] == [results.model_key(r) for r in one] == \
        [("mlp", n, s) for n in (2, 4, 6) for s in (0, 1)]
    for a, b in zip(split, one):
        for key in ("train_rmse", "test_rmse"):
            assert math.isclose(a[key], b[key], rel_tol=1e-9), (key, a, b)
        assert a["status"] == b["status"] and a["n_params"] == b["n_params"] and a["steps"] == b["steps"]


# ---------------------------------------------------------------- resume


def test_resume_trains_only_missing_widths(base_run, tmp_path, monkeypatch):
    out = tmp_path / "resume"
    out.mkdir()
    src = base_run[0]
    for name in ("config.json", "results.jsonl"):
        (out / name).write_text((src / name).read_text())
    counter = CountingTrainBucket()
    monkeypatch.setattr(sweeps, "launch_bucket", counter)
    more = BASE.replace(archs=("mlp",), widths=(2, 4, 6))
    recs = sweeps.run_sweep(more, out, progress=False)
    assert counter.calls == [("mlp", 6, [(6, 0), (6, 1)])]
    lines = _lines(out)
    assert len(lines) == 10
    keys = [results.model_key(json.loads(s)) for s in lines]
    assert len(set(keys)) == len(keys)
    assert [results.model_key(r) for r in recs] == [("mlp", n, s) for n in (2, 4, 6) for s in (0, 1)]
    old = {results.model_key(r): r for r in base_run[1]}
    for r in recs[:4]:
        assert r == old[results.model_key(r)]  # reused verbatim, not retrained
    # config.json now covers the union of the widths; a third identical run trains nothing
    config = json.loads((out / "config.json").read_text())
    assert config["widths"] == [2, 4, 6] and config["archs"] == ["glu", "mlp"]
    sweeps.run_sweep(more, out, progress=False)
    assert len(counter.calls) == 1 and len(_lines(out)) == 10


def test_planner_and_trainer_arguments(tmp_path):
    """A planner that thinks compiling is free and training dear splits every width into its
    own bucket; a given trainer is called for each bucket (sequentially) and its records are
    the ones written, equal to the default (pipelined) run's."""
    calls = []

    def trainer(arch, pairs, width, dataset, config):
        calls.append((arch, width, len(pairs)))
        return sweeps.train_bucket(arch, pairs, width, dataset, config)

    config = BASE.replace(archs=("mlp",), widths=(2, 4, 6))
    dear = planning.Planner(flop_rate=1e3, compile_seconds=0.0)
    recs = sweeps.run_sweep(config, tmp_path / "split", progress=False, planner=dear, trainer=trainer)
    assert calls == [("mlp", 2, 2), ("mlp", 4, 2), ("mlp", 6, 2)]
    cheap = planning.Planner(flop_rate=1e30, compile_seconds=1e3)
    calls.clear()
    sweeps.run_sweep(config, None, progress=False, planner=cheap, trainer=trainer)
    assert calls == [("mlp", 6, 6)]  # one padded bucket
    default = sweeps.run_sweep(config, None, progress=False, planner=dear)
    for a, b in zip(recs, default, strict=True):
        assert results.model_key(a) == results.model_key(b)
        assert math.isclose(a["test_rmse"], b["test_rmse"], rel_tol=1e-12)
    assert len(_lines(tmp_path / "split")) == 6


def test_progress_bar_advances_when_a_bucket_is_saved(tmp_path, monkeypatch):
    """Buckets are launched ahead of time on a CPU; the bar counts a bucket only once its
    records are on disk (so it never shows 100 % while the last bucket still computes)."""
    out = tmp_path / "bar"
    seen = []

    class Bar:
        def __init__(self, total):
            self.total, self.n = total, 0

        def set_postfix_str(self, text, refresh=True):
            pass

        def update(self, k):
            self.n += k
            seen.append((self.n, len(_lines(out))))

        def close(self):
            seen.append(("closed", self.total))

    monkeypatch.setattr(sweeps, "_progress", lambda n, enabled: Bar(n))
    dear = planning.Planner(flop_rate=1e3, compile_seconds=0.0)  # one bucket per width
    sweeps.run_sweep(BASE, out, progress=True, planner=dear)
    assert seen == [(1, 2), (2, 4), (3, 6), (4, 8), ("closed", 4)]


# ---------------------------------------------------------------- knots placed for the target


def test_placed_knots_batch_equals_each_model_initialised_alone():
    """A bucket's placed-knot models (traced n, padded to W, vmapped) are, unit for unit,
    `inits.init(PRNGKey(seed), knots=placed_knots(f, n, degree))`."""
    import jax
    import jax.numpy as jnp

    from glu_scaling import inits, problems

    config = BASE.replace(archs=("glu",), problem="paper_1d", knots="placed")
    pairs, width = [(1, 0), (3, 1), (7, 0)], 8
    knots = inits.knot_table(config.init.knots, config.problem, "glu", [n for n, _ in pairs], width)
    batch = inits.init_batch(jnp.asarray([s for _, s in pairs], jnp.uint32), jnp.asarray([n for n, _ in pairs]),
                               k=1, n_in=1, n_out=1, width=width, activation="relu", spline_init=True,
                               dtype=jnp.float64, knots=knots)
    f = problems.scalar_target("paper_1d")
    for b, (n, s) in enumerate(pairs):
        alone = inits.init(jax.random.PRNGKey(s), "glu", 1, n, 1, width=width, dtype=jnp.float64,
                            knots=inits.placed_knots(f, n, 2))
        for a, c in zip(jax.tree.leaves(alone), jax.tree.leaves(jax.tree.map(lambda v: v[b], batch))):
            np.testing.assert_array_equal(a, c)
    # uniform: the init spaces them itself
    assert inits.knot_table(BASE.init.knots, BASE.problem, "glu", [2, 4], 4) is None


def test_placed_knots_equal_the_even_ones_for_a_cubic():
    """x^3 has a constant third derivative: the GLU's placed knots are the even ones (to
    rounding), so the sweep trains the same models."""
    config = BASE.replace(archs=("glu",), problem="x3")
    even = sweeps.run_sweep(config, None, progress=False)
    placed = sweeps.run_sweep(config.replace(knots="placed"), None, progress=False)
    for a, b in zip(even, placed):
        for key in ("train_rmse", "test_rmse"):
            assert math.isclose(a[key], b[key], rel_tol=1e-9), (key, a, b)


@pytest.mark.parametrize("arch,degree,rtol", [("glu", 2, 0.15), ("mlp", 1, 0.1)])
def test_frozen_gates_gain_the_predicted_knot_placement_factor(arch, degree, rtol):
    """With the gates frozen (`newton-splines`, each stage an exact least-squares solve), a
    model is a least-squares spline on its knots: placing them for f lowers the RMSE by
    about `knots.knot_placement_gain` (2.80 for the GLU, 1.37 for the MLP on paper_1d)."""
    from glu_scaling import problems

    config = sweep_config(archs=(arch,), widths=(24,), seeds=(0,), problem="paper_1d",
                                optimizer="newton-splines", n_data=2000, n_test=2000)
    (even,) = sweeps.run_sweep(config, None, progress=False)
    (placed,) = sweeps.run_sweep(config.replace(knots="placed"), None, progress=False)
    gain = knot_placement_gain(problems.scalar_target("paper_1d"), degree)
    assert even["test_rmse"] / placed["test_rmse"] == pytest.approx(gain, rel=rtol)


@pytest.mark.parametrize("changes,match", [
    (dict(knots="even"), "unknown knots 'even'; accepted: uniform, placed"),
    (dict(knots="placed", spline_init=False), "cannot go with the random init"),
    (dict(knots="placed", problem="friedman1"), "needs a 1D problem with a known target f .*got problem 'friedman1'"),
    (dict(knots="placed", problem="x3", archs=("glu", "gated3")), "got arch 'gated3' \\(degree 4\\)"),
])
def test_bad_knot_settings(changes, match, tmp_path):
    with pytest.raises(UsageError, match=match):
        sweeps.run_sweep(BASE.replace(**changes), tmp_path, progress=False)
    assert not (tmp_path / "results.jsonl").exists()


def test_a_folder_written_before_knots_existed_resumes(base_run, tmp_path, monkeypatch):
    """config.json files written before the `knots` and `factor_init` settings describe evenly
    spaced knots and drawn factors, which for mlp and glu (no factor 2) are today's models."""
    out = tmp_path / "old"
    out.mkdir()
    old = json.loads((base_run[0] / "config.json").read_text())
    assert old["factor_init"] == "one"
    del old["knots"], old["factor_init"]
    (out / "config.json").write_text(json.dumps(old))
    (out / "results.jsonl").write_text((base_run[0] / "results.jsonl").read_text())
    counter = CountingTrainBucket()
    monkeypatch.setattr(sweeps, "launch_bucket", counter)
    assert sweeps.run_sweep(BASE, out, progress=False) == base_run[1]  # the records reused verbatim
    assert counter.calls == []  # nothing retrained
    with pytest.raises(UsageError, match="holds results for knots='uniform', not 'placed'"):
        sweeps.run_sweep(BASE.replace(knots="placed", problem="one_over_1_p_9x2"), out, progress=False)
    # a gqu folder of that time holds drawn second factors: refused under the new default
    gqu = tmp_path / "old_gqu"
    gqu.mkdir()
    (gqu / "config.json").write_text(json.dumps({**old, "archs": ["gqu"]}))
    with pytest.raises(UsageError, match="holds results for factor_init='random', not 'one'.* or rerun with "
                                         "factor_init='random'"):
        sweeps.run_sweep(BASE.replace(archs=("gqu",)), gqu, progress=False)
    assert not (gqu / "results.jsonl").exists()


def test_a_sweeps_gate_steps_reach_its_models(tmp_path):
    """SweepConfig.gate_steps is newton-cascade's number of steps on {G, g}: with 0
    all-parameter steps (and no knot moves) an MLP takes its {D, d} step and then up to
    that many gate steps (the records count accepted steps), and config.json keeps the setting."""
    most = {}
    for gate_steps in (0, 1, 3):
        config = BASE.replace(archs=("mlp",), widths=(3, 5), seeds=(0, 1), optimizer="newton-cascade",
                              steps=0, gate_steps=gate_steps, knot_moves=0)
        records = sweeps.run_sweep(config, tmp_path / str(gate_steps), progress=False)
        most[gate_steps] = max(r["steps"] for r in records)
        assert json.loads((tmp_path / str(gate_steps) / "config.json").read_text())["gate_steps"] == gate_steps
    assert most == {0: 1, 1: 2, 3: 4}


def test_a_gqu_from_factor_init_one_fits_at_least_as_well_as_the_glu():
    """With factor 2 starting at the constant 1 the frozen GQU's first spline stages are the
    GLU's ({D, d} and {U_1, u_1} see the same hidden units) and its last, least squares on
    {U_2, u_2}, starts from the GLU's fit: its training RMSE can only be lower, model by
    model.  With drawn factors ("random") nothing bounds it by the GLU's."""
    ratios = {}
    for factor_init in inits.FACTOR_INITS:
        # 5 seeds: no other test compiles a program of this shape (one counts its traces)
        config = BASE.replace(archs=("glu", "gqu"), widths=(2, 4, 7), seeds=(0, 1, 2, 3, 4),
                                     factor_init=factor_init)
        got = {(r["arch"], r["n_hidden"], r["seed"]): r["train_rmse"]
               for r in sweeps.run_sweep(config, None, progress=False)}
        ratios[factor_init] = [got["gqu", n, s] / got["glu", n, s] for n in config.widths for s in config.seeds]
    assert max(ratios["one"]) < 1 - 1e-3  # below the GLU at every width: the cubic stage helps
    assert max(ratios["random"]) > 1.05  # here a GQU from drawn factors ends above its GLU


def test_placed_knots_follow_the_sweep_dtype_and_the_ahead_of_time_shapes():
    """float32 sweep: the knot table is cast to the models' dtype, in the ahead-of-time
    compilation (as on an accelerator) and in the launch; newton-splines keeps the gates,
    so the trained models still open at the placed knots."""
    import jax.numpy as jnp

    from glu_scaling import inits, problems

    config = BASE.replace(archs=("glu",), problem="paper_1d", knots="placed", dtype="float32")
    dataset = load_dataset(config)
    sweeps.precompile_bucket("glu", 2, 4, dataset, config)
    params, info, _ = sweeps.train_bucket("glu", [(2, 0), (4, 1)], 4, dataset, config)
    assert params.G.dtype == jnp.float32 and list(info["status"]) == [train.OK, train.OK]
    f = problems.scalar_target("paper_1d")
    for b, n in enumerate((2, 4)):
        t = inits.placed_knots(f, n, 2).astype(np.float32)
        np.testing.assert_allclose(-np.asarray(params.g[b, :n]) / np.asarray(params.G[b, :n, 0]), t, rtol=1e-6)


# ---------------------------------------------------------------- one program for every architecture


def _training_traces(monkeypatch) -> list[int]:
    """A list that records the factor count of every model program `train.train_one` is
    traced for from now on (jit traces once per program: a cache hit appends nothing)."""
    traced, train_one = [], train.train_one

    def counting(params, *args, **kwargs):
        traced.append(params.n_factors)
        return train_one(params, *args, **kwargs)

    monkeypatch.setattr(train, "train_one", counting)
    return traced


def test_newton_splines_architectures_share_one_training_program(tmp_path, monkeypatch):
    """A newton-splines sweep over mlp, glu and gqu pads the mlp and glu models with
    constant factors (`shared_factors`) and traces the training once, for a program of
    the GQU's two factors; every record equals, bit for bit, that of the architecture
    swept on its own (its own program, no padding).  Widths and seeds unique to this
    test, so that no other test's compiled program is reused."""
    config = BASE.replace(archs=("mlp", "glu", "gqu"), widths=(3, 7), seeds=(0, 1, 2))
    assert sweeps.shared_factors(config) == 2
    assert sweeps.shared_factors(config.replace(archs=("glu",))) is None
    assert sweeps.shared_factors(config.replace(optimizer="newton-cascade")) is None
    assert sweeps.shared_factors(config.replace(archs=("mlp", "gated3"))) is None  # padding 3 factors
    traced = _training_traces(monkeypatch)
    shared = sweeps.run_sweep(config, tmp_path / "shared", progress=False)
    assert traced == [2]
    alone = [r for arch in config.archs
             for r in sweeps.run_sweep(config.replace(archs=(arch,)), tmp_path / arch, progress=False)]
    assert traced[1:] == [0, 1, 2]  # each architecture alone: its own program
    assert _strip(shared) == _strip(alone)
    steps = {arch: {r["steps"] for r in shared if r["arch"] == arch} for arch in config.archs}
    assert steps == {"mlp": {1}, "glu": {2}, "gqu": {3}}  # one step per stage, none on the padding


def test_a_shared_program_compiles_ahead_and_returns_each_models_own_factors(monkeypatch):
    """The ahead-of-time compilation (as on an accelerator) lowers the padded program with
    its `factors` argument, and the launch then reuses it (no second trace of the
    training); train_bucket returns the glu's params with its one factor, equal to those
    of the glu trained alone.  A width of 5 unique to this test, so that no other test's
    program is reused."""
    config = BASE.replace(archs=("mlp", "glu", "gqu"))
    dataset = load_dataset(config)
    traced = _training_traces(monkeypatch)
    sweeps.precompile_bucket("glu", 2, 5, dataset, config)
    assert traced == [2]
    params, info, _ = sweeps.train_bucket("glu", [(2, 0), (5, 1)], 5, dataset, config)
    assert traced == [2]
    assert params.U.shape == (2, 1, 5, 1) and params.u.shape == (2, 1, 5)
    alone, alone_info, _ = sweeps.train_bucket("glu", [(2, 0), (5, 1)], 5, dataset,
                                               config.replace(archs=("glu",)))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(alone)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for key in ("status", "steps", "train_rmse", "test_rmse"):
        np.testing.assert_array_equal(info[key], alone_info[key])


def test_compile_ahead_compiles_a_shared_program_once(monkeypatch):
    """On an accelerator, of the buckets of a shared program with equal shapes only the
    first compiles the training program ahead (the first bucket of all compiles in its own
    launch); each still compiles its own init.  Without sharing every bucket after the
    first compiles both."""
    started = []

    def precompile(arch, n_models, width, dataset, config, train_program=True, ladder=None):
        started.append((arch, width, train_program))

    monkeypatch.setattr(planning, "accelerator", lambda: True)
    monkeypatch.setattr(sweeps, "precompile_bucket", precompile)
    todo = [(arch, width, [(width, 0), (width, 1)]) for width in (4, 8) for arch in ("mlp", "glu", "gqu")]
    ladder = linsolve.DEFAULT_LADDER
    pool, futures = sweeps._compile_ahead(todo, None, BASE.replace(archs=("mlp", "glu", "gqu")), ladder)
    pool.shutdown(wait=True)
    assert sorted(started) == sorted([("glu", 4, False), ("gqu", 4, False), ("mlp", 8, True), ("glu", 8, False),
                                      ("gqu", 8, False)])
    assert futures[0] is None and all(f is not None for f in futures[1:])
    started.clear()
    pool, futures = sweeps._compile_ahead(todo, None, BASE.replace(optimizer="newton-cascade"), ladder)
    pool.shutdown(wait=True)
    assert sorted(started) == sorted((arch, width, True) for arch, width, _ in todo[1:])
