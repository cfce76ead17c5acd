"""The autodiff unit path (`glu_scaling.units`) against the gated family's closed form, side by side.

1. Time: the same GLU sweep (newton-cascade, widths 10, 25, 50 x 8 seeds on paper_1d) once
   through the closed-form fast path ("glu") and once through the autodiff path
   (`architectures.gated(1)`, the same models), alternating, `--repeats` times each, in one process.
   The first run of each path compiles; later ones find the programs compiled, so both the
   cold (compile + train) and the warm (train) wall times are reported, and their ratios.
2. Peak memory (max RSS of a fresh process) of a 3-architecture x 34-width (1..100 step 3)
   x 8-seed newton-cascade sweep on the autodiff path (mlp, glu, gqu as `architectures.gated(k)`),
   and of the same sweep on the closed form.  A bucket's peak is set by its widest Newton
   step, which every step repeats, so `--memory-steps` all-parameter steps (default 2)
   measure the peak of the 100-step sweep at a fraction of its time.
3. The dense path (`glu_scaling.dense`): mlp2 and glu2, widths 1..32 x 4 seeds on paper_1d,
   newton-cascade 100 steps, end to end (`glu-scaling sweep` in a fresh process, cold
   compilation cache): every width compiles its own program.

Writes benchmarks/bench_units.json.  Usage: python scripts/bench_units.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from benchlib import machine  # noqa: E402

jax.config.update("jax_enable_x64", True)

import glu_scaling as gs  # noqa: E402
from glu_scaling import architectures  # noqa: E402

MEMORY_SCRIPT = """
import sys, jax
jax.config.update("jax_enable_x64", True)
import glu_scaling as gs
from glu_scaling import architectures
archs = [architectures.gated(k) for k in range(3)] if sys.argv[1] == "autodiff" else ["mlp", "glu", "gqu"]
gs.sweep(archs, "1:101:3", seeds="0:8", problem="paper_1d", steps=int(sys.argv[2]), n_data=int(sys.argv[3]),
         n_test=int(sys.argv[3]))
import resource
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


def timed_sweep(arch, settings: dict) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    records = gs.sweep([arch], **settings)
    return time.perf_counter() - t0, records


def peak_rss_gb(path: str, steps: int, n_data: int) -> tuple[float, float]:
    """(max RSS in GB, wall seconds) of a fresh process running the memory sweep."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, path, str(steps), str(n_data)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    wall = time.perf_counter() - t0
    return int(proc.stdout.split()[-1]) / 2**20, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-data", type=int, default=2000)
    parser.add_argument("--memory-steps", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-dense", action="store_true")
    parser.add_argument("--out", default="benchmarks/bench_units.json")
    args = parser.parse_args()

    settings = dict(widths=[10, 25, 50], seeds="0:8", problem="paper_1d", optimizer="newton-cascade",
                    n_data=args.n_data, n_test=args.n_data)
    paths = {"closed_form": "glu", "autodiff": architectures.gated(1)}
    walls = {name: [] for name in paths}
    records = {}
    for _ in range(args.repeats):
        for name, arch in paths.items():
            wall, records[name] = timed_sweep(arch, settings)
            walls[name].append(wall)
            print(f"{name}: {wall:.2f} s", flush=True)
    ratios = np.asarray([a["test_rmse"] / b["test_rmse"] for a, b in zip(records["autodiff"], records["closed_form"])])
    agreement = {  # the same models; 100 Newton steps of a ReLU model carry rounding into other minima
        "geometric_mean_test_rmse_ratio": float(np.exp(np.mean(np.log(ratios)))),
        "median_rel_difference": float(np.median(np.abs(ratios - 1))),
        "models_within_1e-6": int(np.sum(np.abs(ratios - 1) < 1e-6)), "models": int(ratios.size),
        "ratio_range": [float(ratios.min()), float(ratios.max())],
        "by_width": {str(n): float(np.exp(np.mean(np.log(ratios[[r["n_hidden"] == n for r in records["autodiff"]]]))))
                     for n in settings["widths"]},
    }
    result = {
        "machine": machine(), "date": time.strftime("%Y-%m-%d"), "jax": jax.__version__,
        "time": {"settings": {k: str(v) for k, v in settings.items()}, "walls_s": walls,
                 "cold_ratio": walls["autodiff"][0] / walls["closed_form"][0],
                 "warm_ratio": min(walls["autodiff"][1:] or [float("nan")])
                 / min(walls["closed_form"][1:] or [float("nan")]),
                 "agreement": agreement},
    }
    print(json.dumps(result["time"], indent=1), flush=True)
    if not args.skip_memory:
        memory = {"sweep": "mlp, glu, gqu x widths 1:101:3 x seeds 0:8, paper_1d, newton-cascade",
                  "steps": args.memory_steps, "n_data": args.n_data}
        for name in ("closed_form", "autodiff"):
            gb, wall = peak_rss_gb(name, args.memory_steps, args.n_data)
            memory[f"{name}_peak_rss_gb"], memory[f"{name}_wall_s"] = gb, wall
            print(f"{name}: peak RSS {gb:.2f} GB, {wall:.0f} s", flush=True)
        result["memory"] = memory
    if not args.skip_dense:
        with tempfile.TemporaryDirectory() as tmp:
            command = ["glu-scaling", "sweep", "--arch", "mlp2,glu2", "--widths", "1:33", "--seeds", "0:4",
                       "--problem", "paper_1d", "--n-data", str(args.n_data), "--n-test", str(args.n_data),
                       "--out", f"{tmp}/dense", "--quiet"]
            t0 = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True,
                                  env=dict(os.environ, GLU_SCALING_CACHE=f"{tmp}/cache"))
            wall = time.perf_counter() - t0
            if proc.returncode:
                raise RuntimeError(proc.stderr)
            slopes = json.loads(Path(f"{tmp}/dense/slopes.json").read_text())
        result["dense"] = {"command": " ".join(command[:-3]), "wall_s": wall,
                           "slopes": [{k: r[k] for k in ("arch", "x", "slope", "ci_low", "ci_high")} for r in slopes]}
        print(f"dense: {wall:.0f} s", flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
