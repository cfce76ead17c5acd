#!/usr/bin/env bash
# The next accelerator session's one prepared command: profile one batched Newton step,
# then run the paper-scale float64 sweep with the ladder that step was fastest with.
#
#   1. scripts/bench_gpu_step.py (the widest GQU bucket: 240 models of width 100) times
#      the step with the default ladder (`step`), with 4 damping rungs factored per round
#      (`step_k4`) and with a blocked Cholesky of 128 columns a block (`step_blocked`);
#   2. scripts/bench_gpu.sh --dtypes float64 with the fastest of them
#      (--rungs-per-round 4, --cholesky-block 128, or neither).
#
#   bash scripts/bench_gpu_tuned.sh OUTDIR [extra bench_gpu.py arguments]
#
# Writes OUTDIR/step.json, step.log, bench.json and bench.log.  STEP_TIMEOUT (default
# 150 s) bounds the profile and BENCH_TIMEOUT (default 200 s) the sweep, whose budget is
# BENCH_TIMEOUT - 10 s.  On a CPU it runs both scripts' small CPU defaults.
set -u
out=${1:?usage: bash scripts/bench_gpu_tuned.sh OUTDIR [bench_gpu.py arguments]}
shift
mkdir -p "$out" && out=$(cd "$out" && pwd)  # absolute: a relative OUTDIR is the caller's
cd "$(dirname "$0")/.."
rm -f "$out/step.json"  # never choose by an earlier run's profile
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}

timeout --signal=INT --kill-after=10 "${STEP_TIMEOUT:-150}" \
    $PY scripts/bench_gpu_step.py --out "$out/step.json" > "$out/step.log" 2>&1
echo "bench_gpu_step.py exited $? ($out/step.log)"
ladder=$($PY - "$out/step.json" <<'PY'
import json, sys
options = {"step": "", "step_k4": "--rungs-per-round 4", "step_blocked": "--cholesky-block 128"}
try:
    parts = json.load(open(sys.argv[1]))["parts"]
except (OSError, ValueError, KeyError):
    print("")  # no profile: the default ladder
    sys.exit()
timed = {name: parts[name]["seconds"] for name in options if name in parts}
if not timed:  # the profile stopped before any whole step was timed: the default ladder
    print("")
    sys.exit()
best = min(timed, key=timed.get)
print(options[best])
print(f"fastest step: {best} ({', '.join(f'{k} {v * 1e3:.1f} ms' for k, v in timed.items())})", file=sys.stderr)
PY
)
echo "sweep ladder options: '${ladder}'"
budget=$(( ${BENCH_TIMEOUT:-200} > 40 ? ${BENCH_TIMEOUT:-200} - 10 : 30 ))
# shellcheck disable=SC2086  # $ladder is zero or two words
BENCH_TIMEOUT=${BENCH_TIMEOUT:-200} bash scripts/bench_gpu.sh --dtypes float64 --budget "$budget" $ladder \
    --out "$out/bench.json" "$@" > "$out/bench.log" 2>&1
status=$?
echo "bench_gpu.sh exited $status ($out/bench.log)"
exit $status
