#!/usr/bin/env bash
# Crash safety: start a sweep, SIGKILL it once some buckets are saved, rerun the same
# command, and check that every model is in results.jsonl exactly once and the file
# holds only whole JSON lines.  Exit 0 on success.
#   bash scripts/crash_test.sh [OUT_DIR]
set -euo pipefail
out="${1:-$(mktemp -d)/crash}"
rm -rf "$out"
cmd=(glu-scaling sweep --arch mlp,glu --widths 2:40:2 --seeds 0:3 --optimizer newton-cascade
     --steps 20 --n-data 500 --n-test 200 --out "$out" --quiet)
"${cmd[@]}" >/dev/null 2>&1 &
pid=$!
# wait until at least one bucket is on disk, then kill without warning
for _ in $(seq 1 600); do
  if [ -s "$out/results.jsonl" ]; then break; fi
  sleep 0.2
done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
before=$(wc -l < "$out/results.jsonl" 2>/dev/null || echo 0)
"${cmd[@]}" >/dev/null
python3 - "$out" "$before" <<'PY'
import json, sys
from collections import Counter
out, before = sys.argv[1], int(sys.argv[2])
lines = open(f"{out}/results.jsonl").read().splitlines()
records = [json.loads(line) for line in lines]          # every line whole
keys = Counter((r["arch"], r["n_hidden"], r["seed"]) for r in records)
expected = {(a, n, s) for a in ("mlp", "glu") for n in range(2, 40, 2) for s in range(3)}
assert set(keys) == expected, f"missing {sorted(expected - set(keys))[:5]}"
assert max(keys.values()) == 1, f"duplicates {[k for k, c in keys.items() if c > 1][:5]}"
print(f"crash test ok: {before} records survived the kill, {len(records)} after the rerun, each model once")
PY
