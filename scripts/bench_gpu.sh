#!/usr/bin/env bash
# One prepared accelerator benchmark: a paper-scale newton-cascade sweep (mlp, glu, gqu;
# widths 1..100; 16 seeds; 10 000 points of paper_1d; 100 steps) in float64 and float32,
# plus same-run matmul GFLOP/s; writes benchmarks/bench_gpu.json (scripts/bench_gpu.py).
# With no GPU it runs a small CPU default.  Extra arguments go to bench_gpu.py.
#
#   bash scripts/bench_gpu.sh [--out FILE] [--budget SECONDS] [--widths 1:101] ...
#
# Nothing is downloaded: the machine's python3 must already have jax (with its GPU
# plugin), numpy, scipy, optax and tqdm; the repo is used in place via PYTHONPATH.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}  # grow on demand
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}
PY=${PYTHON:-python3}

echo "== $(date -u +%FT%TZ) $(uname -n); $($PY --version 2>&1); repo $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# "install": check what the package imports; never download (the machine may be offline)
if ! $PY - <<'PY'
import importlib.util, sys
need = ["jax", "numpy", "scipy", "optax", "tqdm"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)} (install them offline first; nothing is downloaded)")
import glu_scaling, jax
print(f"glu_scaling from {glu_scaling.__file__}; jax {jax.__version__}; devices {jax.devices()}")
PY
then
    exit 1
fi
# a hard stop a little after the benchmark's own budget (it rewrites its JSON after every bucket)
timeout --signal=INT --kill-after=10 "${BENCH_TIMEOUT:-285}" $PY scripts/bench_gpu.py "$@"
status=$?
[ $status -eq 124 ] && echo "bench_gpu.py hit the ${BENCH_TIMEOUT:-285} s timeout; the JSON holds the buckets done"
exit $status
