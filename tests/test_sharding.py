"""Tests for scale-out: the batch axis sharded over devices, padding to a multiple of the
device count, device selection, multi-host start-up settings, per-host results files and
`merge`.

The sharded run is a subprocess with four simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=4, and a large enough XLA:CPU
thread pool: `distributed.simulated_cpu_env`) training the tiny study of
tests/test_sweep.py; it must give the single-device run's numbers.  The in-process
single-device run shares its compiled calls with tests/test_sweep.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CountingTrainBucket

from glu_scaling import cli, distributed, inits, linsolve, models, newton, planning, results, sweeps
from glu_scaling.config import sweep_config
from glu_scaling.errors import UsageError

# the study of tests/test_sweep.py, trained with newton-cascade (the spline stages, then its
# masked loop over the gate and all-parameter stages, `train._newton_schedule`) instead of
# newton-splines
BASE = sweep_config(archs=("mlp", "glu"), widths=(2, 4), seeds=(0, 1), problem="one_over_1_p_9x2",
                         optimizer="newton-cascade", steps=2, n_data=64, n_test=64)


# ---------------------------------------------------------------- padding to a device multiple


@pytest.mark.parametrize("n,devices,batch,expected", [
    (4, 1, 4, (4, 4)), (7, 1, 4, (8, 4)), (3, 1, 4, (3, 3)), (9, 1, None, (9, 9)),
    (4, 3, None, (6, 2)), (4, 4, None, (4, 1)), (6, 4, 4, (8, 2)), (34, 4, 4, (48, 4)),
    (34, 4, 3, (36, 3)), (1, 4, None, (4, 1)), (480, 1, 240, (480, 240)),
])
def test_padded_size(n, devices, batch, expected):
    total, per_device = distributed.padded_size(n, devices, batch)
    assert (total, per_device) == expected
    # every device holds the same number of whole lax.map groups, with fewer than one
    # group of dummies per device beyond the ceil(n / devices) share
    assert total >= n and total % (devices * per_device) == 0
    share = -(-n // devices)
    assert total // devices - share < per_device
    if devices == 1:  # the unsharded rule: pad to a multiple of min(batch, n)
        b = n if batch is None else min(batch, n)
        assert total == n + (-n) % b


def test_pad_models_appends_masked_copies(single):
    # the GLU models of BASE's bucket (the `single` run has compiled their init for these shapes)
    params = inits.init_batch(jnp.asarray([0, 1, 0, 1], jnp.uint32), jnp.asarray([2, 2, 4, 4]), k=1, n_in=1,
                                n_out=1, width=4, activation="relu", spline_init=True, dtype=jnp.dtype("float64"))
    x = jnp.linspace(-1, 1, 7)[:, None]

    @jax.jit  # one compilation instead of one per eager op
    def pad_and_apply(params):
        padded = distributed.pad_models(params, 6)
        return padded, jax.vmap(newton.apply_params, in_axes=(0, None))(padded, x)

    padded, y = pad_and_apply(params)
    assert padded.mask.shape == (6, 4) and padded.G.shape == (6, 4, 1) and padded.U.shape == (6, 1, 4, 1)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(padded)):
        np.testing.assert_array_equal(np.asarray(b)[:4], np.asarray(a))
    assert np.all(np.asarray(padded.mask)[4:] == 0) and np.asarray(params.mask).sum() == 12
    np.testing.assert_array_equal(np.asarray(padded.G)[4:], np.repeat(np.asarray(params.G)[:1], 2, axis=0))
    # a dummy is the constant d whatever its units hold; model 0 is not
    np.testing.assert_array_equal(np.asarray(y[4:]), np.broadcast_to(np.asarray(padded.d)[4:, None], (2, 7, 1)))
    assert np.ptp(np.asarray(y[0])) > 0.1
    assert distributed.pad_models(params, 4) is params


def test_default_batch_size_balances_groups(monkeypatch):
    # one CPU device: min(n, CPU_BATCH), the unsharded rule
    assert planning.CPU_BATCH == 1
    assert [planning.default_batch_size(n) for n in (1, 3, 4, 9)] == [1, 1, 1, 1]
    assert planning.default_batch_size(34, n_devices=4) == 1
    # several CPU devices: each device's share in balanced groups of at most CPU_BATCH
    monkeypatch.setattr(planning, "CPU_BATCH", 2)
    assert [planning.default_batch_size(n) for n in (1, 3, 4, 9)] == [1, 2, 2, 2]
    assert planning.default_batch_size(34, n_devices=4) == 2  # share 9: 5 groups of 2, one dummy
    assert planning.default_batch_size(4, n_devices=3) == 2
    assert planning.default_batch_size(5, n_devices=4) == 2
    monkeypatch.setattr(planning, "CPU_BATCH", 4)  # the balancing with a larger cap
    assert [planning.default_batch_size(n) for n in (1, 3, 4, 9)] == [1, 3, 4, 4]
    assert planning.default_batch_size(34, n_devices=4) == 3  # share 9: 3 groups of 3, no dummy
    # an accelerator: as many as fit in the memory budget, balanced
    monkeypatch.setattr(planning, "accelerator", lambda: True)
    monkeypatch.setattr(planning, "memory_budget", lambda fraction=0.5: 0.5 * 127e9)  # an H200 at fraction 0.9
    assert planning.default_batch_size(480) == 480
    gqu = planning.model_bytes(2, 1, 1, 100, 10_000, 2048, 8)
    assert gqu == 2 * 8 * (3 * 2048 * 701 + 8 * 2048 * 100 + 6 * 701**2 + 5 * 10240 * 100)
    assert 2.2e8 < gqu < 2.3e8  # ~224 MB, as the docstring's arithmetic says
    # 4 damping rungs per round: 4 shifted copies and 4 factors where 1 and 1 were
    four_rungs = linsolve.Ladder(rungs_per_round=4)
    assert planning.model_bytes(2, 1, 1, 100, 10_000, 2048, 8, four_rungs) == gqu + 2 * 8 * 6 * 701**2
    # a blocked Cholesky: each shifted copy symmetrised and its factor's columns joined
    blocked = linsolve.Ladder(cholesky_block=128)
    assert planning.model_bytes(2, 1, 1, 100, 10_000, 2048, 8, blocked) == gqu + 2 * 8 * 2 * 701**2
    both = linsolve.Ladder(4, 128)
    assert planning.model_bytes(2, 1, 1, 100, 10_000, 2048, 8, both) == gqu + 2 * 8 * (6 + 8) * 701**2
    assert planning.default_batch_size(480, bytes_per_model=gqu) == 240  # cap 283: two groups of 240
    assert planning.default_batch_size(480, n_devices=4, bytes_per_model=gqu) == 120
    assert planning.default_batch_size(3, bytes_per_model=1e12) == 1


# ---------------------------------------------------------------- device selection and start-up


def test_resolve_devices():
    assert distributed.resolve_devices(None, visible=4, processes=1) == 4
    assert [distributed.resolve_devices(n, visible=4, processes=1) for n in (1, 2, 4)] == [1, 2, 4]
    for bad in (0, -1, 5, 2.0, True):
        with pytest.raises(UsageError) as err:
            distributed.resolve_devices(bad, visible=4, processes=1)
        msg = str(err.value)
        assert repr(bad) in msg and "1..4" in msg and "\n" not in msg
    assert distributed.resolve_devices(8, visible=8, processes=2) == 8
    with pytest.raises(UsageError, match=r"devices 4 is not accepted in a 2-process run; accepted: 8"):
        distributed.resolve_devices(4, visible=8, processes=2)


@pytest.mark.parametrize("argv_devices", ["0", "2"])
def test_cli_devices_out_of_range(argv_devices, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GLU_SCALING_CACHE", "off")
    argv = ["sweep", "--arch", "mlp", "--widths", "2", "--steps", "1", "--optimizer", "newton-splines",
            "--n-data", "64", "--n-test", "64", "--quiet", "--out", str(tmp_path / "o"), "--devices", argv_devices]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"got {argv_devices}" in err and "1..1" in err, err
    assert not (tmp_path / "o" / "results.jsonl").exists()


def test_settings_from_env():
    assert distributed.settings_from_env({}) is None
    assert distributed.settings_from_env({"SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"}) is None
    assert distributed.settings_from_env({"SLURM_STEP_NUM_TASKS": "4"}) == {}
    # a batch script of an sbatch --ntasks=4 job runs one process: no distributed start
    assert distributed.settings_from_env({"SLURM_NTASKS": "4"}) is None
    assert distributed.settings_from_env({"GLU_SCALING_DISTRIBUTED": "1"}) == {}
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert distributed.settings_from_env(env) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2,
                                                  "process_id": 1}
    assert distributed.settings_from_env({"JAX_COORDINATOR_ADDRESS": "h:1"}) == {"coordinator_address": "h:1"}
    with pytest.raises(UsageError, match=r"JAX_PROCESS_ID='one' is not an integer >= 0"):
        distributed.settings_from_env(dict(env, JAX_PROCESS_ID="one"))
    with pytest.raises(UsageError, match=r"JAX_NUM_PROCESSES='0'"):
        distributed.settings_from_env(dict(env, JAX_NUM_PROCESSES="0"))
    with pytest.raises(UsageError, match=r"JAX_NUM_PROCESSES='four'"):  # checked without a coordinator too
        distributed.settings_from_env({"JAX_NUM_PROCESSES": "four"})
    assert distributed.initialize({}) is False  # nothing asked: a single process


def test_simulated_cpu_env():
    assert distributed.simulated_cpu_env(4, cpus=2) == {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "PJRT_NPROC": "6"}
    assert distributed.simulated_cpu_env(2, cpus=16)["PJRT_NPROC"] == "18"


def test_records_filename_and_owners():
    assert distributed.records_filename(0, 1) == "results.jsonl"
    assert distributed.records_filename(3, 4) == "results.host3.jsonl"
    assert distributed.make_mesh(1) is None
    np.testing.assert_array_equal(distributed.device_owners(6, None), np.zeros(6))


# ---------------------------------------------------------------- 4 devices vs 1


_SHARDED = textwrap.dedent("""
    import collections, dataclasses, json, sys, threading
    import jax
    jax.config.update("jax_enable_x64", True)
    from glu_scaling import sweeps, train
    from glu_scaling.config import load_dataset, sweep_config
    compiles = collections.Counter()  # compilations of a bucket's calls, by thread
    def listen(event, duration, fun_name="", **kw):
        if event.endswith("backend_compile_duration") and fun_name in (
                "jit(train_batch)", "jit(draw_batch)", "jit(assemble_batch)"):
            compiles[threading.current_thread().name + " " + fun_name] += 1
    jax.monitoring.register_event_duration_secs_listener(listen)
    meshes = []
    inner = train.train_batch
    def spy(params, data, config, batch_size=None, mesh=None, factors=None, **kwargs):
        meshes.append(None if mesh is None else mesh.size)
        return inner(params, data, config, batch_size=batch_size, mesh=mesh, factors=factors, **kwargs)
    spy.lower = inner.lower
    train.train_batch = spy
    base = sweep_config(**json.loads(sys.argv[1]))
    out = {"device_count": jax.device_count(), "records": []}
    for arch, devices, folder in (("mlp", None, sys.argv[2]), ("glu", 3, sys.argv[3])):
        config = base.replace(archs=(arch,), devices=devices)
        if arch == "glu":  # compiled ahead in another thread, as run_sweep does on an accelerator
            worker = threading.Thread(target=sweeps.precompile_bucket, name="ahead",
                                      args=("glu", 4, 4, load_dataset(config), config))
            worker.start(); worker.join()
        out["records"] += sweeps.run_sweep(config, folder, progress=False)
    out["meshes"] = list(meshes)
    out["compiles"] = dict(compiles)
    # mlp and glu under newton-splines, one program for both, on all 4 devices
    out["shared_records"] = sweeps.run_sweep(base.replace(optimizer="newton-splines"), None,
                                             progress=False)
    out["shared_meshes"] = meshes[len(out["meshes"]):]
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory):
    """BASE on 4 simulated CPU devices in a subprocess (mlp on all 4, glu on 3 of them: 4
    models padded to 6), and meanwhile BASE on this process's one device."""
    root = tmp_path_factory.mktemp("sharded")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COORDINATOR", "SLURM", "GLU_SCALING_D"))}
    env.update(distributed.simulated_cpu_env(4), JAX_PLATFORMS="cpu")
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in BASE.to_json().items()}
    proc = subprocess.Popen([sys.executable, "-c", _SHARDED, json.dumps(cfg), str(root / "mlp"), str(root / "glu")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        single = sweeps.run_sweep(BASE, None, progress=False)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    return root, json.loads(stdout.splitlines()[-1]), single


@pytest.fixture(scope="module")
def sharded(both_runs):
    return both_runs[:2]


@pytest.fixture(scope="module")
def single(both_runs):
    return both_runs[2]


def test_sharded_sweep_equals_single_device(sharded, single):
    _, out = sharded
    assert out["device_count"] == 4
    assert out["meshes"] == [4, 3]  # really sharded: all 4 devices, then --devices 3
    # the glu bucket compiled ahead in a thread was not compiled again when it ran, and its
    # random draws reused the mlp bucket's compiled draw (same width and models)
    assert out["compiles"] == {f"{thread} jit({fun})": 1 for thread in ("MainThread", "ahead")
                               for fun in ("train_batch", "assemble_batch")} | {"MainThread jit(draw_batch)": 1}
    got = out["records"]
    assert [results.model_key(r) for r in got] == [results.model_key(r) for r in single]
    for a, b in zip(got, single):
        assert a["status"] == b["status"] == "ok"
        for key in ("train_rmse", "test_rmse"):
            assert math.isclose(a[key], b[key], rel_tol=1e-9), (key, a, b)
        assert a["steps"] == b["steps"] and a["n_params"] == b["n_params"]


def test_a_shared_program_sharded_equals_single_device(sharded):
    """BASE's mlp and glu under newton-splines, each bucket on 4 devices through the one
    program they share (the models' factor counts sharded with them), give the
    single-device records of the same shared program to 1e-9."""
    _, out = sharded
    config = BASE.replace(optimizer="newton-splines")
    assert sweeps.shared_factors(config) == 1 and out["shared_meshes"] == [4, 4]
    got, want = out["shared_records"], sweeps.run_sweep(config, None, progress=False)
    assert [results.model_key(r) for r in got] == [results.model_key(r) for r in want]
    for a, b in zip(got, want):
        assert a["status"] == b["status"] and a["steps"] == b["steps"]
        for key in ("train_rmse", "test_rmse"):
            assert math.isclose(a[key], b[key], rel_tol=1e-9), (key, a, b)


def test_resume_with_other_devices_is_accepted(sharded, single, tmp_path, monkeypatch):
    """A folder written with 3 devices (config devices=3), its records split over two host
    files as a 2-host run leaves them: a 1-device rerun accepts it and trains nothing."""
    root, _ = sharded
    src = root / "glu"
    assert json.loads((src / "config.json").read_text())["devices"] == 3
    folder = tmp_path / "resume"
    folder.mkdir()
    (folder / "config.json").write_text((src / "config.json").read_text())
    lines = (src / "results.jsonl").read_text().splitlines(keepends=True)
    (folder / "results.host0.jsonl").write_text("".join(lines[:2]))
    (folder / "results.host1.jsonl").write_text("".join(lines[2:]))
    counter = CountingTrainBucket()
    monkeypatch.setattr(sweeps, "launch_bucket", counter)
    recs = sweeps.run_sweep(BASE.replace(archs=("glu",), devices=1), folder, progress=False)
    assert counter.calls == []
    want = [r for r in single if r["arch"] == "glu"]
    assert [results.model_key(r) for r in recs] == [results.model_key(r) for r in want]
    written = {results.model_key(r): r for r in map(json.loads, lines)}
    assert recs == [written[results.model_key(r)] for r in recs]  # reused verbatim, not retrained
    for a, b in zip(recs, want):
        assert a["status"] == b["status"] and math.isclose(a["test_rmse"], b["test_rmse"], rel_tol=1e-9)
    assert json.loads((folder / "config.json").read_text())["devices"] == 1


def test_accelerator_sweeps_compile_later_buckets_ahead(single, monkeypatch):
    """On an accelerator run_sweep compiles every bucket after the first in worker threads and
    waits for a bucket's compilation before training it (stand-ins record the order)."""
    import threading

    events = []

    def precompile(arch, n_models, width, dataset, config, train_program=True, ladder=None):
        events.append(("compile", arch, n_models, width, threading.current_thread().name))

    def train(arch, pairs, width, dataset, config, ladder=None):
        events.append(("train", arch, len(pairs), width, threading.current_thread().name))
        return inner(arch, pairs, width, dataset, config)

    inner = sweeps.train_bucket
    monkeypatch.setattr(planning, "accelerator", lambda: True)
    monkeypatch.setattr(sweeps, "precompile_bucket", precompile)
    monkeypatch.setattr(sweeps, "train_bucket", train)
    recs = sweeps.run_sweep(BASE, None, progress=False)
    steps = [e[:4] for e in events]
    assert sorted(steps) == [("compile", "glu", 4, 4), ("train", "glu", 4, 4), ("train", "mlp", 4, 4)]
    assert steps.index(("compile", "glu", 4, 4)) < steps.index(("train", "glu", 4, 4))
    threads = {e[:2]: e[4] for e in events}
    assert threads[("compile", "glu")].startswith("glu_scaling-compile")
    assert threads[("train", "mlp")] == threads[("train", "glu")] == "MainThread"
    # the accelerator's rule vmaps all 4 models of a bucket together, the CPU's one at a time
    assert [r["status"] for r in recs] == [r["status"] for r in single]
    np.testing.assert_allclose([r["test_rmse"] for r in recs], [r["test_rmse"] for r in single], rtol=1e-9)


# ---------------------------------------------------------------- per-host files and merge


def _rec(arch, n, seed, rmse):
    return {"arch": arch, "problem": "p", "n_in": 1, "n_hidden": n, "n_params": models.param_count(arch, 1, n, 1),
            "seed": seed, "test_rmse": rmse, "train_rmse": rmse, "status": "ok"}


def test_host_files_are_read_in_host_order(tmp_path):
    results.append_records(tmp_path, [_rec("mlp", 2, 0, 0.1)], "results.host10.jsonl")
    results.append_records(tmp_path, [_rec("mlp", 2, 0, 0.2), _rec("mlp", 4, 0, 0.3)], "results.host2.jsonl")
    results.append_records(tmp_path, [_rec("mlp", 8, 0, 0.4)])
    (tmp_path / "results.hostX.jsonl").write_text(json.dumps(_rec("mlp", 16, 0, 0.5)) + "\n")  # not a host file
    assert [p.name for p in results.host_files(tmp_path)] == ["results.host2.jsonl", "results.host10.jsonl"]
    assert [r["test_rmse"] for r in results.read_records(tmp_path)] == [0.4, 0.2, 0.3, 0.1]
    assert [r["test_rmse"] for r in results.read_records(tmp_path, "results.host10.jsonl")] == [0.1]
    assert [r["test_rmse"] for r in results.unique_records(tmp_path)] == [0.4, 0.2, 0.3]


def test_merge_keeps_each_model_once_and_the_config(tmp_path, capsys):
    config = dict(BASE.to_json(), devices=8)
    results.check_config(tmp_path, config)
    before = (tmp_path / "config.json").read_text()
    results.append_records(tmp_path, [_rec("mlp", 2, 0, 0.25)])
    for host, recs in enumerate([[_rec("mlp", 2, 1, 0.24), _rec("mlp", 4, 0, 0.0625)],
                                 [_rec("mlp", 4, 1, 0.0626), _rec("mlp", 2, 0, 9.0)]]):  # (mlp, 2, 0) again
        results.append_records(tmp_path, recs, distributed.records_filename(host, 2))
    with open(tmp_path / "results.host1.jsonl", "a") as fh:
        fh.write('{"arch": "mlp", "n_hidden": 8, "se')  # a host killed mid-line
    assert cli.main(["merge", str(tmp_path)]) == 0
    assert "merged 2 host file(s): 4 models" in capsys.readouterr().out
    assert results.host_files(tmp_path) == []
    lines = [json.loads(s) for s in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["n_hidden"], r["seed"], r["test_rmse"]) for r in lines] == \
        [(2, 0, 0.25), (2, 1, 0.24), (4, 0, 0.0625), (4, 1, 0.0626)]
    assert (tmp_path / "config.json").read_text() == before
    rows = json.loads((tmp_path / "slopes.json").read_text())
    row = next(r for r in rows if r["x"] == "n_hidden")
    per_seed = [math.log(0.0625 / 0.25) / math.log(2), math.log(0.0626 / 0.24) / math.log(2)]
    assert math.isclose(row["slope"], float(np.mean(per_seed)), rel_tol=1e-12)
    # merging again changes nothing
    assert cli.main(["merge", str(tmp_path)]) == 0
    assert [json.loads(s) for s in (tmp_path / "results.jsonl").read_text().splitlines()] == lines


def test_merge_never_loses_a_bucket_a_host_appends_meanwhile(tmp_path, monkeypatch):
    """A host still running appends its next bucket while merge reads: the file is renamed
    first, so the new lines land in a fresh host file that the next pass folds in."""
    results.append_records(tmp_path, [_rec("mlp", 2, 0, 0.25)], "results.host0.jsonl")
    read = results.unique_records
    calls = []

    def read_while_a_host_appends(folder):
        if not calls:  # the host writes its next bucket just after merge renamed its file
            results.append_records(folder, [_rec("mlp", 4, 0, 0.0625)], "results.host0.jsonl")
        calls.append(folder)
        return read(folder)

    monkeypatch.setattr(results, "unique_records", read_while_a_host_appends)
    records, folded = results.merge(tmp_path)
    assert sorted((r["n_hidden"], r["test_rmse"]) for r in records) == [(2, 0.25), (4, 0.0625)]
    assert [r["n_hidden"] for r in results.read_records(tmp_path)] == [2, 4]
    assert results.host_files(tmp_path) == [] and folded == 2


def test_merge_waits_for_a_write_under_way(tmp_path):
    """A host opened its file before merge renamed it and is still writing: merge's lock
    waits for that write, so its line is merged rather than deleted unread."""
    if results.fcntl is None:
        pytest.skip("no fcntl locks on this platform")
    host = tmp_path / "results.host0.jsonl"
    results.append_records(tmp_path, [_rec("mlp", 2, 0, 0.25)], host.name)
    fh = open(host, "a")
    results._lock(fh)  # the host is in the middle of a write
    done = []
    merging = threading.Thread(target=lambda: done.append(results.merge(tmp_path)))
    merging.start()
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "results.host0.merging.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert not done  # renamed, and now waiting for the write
        fh.write(json.dumps(_rec("mlp", 4, 0, 0.0625)) + "\n")
        fh.flush()
    finally:
        results._unlock(fh)
        fh.close()
        merging.join(10)
    records, folded = done[0]
    assert sorted((r["n_hidden"], r["test_rmse"]) for r in records) == [(2, 0.25), (4, 0.0625)]
    assert results.host_files(tmp_path) == [] and folded == 1


def test_merge_picks_up_what_an_interrupted_merge_left(tmp_path):
    """A merge killed after renaming leaves results.host0.merging.jsonl: readers see it (before
    the host's newer file) and the next merge folds both."""
    results.append_records(tmp_path, [_rec("mlp", 2, 0, 0.25)], "results.host0.merging.jsonl")
    results.append_records(tmp_path, [_rec("mlp", 2, 0, 9.0), _rec("mlp", 4, 0, 0.0625)], "results.host0.jsonl")
    assert [p.name for p in results.host_files(tmp_path)] == ["results.host0.merging.jsonl", "results.host0.jsonl"]
    assert [r["test_rmse"] for r in results.unique_records(tmp_path)] == [0.25, 0.0625]
    records, folded = results.merge(tmp_path)
    assert [r["test_rmse"] for r in results.read_records(tmp_path)] == [0.25, 0.0625]
    assert results.host_files(tmp_path) == [] and folded == 2


def test_merge_of_a_folder_without_results(tmp_path, capsys):
    assert cli.main(["merge", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and repr(str(tmp_path)) in err and "results.host" in err


def test_merge_refuses_a_construct_folder_and_leaves_it_untouched(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"kind": "construct", "problem": "sin"}))
    (tmp_path / "results.jsonl").write_text(
        "".join(json.dumps({"arch": "mlp", "n_hidden": 4, "seed": 0, "method": m}) + "\n"
                for m in ("construction", "lsq-spline-deg1")))
    before = (tmp_path / "results.jsonl").read_bytes()
    assert cli.main(["merge", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'construct' run" in err
    assert (tmp_path / "results.jsonl").read_bytes() == before


def test_check_config_ignores_devices_and_can_only_check(tmp_path):
    cfg = BASE.to_json()
    results.check_config(tmp_path, dict(cfg, devices=4))
    results.check_config(tmp_path, dict(cfg, devices=None))  # not part of what a model is
    assert json.loads((tmp_path / "config.json").read_text())["devices"] is None
    results.check_config(tmp_path, dict(cfg, devices=2, widths=[8]), write=False)
    assert json.loads((tmp_path / "config.json").read_text())["widths"] == [2, 4]
    with pytest.raises(UsageError, match="optimizer"):
        results.check_config(tmp_path, dict(cfg, optimizer="newton"), write=False)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    results.check_config(fresh, cfg, write=False)
    assert not (fresh / "config.json").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_two_processes_write_each_model_once_and_merge_to_the_single_process_run(tmp_path):
    """A real multi-host run: 2 processes x 2 simulated CPU devices through jax.distributed
    (localhost coordinator, gloo).  Each model lands in exactly one results.host{K}.jsonl,
    `merge` folds them, and the numbers equal a single-process run to 1e-9 relative."""
    # the tiny study of tests/test_sweep.py and tests/test_cli.py: the single-process run reuses their program
    args = ["sweep", "--arch", "mlp,glu", "--widths", "2,4", "--seeds", "0:2", "--optimizer", "newton-splines",
            "--steps", "2", "--n-data", "64", "--n-test", "64", "--quiet"]
    env = {**os.environ, **distributed.simulated_cpu_env(2), "GLU_SCALING_CACHE": "off",
           "JAX_COORDINATOR_ADDRESS": f"localhost:{_free_port()}", "JAX_NUM_PROCESSES": "2"}
    multi = tmp_path / "multi"
    procs = [subprocess.Popen([sys.executable, "-m", "glu_scaling.cli", *args, "--out", str(multi)],
                              env={**env, "JAX_PROCESS_ID": str(k)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for k in (0, 1)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    shares = [results.read_records(multi, f"results.host{k}.jsonl") for k in (0, 1)]
    keys = [results.model_key(r) for share in shares for r in share]
    assert all(shares) and len(keys) == len(set(keys)) == 2 * 2 * 2  # every model once, both hosts trained
    assert cli.main(["merge", str(multi)]) == 0
    assert not list(multi.glob("results.host*.jsonl"))
    single = tmp_path / "single"
    assert cli.main([*args, "--out", str(single)]) == 0
    one = {results.model_key(r): r for r in results.read_records(single)}
    merged = {results.model_key(r): r for r in results.read_records(multi)}
    assert merged.keys() == one.keys()
    for key, rec in merged.items():
        for field in ("train_rmse", "test_rmse"):
            assert rec[field] == pytest.approx(one[key][field], rel=1e-9), (key, field)
