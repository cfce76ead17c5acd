"""`glu-scaling reproduce`: Table 1 arithmetic on records with known slopes, the figure
selection, and a tiny end-to-end reproduction that resumes without retraining."""

import json

import numpy as np
import pytest
from conftest import CountingTrainBucket

from glu_scaling import plots, sweeps
from glu_scaling.cli import main
from glu_scaling.config import load_dataset, sweep_config
from glu_scaling.errors import UsageError
from glu_scaling.paper import experiments, figures, reproduce, table1


def synthetic_records(problem, arch, slope, train_slope, widths=(4, 8, 16, 32, 64), seeds=(0, 1, 2, 3),
                      noise=0.05, n_in=1, rng=None):
    """test_rmse = 0.3 n^slope, train_rmse = 0.2 n^train_slope, times exp(noise * N(0,1)) per model."""
    rng = rng or np.random.default_rng(0)
    recs = []
    for s in seeds:
        for n in widths:
            recs.append({"arch": arch, "problem": problem, "n_in": n_in, "n_hidden": n, "n_params": 3 * n + 1,
                         "seed": s, "status": "ok",
                         "test_rmse": 0.3 * n**slope * np.exp(noise * rng.normal()),
                         "train_rmse": 0.2 * n**train_slope * np.exp(noise * rng.normal())})
    return recs


def tiny_config(problem="paper_1d", archs=("mlp", "glu")):
    return sweep_config(archs=archs, widths=(2, 4, 8), seeds=(0, 1), problem=problem,
                        optimizer="newton-cascade", steps=1, n_data=64, n_test=64)


def test_table1_rows_recover_known_slopes():
    exp = experiments.Experiment("1d", tiny_config(), fit_range=(4, 64))
    recs = synthetic_records("paper_1d", "mlp", -2.0, -2.1) + synthetic_records("paper_1d", "glu", -3.0, -3.2)
    rows = table1.table1_rows([exp], {"1d": recs})
    by_arch = {r["arch"]: r for r in rows}
    for arch, slope, train_slope, paper, theory in (("mlp", -2.0, -2.1, -2.13, -2.0), ("glu", -3.0, -3.2, -3.08, -3.0)):
        r = by_arch[arch]
        assert r["ci_low"] < slope < r["ci_high"]
        assert r["ci_high"] - r["ci_low"] < 0.3  # 4 seeds, 5% noise on 5 widths spanning 4 octaves
        assert r["train_ci_low"] < train_slope < r["train_ci_high"]
        assert r["paper"] == paper and r["theory"] == theory and r["n_in"] == 1
        assert r["fit_range"] == [4.0, 64.0] and r["n_models"] == 20
        assert r["statuses"] == {"ok": 20, "diverged": 0, "stalled": 0}
        assert r["octave_range"] == [32.0, 64.0] and r["octave_ci_low"] < slope < r["octave_ci_high"]


def test_local_slopes_per_octave_follow_a_broken_power_law():
    """RMSE = n^-2 up to n = 16, then continuously n^-4 beyond: each octave's local slope
    is the exponent on it (the octave 8..16 and 16..32 cross nothing: exact), the
    n = 16..n_max slope is -4, and the table prints them."""
    exp = experiments.Experiment("1d", tiny_config(archs=("glu",)))
    widths = (2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64)

    def rmse(n):
        return n ** -2.0 if n <= 16 else 16.0**2 * n ** -4.0

    recs = [{"arch": "glu", "problem": "paper_1d", "n_in": 1, "n_hidden": n, "n_params": 4 * n + 1, "seed": s,
             "status": "ok", "test_rmse": rmse(n), "train_rmse": rmse(n)} for s in (0, 1) for n in widths]
    (row,) = table1.table1_rows([exp], {"1d": recs})
    got = {tuple(o["range"]): o["slope"] for o in row["octaves"]}
    assert list(got) == [(2, 4), (4, 8), (8, 16), (16, 32), (32.0, 64), (16, 64)]
    for octave, want in (((2, 4), -2.0), ((4, 8), -2.0), ((8, 16), -2.0), ((16, 32), -4.0), ((32.0, 64), -4.0),
                         ((16, 64), -4.0)):
        assert got[octave] == pytest.approx(want, abs=1e-12), octave
    text = table1.table1_markdown([row], quick=True)
    assert "| n = 2..4 |" in text
    assert "| 1/(1 + cos^2(pi x)) | GLU | -2.00 | -2.00 | -2.00 | -4.00 | -4.00 | -4.00 | -3 |" in text


def test_table1_ci_matches_the_t_interval_over_seeds():
    """Without noise inside a seed, every seed's slope is exact: the CI is mean +- t sd / sqrt(G)."""
    from scipy import stats

    exp = experiments.Experiment("1d", tiny_config(archs=("mlp",)))
    per_seed = [-1.9, -2.0, -2.1, -2.2]
    recs = []
    for s, k in enumerate(per_seed):
        for n in (2, 4, 8):
            recs.append({"arch": "mlp", "problem": "paper_1d", "n_in": 1, "n_hidden": n, "n_params": 3 * n + 1,
                         "seed": s, "status": "ok", "test_rmse": 0.5 * n**k, "train_rmse": 0.5 * n**k})
    (row,) = table1.table1_rows([exp], {"1d": recs})
    half = stats.t.ppf(0.975, 3) * np.std(per_seed, ddof=1) / 2
    assert row["slope"] == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert row["ci_high"] - row["slope"] == pytest.approx(half, rel=1e-9)


def test_table1_leaves_out_diverged_models_keeps_stalled_ones_and_counts_them():
    exp = experiments.Experiment("1d", tiny_config(archs=("glu",)))
    recs = synthetic_records("paper_1d", "glu", -3.0, -3.0, noise=0.0)
    recs[0] = {**recs[0], "status": "diverged", "test_rmse": 1e9}
    (row,) = table1.table1_rows([exp], {"1d": recs})
    assert row["slope"] == pytest.approx(-3.0, abs=1e-9)
    assert row["statuses"] == {"ok": 19, "diverged": 1, "stalled": 0}
    # a stalled model at the widest n, 10x worse than the trend, enters the fit of its seed
    widest = max(range(len(recs)), key=lambda i: (recs[i]["seed"] == 1, recs[i]["n_hidden"]))
    recs[widest] = {**recs[widest], "status": "stalled", "test_rmse": 10 * recs[widest]["test_rmse"]}
    (row,) = table1.table1_rows([exp], {"1d": recs})
    assert row["statuses"] == {"ok": 18, "diverged": 1, "stalled": 1}
    widths = np.log([4, 8, 16, 32, 64])
    bump = np.zeros(5)
    bump[-1] = np.log(10.0)
    seed1_slope = -3.0 + np.polyfit(widths, bump, 1)[0]
    assert row["slope"] == pytest.approx((3 * -3.0 + seed1_slope) / 4, abs=1e-9)


def test_frozen_gate_rows_carry_no_paper_slope():
    exp = experiments.Experiment("1d_frozen", tiny_config(archs=("glu",)).replace(
                                                                optimizer="newton-splines"))
    (row,) = table1.table1_rows([exp], {"1d_frozen": synthetic_records("paper_1d", "glu", -3.0, -3.0)})
    assert row["paper"] is None and row["theory"] == -3.0 and row["optimizer"] == "newton-splines"
    assert row["label"] == "1/(1 + cos^2(pi x)), newton-splines"
    assert "gates frozen" in row["protocol"]


def test_rows_before_the_all_parameter_steps_carry_no_paper_slope():
    """`newton-cascade` with 0 all-parameter steps (Table 1's `1d_stages` row) is labelled
    as such and, not being trained models, gets no paper slope beside it."""
    config = tiny_config(archs=("glu",)).replace(steps=0)
    (row,) = table1.table1_rows([experiments.Experiment("1d_stages", config)],
                                   {"1d_stages": synthetic_records("paper_1d", "glu", -3.0, -3.0)})
    assert row["paper"] is None and row["theory"] == -3.0 and row["optimizer"] == "newton-cascade"
    assert row["label"] == "1/(1 + cos^2(pi x)), 0 all-parameter steps"
    assert "newton-cascade with 0 all-parameter steps (its spline stages, up to 4 knot moves, one {G, g} step)" \
        in row["protocol"]
    reference = config.replace(knot_moves=0)  # the reference's cascade: no knot moves, and the row says so
    assert table1.row_label(reference) == "1/(1 + cos^2(pi x)), 0 all-parameter steps, no knot moves"
    assert "(its spline stages, no knot moves, one {G, g} step)" in table1.protocol(reference, load_dataset(reference))
    assert table1.row_label(config.replace(steps=None)) == "1/(1 + cos^2(pi x))"
    three = config.replace(gate_steps=3)  # the reference's code: 3 steps on {G, g}
    assert table1.row_label(three) == "1/(1 + cos^2(pi x)), 0 all-parameter steps, 3 gate steps"
    (row,) = table1.table1_rows([experiments.Experiment("1d_stages", three)],
                                   {"1d_stages": synthetic_records("paper_1d", "glu", -3.0, -3.0)})
    assert "(its spline stages, up to 4 knot moves, 3 {G, g} steps)" in row["protocol"]


def test_placed_knot_rows_are_labelled_and_compared_with_the_paper():
    config = tiny_config(archs=("glu",)).replace(knots="placed")
    exp = experiments.Experiment("1d_placed", config)
    (row,) = table1.table1_rows([exp], {"1d_placed": synthetic_records("paper_1d", "glu", -3.0, -3.0)})
    assert row["label"] == "1/(1 + cos^2(pi x)), knots placed" and row["knots"] == "placed"
    assert row["paper"] == -3.08 and row["theory"] == -3.0  # trained models: the paper's slope is the reference
    assert "knots placed for the target" in row["protocol"]
    frozen = config.replace(optimizer="newton-splines")
    assert table1.row_label(frozen) == "1/(1 + cos^2(pi x)), newton-splines, knots placed"


def test_markdown_table_has_a_row_per_arch_and_the_protocol():
    exp = experiments.Experiment("table1_friedman1", tiny_config("friedman1"))
    recs = synthetic_records("friedman1", "mlp", -0.5, -0.6, n_in=5) + synthetic_records("friedman1", "glu", -1.0,
                                                                                          -1.1, n_in=5)
    rows = table1.table1_rows([exp], {"table1_friedman1": recs})
    text = table1.table1_markdown(rows, quick=True, seconds=12.0)
    lines = [ln for ln in text.splitlines() if ln.startswith("| Friedman #1")]
    assert len(lines) == 2
    assert "| MLP | -0.55 |" in lines[0] and "| GLU | -1.00 |" in lines[1]
    assert rows[0]["theory"] is None and "| n/a |" in lines[0]  # no spline theory beyond 1D
    assert "64 train / 64 test pts; n = 2..8 (3 widths); 2 seeds; newton-cascade (1 steps)" in text
    assert "reproduce --quick" in text and "12 s" in text
    assert "trained in 0 s" in text  # the synthetic records carry no seconds


def test_protocol_names_how_a_gqus_second_factor_starts():
    import types

    data = types.SimpleNamespace(x_train=np.zeros((64, 1)), x_test=np.zeros((32, 1)))
    gqu = tiny_config("paper_1d").replace(archs=("mlp", "gqu"))
    assert table1.protocol(gqu, data).endswith("; GQU factor 2 starts at the constant 1 (factor_init 'one')")
    drawn = table1.protocol(gqu.replace(factor_init="random"), data)
    assert drawn.endswith("; GQU factor 2 starts at N(0, 1) draws (factor_init 'random')")
    assert "factor" not in table1.protocol(gqu.replace(archs=("mlp", "glu")), data)
    # --factor-init random: every sweep of the reproduction (resumes a runs folder of drawn GQUs)
    for quick in (False, True):
        assert {e.config.init.factor_init for e in experiments.experiments(quick)} == {"one"}
        assert {e.config.init.factor_init for e in experiments.experiments(quick, "random")} == {"random"}
    with pytest.raises(UsageError, match="unknown factor_init 'won'"):
        reproduce.reproduce("unused", factor_init="won")


def test_experiments_follow_the_paper_protocol():
    full = {e.name: e for e in experiments.experiments(quick=False)}
    one_d = full["1d"].config
    assert one_d.problem == "paper_1d" and one_d.n_data == 10_000 and one_d.dtype == "float64"
    assert set(range(1, 51)) <= set(one_d.widths) and len(one_d.seeds) >= 4 and max(one_d.widths) == 100
    assert one_d.train.optimizer == "newton-cascade" and one_d.archs == ("mlp", "glu", "gqu")
    for p in experiments.PAPER_SLOPES:
        name = "1d" if p == "paper_1d" else f"table1_{p}"
        assert full[name].problem == p
        assert min(full[name].config.widths) == 1 and len(full[name].config.seeds) == 4
    assert max(full["table1_friedman1"].config.widths) >= 128
    # the reference's schedule is the default one without knot moves; the placed-knot rows
    # repeat it with only the knots (and, trained, the archs) changed
    reference = one_d.replace(knot_moves=0)
    assert one_d.train.knot_moves == 4 and full["1d_reference"].config == reference
    assert full["1d_placed"].config == reference.replace(archs=("glu", "gqu"), knots="placed")
    assert full["1d_placed_frozen"].config == full["1d_frozen"].config.replace(knots="placed")
    assert full["1d_placed"].fit_range == full["1d"].fit_range == full["1d_stages"].fit_range == (4, 50)
    assert full["1d_stages"].config == reference.replace(steps=0)  # the reference cascade's stages only
    assert full["1d_knot_moves"].config == one_d.replace(optimizer="newton-knots", steps=None)
    for p in experiments.PAPER_SLOPES:
        if p != "paper_1d":
            assert full[f"table1_{p}_stages"].config == full[f"table1_{p}"].config.replace(steps=0)
    quick = experiments.experiments(quick=True)
    assert [e.name for e in quick] == list(full)


def test_figure_selection():
    assert reproduce.parse_only(None) == experiments.FIGURES
    assert reproduce.parse_only("fig3, FIG5") == ("fig3", "fig5")
    with pytest.raises(UsageError, match="unknown figure 'fig14'.*accepted: fig1, "):
        reproduce.parse_only("fig3,fig14")
    exps = experiments.experiments(quick=True)
    assert [e.name for e in reproduce.needed_experiments(exps, ("fig4",), table=False)] == ["1d"]
    assert [e.name for e in reproduce.needed_experiments(exps, ("fig7",), table=False)] == [
        "table1_airfoil", "table1_california"]
    assert reproduce.needed_experiments(exps, ("fig1",), table=False) == []
    assert len(reproduce.needed_experiments(exps, ("fig1",), table=True)) == len(exps)


@pytest.fixture
def drawn(monkeypatch):
    """The series each panel drawn by `plots.convergence_axes` shows (a list per panel)."""
    panels = []
    inner = plots.convergence_axes

    def spy(ax, records, x="n_hidden", **kw):
        panels.append(list(dict.fromkeys(r["arch"] for r in records)))
        return inner(ax, records, x, **kw)

    monkeypatch.setattr(plots, "convergence_axes", spy)
    return panels


def test_fig12_draws_every_knot_series(tmp_path, drawn):
    recs = {name: synthetic_records("paper_1d", "glu", -3.0 - i / 4, -3.0)
            + synthetic_records("paper_1d", "gqu", -3.5, -3.5) for i, (name, _) in enumerate(experiments.KNOT_SERIES)}
    paths = figures.fig12(recs, tmp_path, fit_range=(4, 64))
    assert [p.name for p in paths] == ["fig12_knot_placement.png", "fig12_knot_placement.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert drawn == [[label for _, label in experiments.KNOT_SERIES]] * 2  # a GLU panel and a GQU panel
    assert figures.fig12({}, tmp_path) == []
    exps = experiments.experiments(quick=True)
    assert [e.name for e in reproduce.needed_experiments(exps, ("fig12",), table=False)] == [
        "1d_reference", "1d_frozen", "1d_placed", "1d_placed_frozen"]


def test_fig13_draws_each_architecture_before_and_after_the_all_parameter_steps(tmp_path, drawn):
    names = [name for name, _ in experiments.STEP_SERIES]
    recs = {name: [r for arch, slope in (("mlp", -2.0), ("glu", -3.0), ("gqu", -3.5))
                   for r in synthetic_records("paper_1d", arch, slope + shift, slope)]
            for name, shift in zip(names, (-0.5, 0.0, -0.6, -0.4))}
    paths = figures.fig13(recs, tmp_path, 100, fit_range=(4, 64))
    assert [p.name for p in paths] == ["fig13_all_parameter_steps.png", "fig13_all_parameter_steps.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert drawn == [["0 all-parameter steps", "100 all-parameter steps", "knot moves, 0 all-parameter steps",
                      "knot moves, then 100 all-parameter steps"]] * 3  # MLP, GLU and GQU panels
    assert figures.fig13({}, tmp_path, 100) == []
    assert figures.fig13({"1d": recs["1d"]}, tmp_path / "one", 100) == []  # two series or none
    assert len(figures.fig13({n: recs[n] for n in ("1d_stages", "1d_reference")}, tmp_path, 100)) == 2
    exps = experiments.experiments(quick=True)
    assert [e.name for e in reproduce.needed_experiments(exps, ("fig13",), table=False)] == [
        "1d", "1d_reference", "1d_stages", "1d_knot_moves"]


def test_cli_rejects_an_unknown_figure(capsys):
    assert main(["reproduce", "--only", "fig99", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'fig99'" in err[0]


@pytest.fixture
def tiny_experiments(monkeypatch):
    exps = [experiments.Experiment("1d", tiny_config(archs=("mlp", "glu", "gqu")), fit_range=(2, 8)),
            experiments.Experiment("table1_sin_x_sin_y", tiny_config("sin_x_sin_y"))]
    monkeypatch.setattr(reproduce, "experiments", lambda quick=False, factor_init="one": exps)
    return exps


@pytest.fixture
def shared_experiments(monkeypatch):
    """tiny_experiments with widths 2, 4 and 2 steps: the 1D mlp and glu training programs are
    those of tests/test_sharding.py's BASE (compiled once per session)."""
    small = dict(widths=(2, 4), steps=2)
    exps = [experiments.Experiment("1d", tiny_config(archs=("mlp", "glu", "gqu")).replace(**small), fit_range=(2, 4)),
            experiments.Experiment("table1_sin_x_sin_y", tiny_config("sin_x_sin_y").replace(**small))]
    monkeypatch.setattr(reproduce, "experiments", lambda quick=False, factor_init="one": exps)
    return exps


def test_reproduce_end_to_end_and_resume(tmp_path, shared_experiments, monkeypatch):
    out, runs = tmp_path / "figs", tmp_path / "runs"
    figures = ("fig3", "fig4", "fig5", "fig6")
    summary = reproduce.reproduce(out, runs=runs, quick=True, figures=figures, progress=False, log=lambda s: None)
    for stem in ("fig3_convergence_1d", "fig4_splines", "fig5_convergence_gqu", "fig6_2d_friedman"):
        for ext in (".png", ".pdf"):
            assert (out / f"{stem}{ext}").stat().st_size > 1000
    table = json.loads((out / "table1.json").read_text())
    assert [(r["problem"], r["arch"]) for r in table["rows"]] == [
        ("paper_1d", "mlp"), ("paper_1d", "glu"), ("paper_1d", "gqu"), ("sin_x_sin_y", "mlp"), ("sin_x_sin_y", "glu")]
    assert table["rows"][3]["n_in"] == 2 and table["rows"][3]["paper"] == -0.91
    copied = [json.loads(ln) for ln in (out / "results" / "1d.jsonl").read_text().splitlines()]
    assert len(copied) == 3 * 2 * 2 and {r["arch"] for r in copied} == {"mlp", "glu", "gqu"}
    assert len(summary["rows"]) == 5
    assert json.loads((out / "results" / reproduce.FACTOR_INIT_FILE).read_text()) == {"1d": "one"}  # for --redraw
    # a second run finds every model done and trains nothing, with the same table
    counter = CountingTrainBucket()
    monkeypatch.setattr(sweeps, "launch_bucket", counter)
    fig3_pdf = (out / "fig3_convergence_1d.pdf").read_bytes()
    again = reproduce.reproduce(out, runs=runs, quick=True, figures=("fig3",), progress=False, log=lambda s: None)
    assert counter.calls == []
    assert (out / "fig3_convergence_1d.pdf").read_bytes() == fig3_pdf  # no creation date: same bytes
    assert [r["slope"] for r in again["rows"]] == [r["slope"] for r in table["rows"]]


def test_table1_survives_a_widest_width_that_diverged_everywhere():
    exp = experiments.Experiment("1d", tiny_config(archs=("glu",)), fit_range=(4, 64))
    recs = [{**r, "status": "diverged", "test_rmse": float("nan")} if r["n_hidden"] == 64 else r
            for r in synthetic_records("paper_1d", "glu", -3.0, -3.0, noise=0.0)]
    (row,) = table1.table1_rows([exp], {"1d": recs})
    assert row["slope"] == pytest.approx(-3.0, abs=1e-9) and row["fit_range"] == [4.0, 32.0]
    assert row["octave_range"] == [16.0, 32.0]  # the last octave of the widths that did not diverge
    assert row["statuses"]["diverged"] == 4


def test_only_names_table1_and_suggests_figures():
    assert reproduce.parse_only("fig3,table1") == ("fig3", "table1")
    with pytest.raises(UsageError, match=r"unknown figure 'fig03' \(did you mean 'fig3'\?\)"):
        reproduce.parse_only("fig03")
    with pytest.raises(UsageError, match="names no figure"):
        reproduce.parse_only(" , ")


def test_redraw_uses_the_written_records_and_trains_nothing(tmp_path, tiny_experiments, monkeypatch):
    """--redraw reads OUT/results/<experiment>.jsonl: the table's slopes are those of the records
    there (synthetic power laws with known slopes), no sweep runs and no runs folder appears."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "figs"
    (out / "results").mkdir(parents=True)
    exp_1d, exp_2d = tiny_experiments
    known = {"mlp": -2.0, "glu": -3.0, "gqu": -4.0}
    for exp, problem in ((exp_1d, "paper_1d"), (exp_2d, "sin_x_sin_y")):
        recs = [r for arch in exp.config.archs for r in synthetic_records(
            problem, arch, known[arch], known[arch] - 0.5, widths=exp.config.widths, seeds=exp.config.seeds, noise=0.0)]
        (out / "results" / f"{exp.name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    counter = CountingTrainBucket()
    monkeypatch.setattr(sweeps, "launch_bucket", counter)
    summary = reproduce.reproduce(out, quick=True, figures=("fig3", "fig6"), redraw=True, progress=False,
                                  log=lambda s: None)
    assert counter.calls == [] and not (tmp_path / "runs").exists()
    assert (out / "fig3_convergence_1d.png").stat().st_size > 1000
    slopes_by_row = {(r["problem"], r["arch"]): (r["slope"], r["train_slope"]) for r in summary["rows"]}
    for (_problem, arch), (test, train) in slopes_by_row.items():
        assert test == pytest.approx(known[arch], abs=1e-12) and train == pytest.approx(known[arch] - 0.5, abs=1e-12)
    assert len(slopes_by_row) == 5
    # how the GQUs were made comes from OUT/results/factor_init.json; without one, the records
    # predate the option: drawn factors
    sidecar = out / "results" / reproduce.FACTOR_INIT_FILE
    assert "GQU factor 2 starts at N(0, 1) draws" in (out / "table1.md").read_text()
    assert json.loads(sidecar.read_text()) == {"1d": "random"}
    sidecar.write_text(json.dumps({"1d": "one"}))
    reproduce.reproduce(out, quick=True, figures=(), redraw=True, progress=False, log=lambda s: None)
    assert "GQU factor 2 starts at the constant 1" in (out / "table1.md").read_text()
    with pytest.raises(UsageError, match="--factor-init does not go with it"):
        reproduce.reproduce(out, quick=True, figures=(), redraw=True, factor_init="one", log=lambda s: None)
    sidecar.write_text(json.dumps({"1d": "ones"}))
    with pytest.raises(UsageError, match="factor_init.json' must map experiment names to one of one, random"):
        reproduce.reproduce(out, quick=True, figures=(), redraw=True, log=lambda s: None)


def test_redraw_leaves_out_optional_experiments_an_older_folder_lacks(tmp_path, monkeypatch):
    """A results folder written before the 0-step experiments existed still redraws: their
    rows and Fig. 13 are left out with a note, everything else is drawn as before."""
    exps = [experiments.Experiment("1d", tiny_config(archs=("mlp", "glu", "gqu")), fit_range=(2, 8)),
            experiments.Experiment("1d_stages", tiny_config(archs=("mlp", "glu", "gqu")).replace(steps=0),
                                 fit_range=(2, 8), optional=True)]
    monkeypatch.setattr(reproduce, "experiments", lambda quick=False, factor_init="one": exps)
    out = tmp_path / "figs"
    (out / "results").mkdir(parents=True)
    recs = [r for arch in ("mlp", "glu", "gqu") for r in synthetic_records(
        "paper_1d", arch, -2.0, -2.0, widths=exps[0].config.widths, seeds=exps[0].config.seeds)]
    (out / "results" / "1d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    notes = []
    summary = reproduce.reproduce(out, quick=True, figures=("fig3", "fig13"), redraw=True, progress=False,
                                  log=notes.append)
    assert any("no records of 1d_stages" in note for note in notes)
    assert {r["experiment"] for r in summary["rows"]} == {"1d"} and len(summary["rows"]) == 3
    assert (out / "fig3_convergence_1d.png").exists() and not (out / "fig13_all_parameter_steps.png").exists()


def test_redraw_refuses_missing_records(tmp_path, tiny_experiments):
    out = tmp_path / "figs"
    with pytest.raises(UsageError, match=r"--redraw needs .*1d\.jsonl"):
        reproduce.reproduce(out, quick=True, figures=("fig3",), table=False, redraw=True, log=lambda s: None)
    assert not out.exists()  # refused before any folder is made
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(UsageError, match="is a file; give a folder path"):
        reproduce.reproduce(a_file, quick=True, figures=("fig3",), table=False, redraw=True, log=lambda s: None)
    exp_1d = tiny_experiments[0]
    recs = [r for arch in exp_1d.config.archs for r in synthetic_records(
        "paper_1d", arch, -2.0, -2.0, widths=exp_1d.config.widths, seeds=exp_1d.config.seeds)]
    recs = [r for r in recs if not (r["arch"] == "glu" and r["n_hidden"] == 4 and r["seed"] == 1)]
    (out / "results").mkdir(parents=True)
    (out / "results" / "1d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(UsageError, match=r"lacks 1 of the 18 models .* \('glu', 4, 1\)"):
        reproduce.reproduce(out, quick=True, figures=("fig3",), table=False, redraw=True, log=lambda s: None)
    assert not (out / "fig3_convergence_1d.png").exists()
    with pytest.raises(UsageError, match="--runs does not go with it"):
        reproduce.reproduce(out, runs=tmp_path / "r", quick=True, redraw=True, log=lambda s: None)


def test_a_broken_factor_init_file_is_refused_before_any_training(tmp_path, tiny_experiments, monkeypatch):
    out, runs = tmp_path / "figs", tmp_path / "runs"
    (out / "results").mkdir(parents=True)
    (out / "results" / reproduce.FACTOR_INIT_FILE).write_text(json.dumps({"1d": "ones"}))
    counter = CountingTrainBucket()
    monkeypatch.setattr(sweeps, "launch_bucket", counter)
    with pytest.raises(UsageError, match="factor_init.json' must map experiment names to one of one, random"):
        reproduce.reproduce(out, runs=runs, quick=True, figures=("fig3",), progress=False, log=lambda s: None)
    assert counter.calls == [] and not runs.exists()
