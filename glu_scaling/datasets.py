"""Tabular regression data: the packaged Airfoil and California sets, and users' files.

Packaged data (gzip-compressed under `glu_scaling/data/`, see its README for sources):

* `airfoil_arrays()`: NASA airfoil self-noise, 1503 rows, x (1503, 5) = Freq, Angle,
  Length, Vel, Displ; y (1503, 1) = Pressure (scaled sound pressure level, dB).
* `california_arrays()`: California housing, 20640 rows, x (20640, 8) = MedInc,
  HouseAge, AveRooms, AveBedrms, Population, AveOccup, Latitude, Longitude (the
  scikit-learn features); y (20640, 1) = median_house_value / 100000.

Each packaged file is checked against the SHA256 of the original, uncompressed file
(`CHECKSUMS`) when it is read; a mismatch is a one-line `UsageError` naming the file.

Users' data (`file:PATH` problems, `read_file(path, target=None)`):

* `.npz` with arrays `x` (N, n_in) or (N,) and `y` (N,) or (N, n_out), read with
  allow_pickle=False;
* `.csv` (comma) or `.tsv` (tab) with one header line; the target is the last column,
  or the column named `target`; every other column is a feature.

Evaluation (`split_standardise`): a held-out split, 80% train / 20% test, from a
permutation drawn from `seed`; n_train / n_test optionally cap the rows taken from
each side (None: all of them); features and target standardised with the statistics
of the training rows actually used. `eval="train"` reproduces the reference: every
row (capped by n_train) trains, and the test set is the training set.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import importlib.resources
import io
import math
import os
import zipfile

import numpy as np

from glu_scaling.errors import UsageError, check_choice, did_you_mean, unknown

TEST_FRACTION = 0.2
EVAL_MODES = ("test", "train")  # score on held-out rows, or on the training rows
FILE_EXTENSIONS = (".csv", ".tsv", ".npz")

# SHA256 of the original, uncompressed files (as distributed in the project's data folder).
CHECKSUMS = {
    "airfoil_self_noise.tsv": "f1746df437a75b4eb96a3f278c5aa8939ac0d19ae34867baa45721264d0d0477",
    "cal_housing.csv": "7aef188aa28d22d8435d91d46956ddecea10bb135a71194421b3511119f8f3c7",
}

AIRFOIL_FEATURES = ("Freq", "Angle", "Length", "Vel", "Displ")
AIRFOIL_TARGET = "Pressure"
CALIFORNIA_FEATURES = ("MedInc", "HouseAge", "AveRooms", "AveBedrms",
                       "Population", "AveOccup", "Latitude", "Longitude")


# ------------------------------------------------------------------ checksums, packaged files


def sha256_hex(data: bytes) -> str:
    """Hex SHA256 digest of `data`."""
    return hashlib.sha256(data).hexdigest()


def verify_sha256(data: bytes, expected: str, name: str) -> bytes:
    """Return `data` if its SHA256 is `expected`, else raise a UsageError naming `name`."""
    got = sha256_hex(data)
    if got != expected:
        raise UsageError(f"checksum mismatch for data file {name!r}: sha256 {got}, expected {expected}; "
                         "the installed package is damaged, reinstall glu-scaling")
    return data


def read_packaged(name: str) -> bytes:
    """The verified, uncompressed bytes of packaged data file `name` (e.g. "cal_housing.csv")."""
    if name not in CHECKSUMS:
        raise unknown("packaged data file", name, CHECKSUMS)
    resource = importlib.resources.files("glu_scaling").joinpath("data", name + ".gz")
    try:
        data = gzip.decompress(resource.read_bytes())
    except (OSError, EOFError) as err:
        raise UsageError(f"cannot read packaged data file {name!r}: {err}; reinstall glu-scaling") from None
    return verify_sha256(data, CHECKSUMS[name], name)


# ------------------------------------------------------------------ parsing and validation


def _floats(row: list[str]) -> list[float] | None:
    try:
        return [float(cell) for cell in row]
    except ValueError:
        return None


def parse_table(text: str, delimiter: str, source: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Parse delimited text with one header line into (column names, values (N, C) float64).

    Blank lines are skipped. Raises a UsageError naming `source` (and line and column)
    for a missing header, a ragged row, a non-numeric cell or a NaN / inf value.
    """
    rows = [(i, row) for i, row in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter), 1)
            if row and (len(row) > 1 or row[0].strip())]
    if not rows:
        raise UsageError(f"data file {source!r} is empty")
    header_line, header = rows[0]
    columns = tuple(cell.strip() for cell in header)
    if _floats(header) is not None:
        raise UsageError(f"data file {source!r} has no header line (line {header_line} is all numbers); "
                         "add a line of column names")
    body = rows[1:]
    if not body:
        return columns, np.empty((0, len(columns)))
    try:
        values = np.array([row for _, row in body], dtype=np.float64)
        ok = values.shape == (len(body), len(columns)) and bool(np.isfinite(values).all())
    except ValueError:
        ok = False
    if not ok:
        _raise_first_bad_row(body, columns, source)
    return columns, values.reshape(len(body), len(columns))


def _raise_first_bad_row(body: list[tuple[int, list[str]]], columns: tuple[str, ...], source: str):
    """Raise a UsageError for the first ragged, non-numeric or non-finite row of `body`."""
    for line, row in body:
        if len(row) != len(columns):
            raise UsageError(f"data file {source!r} line {line} has {len(row)} cells, "
                             f"the header has {len(columns)}")
        for col, cell in zip(columns, row):
            value = _floats([cell])
            if value is None:
                raise UsageError(f"non-numeric cell {cell!r} in data file {source!r} "
                                 f"line {line} column {col!r}")
            if not math.isfinite(value[0]):
                raise UsageError(f"non-finite value {cell.strip()!r} in data file {source!r} "
                                 f"line {line} column {col!r}")
    raise UsageError(f"cannot parse data file {source!r} as a table of numbers")


def select_target(columns: tuple[str, ...], values: np.ndarray, target: str | None,
                  source: str) -> tuple[np.ndarray, np.ndarray]:
    """Split a table (N, C) into x (N, C-1) and y (N, 1); target: a column name, None = last."""
    if len(columns) < 2:
        raise UsageError(f"data file {source!r} has {len(columns)} column(s); "
                         "it needs at least one feature column and a target column")
    if target is None:
        j = len(columns) - 1
    else:
        hits = [i for i, c in enumerate(columns) if c == target]
        if not hits:
            raise UsageError(f"unknown target column {target!r} in data file {source!r}"
                             f"{did_you_mean(target, columns)}; columns: {', '.join(columns)}")
        if len(hits) > 1:
            raise UsageError(f"target column {target!r} appears {len(hits)} times in data file {source!r}")
        j = hits[0]
    return np.delete(values, j, axis=1), values[:, j:j + 1]


def check_xy(x: np.ndarray, y: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate features and targets; return x (N, n_in) and y (N, n_out) as float64.

    x may be (N,) or (N, n_in), y (N,) or (N, n_out). Raises a UsageError naming
    `source` for non-numeric dtypes, wrong dimensions, mismatched lengths, fewer
    than 2 rows, no features, or NaN / inf values.
    """
    out = []
    for label, a in (("x", np.asarray(x)), ("y", np.asarray(y))):
        if a.dtype.kind not in "biuf":
            raise UsageError(f"array {label!r} in data file {source!r} is not numeric (dtype {a.dtype})")
        if a.ndim not in (1, 2):
            want = "(N,) or (N, n_in)" if label == "x" else "(N,) or (N, n_out)"
            raise UsageError(f"array {label!r} in data file {source!r} has shape {a.shape}; expected {want}")
        out.append(np.asarray(a[:, None] if a.ndim == 1 else a, np.float64))
    x, y = out
    if x.shape[0] != y.shape[0]:
        raise UsageError(f"data file {source!r}: x has {x.shape[0]} rows but y has {y.shape[0]}")
    if x.shape[0] < 2:
        raise UsageError(f"data file {source!r} has {x.shape[0]} row(s); at least 2 are needed")
    for label, a in (("x", x), ("y", y)):
        if a.shape[1] == 0:
            raise UsageError(f"array {label!r} in data file {source!r} has no columns (shape {a.shape})")
        bad = ~np.isfinite(a)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise UsageError(f"array {label!r} in data file {source!r} has {int(bad.sum())} non-finite "
                             f"value(s), the first {a[row, col]} at row {row}, column {col}")
    return x, y


# ------------------------------------------------------------------ packaged data sets


@functools.cache
def _packaged_table(name: str, delimiter: str) -> tuple[tuple[str, ...], np.ndarray]:
    columns, values = parse_table(read_packaged(name).decode("utf-8"), delimiter, name)
    values.flags.writeable = False
    return columns, values


def _columns(columns: tuple[str, ...], values: np.ndarray, names, source: str) -> list[np.ndarray]:
    missing = [n for n in names if n not in columns]
    if missing:
        raise UsageError(f"packaged data file {source!r} lacks column(s) {', '.join(missing)}")
    return [values[:, columns.index(n)] for n in names]


def airfoil_arrays() -> tuple[np.ndarray, np.ndarray]:
    """NASA airfoil self-noise: x (1503, 5) = AIRFOIL_FEATURES, y (1503, 1) = Pressure [dB]."""
    name = "airfoil_self_noise.tsv"
    columns, values = _packaged_table(name, "\t")
    *features, target = _columns(columns, values, (*AIRFOIL_FEATURES, AIRFOIL_TARGET), name)
    return np.stack(features, axis=1), target[:, None]


def california_arrays() -> tuple[np.ndarray, np.ndarray]:
    """California housing: x (20640, 8) = CALIFORNIA_FEATURES, y (20640, 1) = value / 1e5.

    The scikit-learn features, derived from the raw census columns: rooms, bedrooms and
    occupancy per household; target median_house_value / 100000.
    """
    name = "cal_housing.csv"
    columns, values = _packaged_table(name, ",")
    (lon, lat, age, rooms, bedrooms, population, households, income, value) = _columns(
        columns, values, ("longitude", "latitude", "housing_median_age", "total_rooms", "total_bedrooms",
                          "population", "households", "median_income", "median_house_value"), name)
    x = np.stack([income, age, rooms / households, bedrooms / households, population,
                  population / households, lat, lon], axis=1)
    return x, (value / 100000.0)[:, None]


# ------------------------------------------------------------------ users' files


def read_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Arrays `x` and `y` of an .npz file, unvalidated (see `check_xy`); no pickles."""
    try:
        if not zipfile.is_zipfile(path):
            raise UsageError(f"cannot read data file {path!r}: not an .npz (zip) archive")
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                raise UsageError(f"data file {path!r} lacks array(s) {', '.join(map(repr, missing))}; "
                                 f"it holds: {', '.join(archive.files) or 'nothing'}")
            return archive["x"], archive["y"]
    except UsageError:
        raise
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise UsageError(f"data file {path!r} holds object arrays; store numeric arrays x and y") from None
        raise UsageError(f"cannot read data file {path!r}: {err}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise UsageError(f"cannot read data file {path!r}: {_reason(err)}") from None


def _reason(err: Exception) -> str:
    """An exception's reason on one line, without the path an OSError repeats."""
    text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return " ".join(str(text).split()) or type(err).__name__


def read_table(path: str, delimiter: str, target: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features x (N, C-1) and target y (N, 1) of a delimited text file with a header."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read data file {path!r}: {_reason(err)}") from None
    columns, values = parse_table(text, delimiter, path)
    return select_target(columns, values, target, path)


def read_file(path: str, target: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validated x (N, n_in) and y (N, n_out) float64 of a user's .npz / .csv / .tsv file."""
    if not path:
        raise UsageError("file: needs a path, e.g. file:data.csv")
    ext = os.path.splitext(path)[1].lower()
    if ext not in FILE_EXTENSIONS:
        raise UsageError(f"unknown extension {ext or '(none)'!r} of data file {path!r}"
                         f"{did_you_mean(ext, FILE_EXTENSIONS)}; accepted: {', '.join(FILE_EXTENSIONS)}")
    if not os.path.exists(path):
        raise UsageError(f"data file {path!r} not found")
    if not os.path.isfile(path):
        raise UsageError(f"data file {path!r} is not a regular file")
    if ext == ".npz":
        if target is not None:
            raise UsageError(f"target={target!r} applies to .csv / .tsv files, not to {path!r} "
                             "(an .npz file names its arrays x and y)")
        x, y = read_npz(path)
    else:
        x, y = read_table(path, "," if ext == ".csv" else "\t", target)
    return check_xy(x, y, path)


# ------------------------------------------------------------------ split and standardise


def standardise(x_train, y_train, x_test, y_test):
    """Centre and scale features and target with the training split's statistics."""
    x_mean, x_std = x_train.mean(axis=0), x_train.std(axis=0)
    y_mean, y_std = y_train.mean(axis=0), y_train.std(axis=0)
    x_std = np.where(x_std > 0, x_std, 1.0)
    y_std = np.where(y_std > 0, y_std, 1.0)
    return ((x_train - x_mean) / x_std, (y_train - y_mean) / y_std,
            (x_test - x_mean) / x_std, (y_test - y_mean) / y_std)


def split_rows(n_rows: int, seed: int, test_fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test) of a seeded split: ceil(test_fraction * n_rows) test rows.

    Both index arrays come from one permutation drawn from `np.random.default_rng(seed)`;
    at least one row lands on each side (n_rows >= 2).
    """
    if n_rows < 2:
        raise UsageError(f"a train/test split needs at least 2 rows, got {n_rows}")
    n_test = min(n_rows - 1, max(1, math.ceil(test_fraction * n_rows)))
    perm = np.random.default_rng(seed).permutation(n_rows)
    return perm[n_test:], perm[:n_test]


def split_standardise(x: np.ndarray, y: np.ndarray, *, seed: int, n_train: int | None = None,
                      n_test: int | None = None, eval: str = "test"):
    """Seeded train/test arrays of tabular data, standardised with training statistics.

    Args:
      x: features (N, n_in); y: targets (N, n_out).
      seed: seed of the row permutation.
      n_train, n_test: optional caps on the rows taken from each side of the split
        (a prefix of the seeded permutation, so smaller caps give nested subsets).
      eval: "test": 80/20 held-out split. "train": no split; all rows in file order
        (or a seeded subset of n_train of them) train, and the test arrays are the
        training arrays.

    Returns:
      x_train (n, n_in), y_train (n, n_out), x_test (m, n_in), y_test (m, n_out) float64,
      standardised with the mean and std of x_train and y_train.
    """
    check_choice("eval", eval, EVAL_MODES)
    n_rows = x.shape[0]
    if eval == "train":
        rows = np.sort(np.random.default_rng(seed).permutation(n_rows)[:n_train])  # file order
        xs, ys, _, _ = standardise(x[rows], y[rows], x[rows], y[rows])
        return xs, ys, xs, ys
    train, test = split_rows(n_rows, seed)
    train, test = train[:n_train], test[:n_test]
    return standardise(x[train], y[train], x[test], y[test])
