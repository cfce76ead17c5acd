"""A results folder: config.json, results.jsonl, slopes.json and figures.

results.jsonl gets one JSON object per trained model, appended a bucket at a
time with flush + fsync, so a process killed at any moment leaves only whole
lines plus at most one cut-off last line; `read_records` drops (and `repair`
truncates) such a line, and a rerun trains only the models that are missing.

A multi-host sweep writes one results.host{K}.jsonl per process instead (never two
writers on one file); readers see results.jsonl and then the host files in host
order, and `merge` folds the host files into results.jsonl.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl  # POSIX: appends and merge take an advisory lock on the host file
except ImportError:  # pragma: no cover - Windows has no fcntl; merge then needs finished hosts
    fcntl = None

from glu_scaling.errors import UsageError

RECORD_FIELDS = ("arch", "activation", "problem", "n_in", "n_hidden", "n_params", "seed", "optimizer",
                 "train_rmse", "test_rmse", "status", "seconds")
# config keys that change what a model is; archs, widths and seeds may grow between runs
MODEL_KEYS = ("problem", "optimizer", "steps", "gate_steps", "knot_moves", "learning_rate", "n_data", "n_test",
              "data_seed", "activation", "spline_init", "knots", "factor_init", "eval", "target", "dtype")
# settings added after results folders were first written: an older config.json without
# them describes models made with these values
MODEL_DEFAULTS = {"knots": "uniform", "factor_init": "random", "gate_steps": 1, "knot_moves": 0}
# settings only some models use (a GQU's factor_init): where `effective` gives None on one
# side, that side's models do not depend on it, so the two agree, and the folder keeps the
# value its models were made with
MAY_NOT_APPLY = ("factor_init",)
# fingerprints of the data a folder's models were trained on (a file:PATH problem's sha256);
# checked when both config.json files have one (folders written before they were stored have none)
DATA_KEYS = ("data_sha256",)


def check_folder(out: str | os.PathLike) -> Path:
    """`out` as a Path, refusing an empty path or a file, without creating anything."""
    if not str(out).strip():
        raise UsageError("--out is empty; give a folder path, e.g. --out runs/mine")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {str(path)!r} is a file; give a folder path")
    return path


def prepare_folder(out: str | os.PathLike) -> Path:
    """Create `out` if needed; refuse a file or an unwritable folder."""
    path = check_folder(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create --out folder {str(path)!r}: {err.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"--out folder {str(path)!r} is not writable")
    return path


def json_safe(obj):
    """Replace non-finite floats (NaN, inf) by None, so files are strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj) -> None:
    """Write strict JSON to a temporary file and rename it into place."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(json_safe(obj), fh, indent=2, sort_keys=True, allow_nan=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def stored_fit_range(folder: Path) -> tuple[float, float] | None:
    """The n_hidden range the sweep of `folder` fitted its slopes on (config.json "fit_range"),
    or None (every width; also for folders written before it was stored)."""
    value = _settings_or_empty(folder).get("fit_range")
    if not isinstance(value, list) or len(value) != 2:
        return None
    lo, hi = value  # strict JSON holds an open end (--fit-range 4:inf) as null
    lo = 0.0 if lo is None else lo
    hi = math.inf if hi is None else hi
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lo, hi)):
        return float(lo), float(hi)
    return None


def folder_kind(folder: Path) -> str:
    """The kind of run that wrote `folder` (config.json "kind"): "sweep" (also when config.json
    is missing or unreadable, or predates the key) or "construct"."""
    kind = _settings_or_empty(folder).get("kind", "sweep")
    return kind if isinstance(kind, str) else "sweep"


def _settings_or_empty(folder: Path) -> dict:
    """config.json of `folder` for a reader that can do without it: {} if it is missing or broken."""
    try:
        settings = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}


def read_config(folder: Path) -> dict | None:
    """The settings in `folder`/config.json, or None if there is no such file; one that cannot
    be read as a JSON object (unreadable, not UTF-8, not JSON, a folder) is a UsageError."""
    path = Path(folder) / "config.json"
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):  # unreadable, a folder, not UTF-8, not JSON
        old = None
    if not isinstance(old, dict):
        raise UsageError(f"{str(path)!r} is not valid JSON (an object of settings); use another --out, "
                         "or move that file away to reuse the folder")
    return old


def check_config(folder: Path, config: dict, write: bool = True,
                 effective: Callable[[dict], dict] | None = None) -> None:
    """Write config.json, or check an existing one describes the same models
    (`write=False`: only check, as the processes other than 0 of a multi-host run do).

    `effective(settings)` maps a config's settings to the values the models were made
    with (a default for None, None for a setting the optimizer ignores), so that an
    explicit default and a left-out one compare equal; applied to both configs."""
    path = folder / "config.json"
    old = read_config(folder)
    if old is not None:
        kind_old, kind_new = old.get("kind", "sweep"), config.get("kind", "sweep")
        if kind_old != kind_new:
            raise UsageError(f"{str(folder)!r} holds results of a {kind_old!r} run, not of a {kind_new!r} run; "
                             "use another --out, or delete the folder to start afresh")
        then = {**MODEL_DEFAULTS, **old}
        now = {k: config.get(k, MODEL_DEFAULTS.get(k)) for k in MODEL_KEYS}
        now["archs"] = config.get("archs")  # `effective` may look at them (not compared: they may grow)
        if effective is not None:
            then, now = effective(then), effective(now)
        diffs = [k for k in MODEL_KEYS if then.get(k) != now.get(k)
                 and not (k in MAY_NOT_APPLY and None in (then.get(k), now.get(k)))]
        if diffs:
            k = diffs[0]
            rerun = f"rerun with {k}={then.get(k)!r}" if then.get(k) is not None else f"rerun without setting {k}"
            raise UsageError(
                f"{str(folder)!r} holds results for {k}={then.get(k)!r}, not {now.get(k)!r}; results are "
                f"never mixed: use another --out, delete the folder to start afresh, or {rerun}")
        for k in DATA_KEYS:
            if k in old and k in config and old[k] != config[k]:
                raise UsageError(
                    f"{str(folder)!r} holds results trained on other data: {config.get('problem')} had "
                    f"{k} {str(old[k])[:12]}..., it now has {str(config[k])[:12]}...; results are never mixed: "
                    "use another --out, or delete the folder to start afresh")
        merged = dict(config)
        for k in MAY_NOT_APPLY:
            if then.get(k) is not None:  # the folder's models depend on it: keep what made them
                merged[k] = then[k]
        for key in ("archs", "widths", "seeds"):
            if not isinstance(old.get(key, []), list):
                raise UsageError(f"{str(path)!r} has {key}={old[key]!r} where a list belongs; fix it or move "
                                 "that file away to reuse the folder")
            merged[key] = sorted(set(old.get(key, [])) | set(config.get(key, [])),
                                 key=lambda v: (isinstance(v, str), v))
        config = merged
    if write:
        write_json_atomic(path, config)


RECORDS = "results.jsonl"
_HOST_FILE = re.compile(r"results\.host(\d+)(\.merging)?\.jsonl")


def host_files(folder: Path) -> list[Path]:
    """The per-host files of a folder in host order: results.host{K}.jsonl, each preceded by
    the results.host{K}.merging.jsonl that an unfinished `merge` left (its lines came first)."""
    found = [(int(m.group(1)), m.group(2) is None, p) for p in Path(folder).glob("results.host*.jsonl")
             if (m := _HOST_FILE.fullmatch(p.name))]
    return [p for _, _, p in sorted(found)]


def _merging_name(path: Path) -> Path:
    return path.with_name(path.name[: -len(".jsonl")] + ".merging.jsonl")


def read_records(folder: Path, name: str | None = None) -> list[dict]:
    """All whole records of results.jsonl and then of each results.host{K}.jsonl (or of
    the one file `name`); a cut-off last line is ignored."""
    if name is None:
        return [rec for path in [Path(folder) / RECORDS, *host_files(folder)] for rec in _read_lines(path)]
    return _read_lines(Path(folder) / name)


KEY_FIELDS = ("arch", "n_hidden", "seed")  # what `model_key` reads: a line without them is not a record


def _read_lines(path: Path) -> list[dict]:
    """The records of one .jsonl file (lines that are not JSON, e.g. cut off, are skipped); a
    file that cannot be read, or a JSON line that is not a model record, is a UsageError."""
    if not path.exists():
        return []
    try:
        text = path.read_text()
    except (OSError, ValueError) as err:  # a folder, unreadable, not UTF-8
        raise UsageError(f"cannot read {str(path)!r} ({type(err).__name__}); move it away or use another "
                         "--out") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        try:
            model_key(record)
        except (TypeError, KeyError, ValueError):
            raise UsageError(f"{str(path)!r} line {number} is not a model record (it needs "
                             f"{', '.join(KEY_FIELDS)}); remove that line or use another --out") from None
        records.append(record)
    return records


def unique_records(folder: Path, name: str | None = None) -> list[dict]:
    """`read_records` (of the folder, or of its one file `name`) with one record per
    (arch, n_hidden, seed): the first one written."""
    first: dict[tuple, dict] = {}
    for rec in read_records(folder, name):
        first.setdefault(model_key(rec), rec)
    return list(first.values())


def cut_off_bytes(path: Path) -> int:
    """Bytes after the last newline of `path` (a line cut off by an interrupted run); 0 if none."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return 0
    return 0 if not data or data.endswith(b"\n") else len(data) - (data.rfind(b"\n") + 1)


def repair(folder: Path, name: str = RECORDS) -> int:
    """Truncate a cut-off last line of results.jsonl (or of the file `name`); returns bytes removed."""
    path = Path(folder) / name
    cut = cut_off_bytes(path)
    if cut:
        with open(path, "r+b") as fh:
            fh.truncate(path.stat().st_size - cut)
            fh.flush()
            os.fsync(fh.fileno())
    return cut


def jsonl_text(records: list[dict]) -> str:
    """Records as JSON lines: sorted keys, non-finite numbers as null."""
    return "".join(json.dumps(json_safe(r), sort_keys=True, allow_nan=False) + "\n" for r in records)


def write_records_atomic(path: Path, records: list[dict]) -> None:
    """Replace `path` by `records` as JSON lines: written beside it, fsynced, then renamed."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(jsonl_text(records))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def append_records(folder: Path, records: list[dict], name: str = RECORDS) -> None:
    """Append whole lines to results.jsonl (or to the file `name`) and fsync, so finished
    models survive any crash.

    The write holds an advisory lock on the file and first checks that the path still
    names the file it opened: if `merge` renamed it meanwhile, the lines go to a fresh
    file at the path instead (merge locks a renamed file once before reading it, so no
    write can land in it after that).
    """
    if not records:
        return
    text = jsonl_text(records)
    path = Path(folder) / name
    while True:
        with open(path, "a") as fh:
            _lock(fh)
            try:
                if _still_at(fh, path):
                    fh.write(text)
                    fh.flush()
                    os.fsync(fh.fileno())
                    return
            finally:
                _unlock(fh)


def _lock(fh) -> None:
    if fcntl is not None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)


def _unlock(fh) -> None:
    if fcntl is not None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _still_at(fh, path: Path) -> bool:
    """Whether `path` still names the open file `fh` (not renamed away by a merge)."""
    try:
        here, there = os.fstat(fh.fileno()), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def model_key(record: dict) -> tuple:
    return record["arch"], int(record["n_hidden"]), int(record["seed"])


def merge(folder: Path, passes: int = 3) -> tuple[list[dict], int]:
    """Fold every results.host{K}.jsonl into results.jsonl, each model once (the first
    record read wins, as everywhere), and remove the host files folded in.

    Each host file is first renamed to results.host{K}.merging.jsonl and then locked
    once, which waits for a write already under way; a host still running writes its
    next bucket to a fresh results.host{K}.jsonl (`append_records` checks the path
    under the same lock), folded by a later pass or the next merge.  The lock is
    advisory (fcntl), as reliable as the filesystem's locking; where there is none,
    merge hosts that are done.  results.jsonl is rewritten atomically before a merging
    file goes, so a crash leaves at worst duplicates that readers skip (and the next
    merge picks the leftovers up).  config.json is not touched.
    Returns (the merged records, the number of host files folded in).
    """
    folder = Path(folder)
    if not (folder / RECORDS).exists() and not host_files(folder):
        raise UsageError(f"{str(folder)!r} holds no results.jsonl or results.host*.jsonl; "
                         "give a folder written by sweep")
    kind = folder_kind(folder)
    if kind != "sweep":  # a construct folder holds several methods per (arch, n, seed)
        raise UsageError(f"{str(folder)!r} holds results of a {kind!r} run; merge folds the host files "
                         "of a sweep folder only")
    folded, records = 0, None
    for _ in range(passes):
        for path in host_files(folder):
            if not path.name.endswith(".merging.jsonl") and not _merging_name(path).exists():
                path.rename(_merging_name(path))
        merging = [p for p in host_files(folder) if p.name.endswith(".merging.jsonl")]
        if not merging:
            break
        for path in merging:  # a write under way at the rename finishes first
            with open(path, "a") as fh:
                _lock(fh)
                _unlock(fh)
            repair(folder, path.name)
        records = unique_records(folder)
        write_records_atomic(folder / RECORDS, records)
        for path in merging:
            path.unlink()
        folded += len(merging)
    return (unique_records(folder) if records is None else records), folded
