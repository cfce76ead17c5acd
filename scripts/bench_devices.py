"""Sharded vs unsharded sweep on simulated CPU devices (a benchmark, not a test).

Runs the same `newton-cascade` sweep in three fresh processes:
  * "one_device": the single CPU device, as a plain `glu-scaling sweep` runs;
  * "n_devices": N simulated devices (`distributed.simulated_cpu_env(N)`:
    --xla_force_host_platform_device_count=N and PJRT_NPROC = N + cpus threads in
    XLA:CPU's pool), the batch axis sharded over all of them;
  * "one_device_same_pool": one device with that same PJRT_NPROC.
Each process runs the sweep once cold (with compilation) and --repeats times warm
(compiled calls reused; the best is kept, the machine being shared).  Writes the times,
the ratios N devices / 1 device (the target is <= 1) and the largest relative difference
of the per-model RMSEs to JSON (default benchmarks/bench_devices.json) and prints a
summary.  The sharded run equals the same-pool run to the last bits; the plain run can
differ, since XLA:CPU splits large matrix products by its pool size and Newton's steps
amplify rounding.

    python scripts/bench_devices.py [--devices 4] [--archs glu] [--widths 4:33:4] [--seeds 0:4] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchlib import machine  # scripts/ is on the path: this script's folder

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
from glu_scaling import sweeps
from glu_scaling.config import sweep_config
config = sweep_config(**json.loads(sys.argv[1]))
times, records = [], None
for _ in range(1 + int(sys.argv[2])):
    t0 = time.perf_counter()
    records = sweeps.run_sweep(config, None, progress=False)
    times.append(time.perf_counter() - t0)
print(json.dumps({"device_count": jax.device_count(), "cold_s": times[0], "warm_s": min(times[1:]),
                  "warm_all_s": times[1:],
                  "records": [{k: r[k] for k in ("arch", "n_hidden", "seed", "train_rmse", "test_rmse", "status")}
                              for r in records]}))
"""


def run_child(config: dict, settings: dict[str, str], repeats: int) -> dict:
    """The sweep in a fresh process with `settings` as its XLA environment."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COORDINATOR", "SLURM")) and k not in ("XLA_FLAGS", "PJRT_NPROC")}
    env.update(settings, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config), str(repeats)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    out = json.loads(proc.stdout.splitlines()[-1])
    out["process_s"] = time.perf_counter() - t0
    out["env"] = settings
    return out


def max_rel_diff(a: list[dict], b: list[dict]) -> float:
    """Largest relative difference of train/test RMSE between two runs of the same models."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        assert (x["arch"], x["n_hidden"], x["seed"]) == (y["arch"], y["n_hidden"], y["seed"])
        for key in ("train_rmse", "test_rmse"):
            worst = max(worst, abs(x[key] - y[key]) / abs(y[key]))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/bench_devices.json")
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--archs", default="glu")
    parser.add_argument("--widths", default="4:33:4")
    parser.add_argument("--seeds", default="0:4")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--n-data", type=int, default=2000)
    parser.add_argument("--problem", default="paper_1d")
    parser.add_argument("--repeats", type=int, default=3, help="warm runs per process (the best is kept)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from glu_scaling import distributed, specs

    config = {"archs": [a.strip() for a in args.archs.split(",")], "widths": specs.parse_spec(args.widths),
              "seeds": specs.parse_spec(args.seeds, "seeds", minimum=0), "problem": args.problem,
              "optimizer": "newton-cascade", "steps": args.steps, "n_data": args.n_data}
    sharded_env = distributed.simulated_cpu_env(args.devices)
    runs = {
        "one_device": run_child(config, {}, args.repeats),
        "n_devices": run_child(config, sharded_env, args.repeats),
        "one_device_same_pool": run_child(config, {"PJRT_NPROC": sharded_env["PJRT_NPROC"]}, args.repeats),
    }
    assert runs["n_devices"]["device_count"] == args.devices and runs["one_device"]["device_count"] == 1
    one, many, same = runs["one_device"], runs["n_devices"], runs["one_device_same_pool"]
    result = {
        "machine": machine(),
        "sweep": config, "models": len(one["records"]), "devices": args.devices,
        "runs": {name: {k: r[k] for k in ("env", "cold_s", "warm_s", "warm_all_s", "process_s")}
                 for name, r in runs.items()},
        "ratio_warm": many["warm_s"] / one["warm_s"],
        "ratio_cold": many["cold_s"] / one["cold_s"],
        "ratio_warm_vs_same_pool": many["warm_s"] / same["warm_s"],
        "max_rel_diff_rmse_vs_same_pool": max_rel_diff(many["records"], same["records"]),
        "max_rel_diff_rmse_vs_one_device": max_rel_diff(many["records"], one["records"]),
        "statuses_equal": [r["status"] for r in many["records"]] == [r["status"] for r in same["records"]],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['models']} models, newton-cascade {args.steps} steps, {args.n_data} points, best of "
          f"{args.repeats} warm runs: 1 device {one['warm_s']:.2f} s ({one['cold_s']:.2f} s with compile), "
          f"{args.devices} simulated devices {many['warm_s']:.2f} s ({many['cold_s']:.2f} s), 1 device with "
          f"their pool {same['warm_s']:.2f} s; ratio {result['ratio_warm']:.2f} ({result['ratio_cold']:.2f} with "
          f"compile; {result['ratio_warm_vs_same_pool']:.2f} vs the same pool)")
    print(f"max relative RMSE difference: {result['max_rel_diff_rmse_vs_same_pool']:.1e} vs the same pool, "
          f"{result['max_rel_diff_rmse_vs_one_device']:.1e} vs the plain single device")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
