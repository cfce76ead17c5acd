"""Cold `glu-scaling speedrun` at two commits, side by side: a refactor's speed check.

Each commit is checked out into a temporary worktree and run from there with this
environment's Python (PYTHONPATH pointing at the worktree), alternating the two
commits for `--repeats` rounds, each run with an empty compilation cache and an empty
results folder.  Alternating spreads a shared machine's drift over both; report the
ratio of the medians, with the wall times for context.  The records of the two are
compared too: a refactor must not change a model's numbers.

    python scripts/bench_commits.py --before 0b1c52c --after HEAD [--repeats 5] \
        [--out benchmarks/bench_commits.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import machine

ROOT = Path(__file__).resolve().parent.parent


def _worktree(rev: str, where: Path) -> Path:
    path = where / rev.replace("/", "_")
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(path), rev], check=True,
                   capture_output=True)
    return path


def _cold_speedrun(tree: Path, scratch: Path) -> tuple[float, list[dict]]:
    """Wall seconds of one cold speedrun from `tree`, and its records."""
    cache, out = scratch / "cache", scratch / "out"
    env = {**os.environ, "PYTHONPATH": str(tree), "GLU_SCALING_CACHE": str(cache)}
    code = "import sys; from glu_scaling.cli import run; sys.argv = ['glu-scaling'] + sys.argv[1:]; run()"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, "speedrun", "--out", str(out), "--quiet"], env=env, check=True,
                   cwd=scratch, capture_output=True)
    seconds = time.perf_counter() - t0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return seconds, records


def _max_difference(a: list[dict], b: list[dict]) -> tuple[float, bool]:
    """(largest relative train/test RMSE difference, same statuses) between two runs' records."""
    key = lambda r: (r["arch"], r["n_hidden"], r["seed"])  # noqa: E731
    a, b = {key(r): r for r in a}, {key(r): r for r in b}
    if a.keys() != b.keys():
        return float("inf"), False
    worst = max(abs(a[k][f] - b[k][f]) / max(abs(a[k][f]), 1e-300) for k in a for f in ("train_rmse", "test_rmse"))
    return worst, all(a[k]["status"] == b[k]["status"] for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision of the baseline")
    parser.add_argument("--after", default="HEAD", help="git revision to compare (default HEAD)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of one run each (default 5)")
    parser.add_argument("--out", default=None, help="JSON file to write (default: print only)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="glu_scaling-commits-") as tmp:
        tmp = Path(tmp)
        trees = {"before": _worktree(args.before, tmp), "after": _worktree(args.after, tmp)}
        try:
            seconds = {"before": [], "after": []}
            records = {}
            for i in range(args.repeats):
                for which in (("before", "after") if i % 2 == 0 else ("after", "before")):
                    scratch = Path(tempfile.mkdtemp(dir=tmp))
                    s, records[which] = _cold_speedrun(trees[which], scratch)
                    seconds[which].append(s)
                    print(f"round {i + 1}: {which} {s:.2f} s", flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
    worst, same_status = _max_difference(records["before"], records["after"])
    median = {k: statistics.median(v) for k, v in seconds.items()}
    result = {
        "machine": machine(), "before": args.before, "after": args.after, "repeats": args.repeats,
        "cold_speedrun_s": seconds, "median_s": median, "after_over_before": median["after"] / median["before"],
        "records": {"n": len(records["after"]), "max_relative_rmse_difference": worst, "same_statuses": same_status},
    }
    print(f"cold speedrun median: before {median['before']:.2f} s, after {median['after']:.2f} s, "
          f"ratio {result['after_over_before']:.3f}; records differ by at most {worst:.3g} (relative), "
          f"statuses {'the same' if same_status else 'DIFFERENT'}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
