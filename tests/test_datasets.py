"""Packaged data sets (checksums, contents), seeded split + standardisation, users' files."""

import gzip

import jax.numpy as jnp
import numpy as np
import pytest

from glu_scaling import datasets, problems
from glu_scaling.errors import UsageError
from glu_scaling.problems import make_dataset

# ------------------------------------------------------------------ packaged files


@pytest.mark.parametrize("name, n_lines", [("airfoil_self_noise.tsv", 1504), ("cal_housing.csv", 20641)])
def test_packaged_file_checksum(name, n_lines):
    data = datasets.read_packaged(name)
    assert datasets.sha256_hex(data) == datasets.CHECKSUMS[name]
    assert data.decode().count("\n") == n_lines


def test_tampered_data_fails_checksum(monkeypatch, tmp_path):
    name = "airfoil_self_noise.tsv"
    monkeypatch.setitem(datasets.CHECKSUMS, name, "0" * 64)
    with pytest.raises(UsageError, match=f"checksum mismatch for data file '{name}'"):
        datasets.read_packaged(name)
    monkeypatch.undo()

    original = datasets.read_packaged(name)
    tampered = tmp_path / (name + ".gz")
    tampered.write_bytes(gzip.compress(original.replace(b"126.201", b"126.202", 1)))
    with pytest.raises(UsageError) as err:
        datasets.verify_sha256(gzip.decompress(tampered.read_bytes()), datasets.CHECKSUMS[name], name)
    assert name in str(err.value) and "\n" not in str(err.value)
    assert datasets.verify_sha256(original, datasets.CHECKSUMS[name], name) is original


def test_unknown_packaged_file():
    with pytest.raises(UsageError, match="unknown packaged data file 'x.csv'; accepted: airfoil"):
        datasets.read_packaged("x.csv")


def test_airfoil_arrays():
    x, y = datasets.airfoil_arrays()
    assert x.shape == (1503, 5) and y.shape == (1503, 1)
    np.testing.assert_allclose(x[0], [800, 0, 0.3048, 71.3, 0.00266337])
    assert y[0, 0] == 126.201
    assert problems.REGISTRY["airfoil"].n_in == x.shape[1]


def test_california_arrays_are_the_scikit_learn_features():
    x, y = datasets.california_arrays()
    assert x.shape == (20640, 8) and y.shape == (20640, 1)
    # first row: -122.23, 37.88, 41, 880, 129, 322, 126, 8.3252, 452600
    np.testing.assert_allclose(x[0], [8.3252, 41, 880 / 126, 129 / 126, 322, 322 / 126, 37.88, -122.23])
    np.testing.assert_allclose(y[0, 0], 4.526)
    assert np.isfinite(x).all() and np.isfinite(y).all()
    assert problems.REGISTRY["california"].n_in == x.shape[1] == len(datasets.CALIFORNIA_FEATURES)


# ------------------------------------------------------------------ split and standardisation


def test_split_rows_partition_and_determinism():
    train, test = datasets.split_rows(101, seed=5)
    assert len(test) == 21 and len(train) == 80
    assert sorted(np.concatenate([train, test])) == list(range(101))
    again = datasets.split_rows(101, seed=5)
    other = datasets.split_rows(101, seed=6)
    np.testing.assert_array_equal(train, again[0])
    assert not np.array_equal(train, other[0])
    assert [len(a) for a in datasets.split_rows(2, seed=0)] == [1, 1]
    with pytest.raises(UsageError, match="at least 2 rows, got 1"):
        datasets.split_rows(1, seed=0)


def test_real_data_uses_all_rows_by_default():
    ds = make_dataset("airfoil", seed=0)
    assert ds.x_train.shape == (1202, 5) and ds.x_test.shape == (301, 5)
    assert ds.n_in == 5 and ds.n_out == 1
    ca = make_dataset("california", seed=0)
    assert ca.x_train.shape == (16512, 8) and ca.x_test.shape == (4128, 8) and ca.n_in == 8


def test_standardised_with_training_statistics_only():
    ds = make_dataset("airfoil", seed=0)
    for train, test in ((ds.x_train, ds.x_test), (ds.y_train, ds.y_test)):
        np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-12)
        np.testing.assert_allclose(train.std(axis=0), 1, rtol=1e-12)
        assert np.all(np.abs(test.mean(axis=0)) > 1e-6)
        assert np.all(np.abs(test.std(axis=0) - 1) > 1e-6)
    x, y = datasets.airfoil_arrays()
    tr, te = datasets.split_rows(len(x), seed=0)
    mean, std = x[tr].mean(axis=0), x[tr].std(axis=0)
    np.testing.assert_allclose(ds.x_test, (x[te] - mean) / std, rtol=1e-12, atol=1e-12)


def test_split_determinism_through_make_dataset():
    a = make_dataset("airfoil", seed=1)
    b = make_dataset("airfoil", seed=1)
    c = make_dataset("airfoil", seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.x_train.shape == c.x_train.shape and not np.allclose(a.x_train, c.x_train)


def test_caps_take_a_prefix_of_the_seeded_split():
    n = 50
    index = np.arange(n, dtype=np.float64)[:, None]
    xs, _, xt, _ = datasets.split_standardise(index, index, seed=3, n_train=10, n_test=4)
    assert xs.shape == (10, 1) and xt.shape == (4, 1)
    train, test = datasets.split_rows(n, seed=3)
    mean, std = train[:10].mean(), train[:10].std()
    np.testing.assert_allclose(xs[:, 0] * std + mean, train[:10])
    np.testing.assert_allclose(xt[:, 0] * std + mean, test[:4])
    big = datasets.split_standardise(index, index, seed=3, n_train=10_000, n_test=10_000)
    assert big[0].shape == (40, 1) and big[2].shape == (10, 1)


def test_eval_train_uses_every_row():
    ds = make_dataset("airfoil", eval="train")
    assert ds.x_train.shape == (1503, 5) and ds.eval == "train"
    np.testing.assert_array_equal(ds.x_test, ds.x_train)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-12)
    capped = make_dataset("airfoil", eval="train", n_train=64)
    assert capped.x_train.shape == capped.x_test.shape == (64, 5)


def test_float32_tabular():
    ds = make_dataset("airfoil", dtype=jnp.float32, n_train=32, n_test=8)
    assert ds.x_train.dtype == ds.y_test.dtype == jnp.float32


# ------------------------------------------------------------------ users' files


def _csv(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _npz(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def _table(n=20, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3))


def test_csv_file_problem(tmp_path):
    t = _table()
    path = _csv(tmp_path, "a,b,c\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in t) + "\n\n")
    spec = problems.get_problem(f"file:{path}")
    assert spec.name == f"file:{path}" and spec.n_in == 2 and spec.tabular
    ds = make_dataset(f"file:{path}", seed=0)
    assert ds.name == f"file:{path}" and ds.x_train.shape == (16, 2) and ds.x_test.shape == (4, 2)
    x, y = datasets.read_file(path, target="a")
    np.testing.assert_array_equal(y[:, 0], t[:, 0])
    np.testing.assert_array_equal(x, t[:, 1:])
    ds = make_dataset(f"file:{path}", target="a", eval="train")
    assert ds.x_train.shape == (20, 2) and ds.y_train.shape == (20, 1)
    np.testing.assert_allclose(ds.y_train[:, 0], (t[:, 0] - t[:, 0].mean()) / t[:, 0].std())


def test_tsv_file_with_bom_and_quotes(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes('\ufeff"x one"\ty\n1\t2\n3\t4.5\n5\t6\n'.encode("utf-8"))
    x, y = datasets.read_file(str(path), target="x one")
    np.testing.assert_array_equal(x[:, 0], [2, 4.5, 6])
    np.testing.assert_array_equal(y[:, 0], [1, 3, 5])


def test_npz_file_problem(tmp_path):
    path = _npz(tmp_path, x=np.linspace(0, 1, 10), y=np.stack([np.arange(10), np.arange(10) ** 2], 1))
    ds = make_dataset(f"file:{path}", seed=1)
    assert ds.n_in == 1 and ds.n_out == 2
    assert ds.x_train.shape == (8, 1) and ds.y_test.shape == (2, 2)
    assert problems.get_problem(f"file:{path}").n_in == 1


_GOOD_ROWS = "a,b,y\n1,2,3\n4,5,6\n7,8,9\n"


@pytest.mark.parametrize("case, needle", [
    ("missing", "missing.csv' not found"),
    ("directory", "is not a regular file"),
    ("extension", "unknown extension '.txt'"),
    ("no_extension", "unknown extension '(none)'"),
    ("empty_path", "file: needs a path"),
    ("garbage_npz", "cannot read data file"),
    ("binary_csv", "cannot read data file"),
    ("npz_missing_y", "lacks array(s) 'y'; it holds: x, z"),
    ("npz_dims", "array 'x' in data file"),
    ("npz_strings", "array 'y' in data file"),
    ("npz_objects", "holds object arrays"),
    ("npz_lengths", "x has 5 rows but y has 4"),
    ("npz_nan", "non-finite value(s), the first nan at row 2"),
    ("npz_one_row", "has 1 row(s); at least 2 are needed"),
    ("npz_target", "target='y' applies to .csv / .tsv files"),
    ("csv_non_numeric", "non-numeric cell 'abc'"),
    ("csv_empty_cell", "non-numeric cell ''"),
    ("csv_nan", "non-finite value 'nan'"),
    ("csv_inf", "non-finite value 'inf'"),
    ("csv_ragged", "line 3 has 2 cells, the header has 3"),
    ("csv_one_row", "has 1 row(s); at least 2 are needed"),
    ("csv_header_only", "has 0 row(s)"),
    ("csv_no_header", "has no header line"),
    ("csv_empty", "is empty"),
    ("csv_one_column", "has 1 column(s)"),
    ("csv_unknown_target", "unknown target column 'price'"),
    ("csv_duplicate_target", "target column 'b' appears 2 times"),
])
def test_file_errors_name_the_bad_value(tmp_path, case, needle):
    target = None
    path = None
    if case == "missing":
        path = str(tmp_path / "missing.csv")
    elif case == "directory":
        (tmp_path / "dir.csv").mkdir()
        path = str(tmp_path / "dir.csv")
    elif case == "extension":
        path = _csv(tmp_path, _GOOD_ROWS, "data.txt")
    elif case == "no_extension":
        path = _csv(tmp_path, _GOOD_ROWS, "data")
    elif case == "empty_path":
        path = ""
    elif case == "garbage_npz":
        path = _csv(tmp_path, "not a zip archive", "bad.npz")
    elif case == "binary_csv":
        path = str(tmp_path / "bin.csv")
        (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81\x82")
    elif case == "npz_missing_y":
        path = _npz(tmp_path, x=np.ones(3), z=np.ones(3))
    elif case == "npz_dims":
        path = _npz(tmp_path, x=np.ones((4, 2, 2)), y=np.ones(4))
    elif case == "npz_strings":
        path = _npz(tmp_path, x=np.ones(3), y=np.array(["a", "b", "c"]))
    elif case == "npz_objects":
        path = _npz(tmp_path, x=np.array([1, "a", None], dtype=object), y=np.ones(3))
    elif case == "npz_lengths":
        path = _npz(tmp_path, x=np.ones(5), y=np.ones(4))
    elif case == "npz_nan":
        path = _npz(tmp_path, x=np.array([0.0, 1.0, np.nan, 3.0]), y=np.ones(4))
    elif case == "npz_one_row":
        path = _npz(tmp_path, x=np.ones((1, 2)), y=np.ones(1))
    elif case == "npz_target":
        path, target = _npz(tmp_path, x=np.ones(3), y=np.ones(3)), "y"
    elif case == "csv_non_numeric":
        path = _csv(tmp_path, "a,b,y\n1,2,3\n4,abc,6\n")
    elif case == "csv_empty_cell":
        path = _csv(tmp_path, "a,b,y\n1,2,3\n4,,6\n")
    elif case == "csv_nan":
        path = _csv(tmp_path, "a,b,y\n1,2,3\n4,nan,6\n")
    elif case == "csv_inf":
        path = _csv(tmp_path, "a,b,y\n1,2,3\n4,5,inf\n")
    elif case == "csv_ragged":
        path = _csv(tmp_path, "a,b,y\n1,2,3\n4,5\n")
    elif case == "csv_one_row":
        path = _csv(tmp_path, "a,b,y\n1,2,3\n")
    elif case == "csv_header_only":
        path = _csv(tmp_path, "a,b,y\n")
    elif case == "csv_no_header":
        path = _csv(tmp_path, "1,2,3\n4,5,6\n")
    elif case == "csv_empty":
        path = _csv(tmp_path, "\n\n")
    elif case == "csv_one_column":
        path = _csv(tmp_path, "y\n1\n2\n3\n")
    elif case == "csv_unknown_target":
        path, target = _csv(tmp_path, _GOOD_ROWS), "price"
    elif case == "csv_duplicate_target":
        path, target = _csv(tmp_path, "a,b,b\n1,2,3\n4,5,6\n"), "b"
    with pytest.raises(UsageError) as err:
        make_dataset(f"file:{path}", target=target)
    message = str(err.value)
    assert needle in message, message
    assert "\n" not in message
    if path:
        assert repr(path) in message, message
    if case == "csv_unknown_target":
        assert "columns: a, b, y" in message


def test_file_problem_errors_reach_get_problem(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        problems.get_problem(f"file:{tmp_path / 'nothing.npz'}")
    with pytest.raises(UsageError, match="target='y' applies only to file:PATH problems, not to 'airfoil'"):
        problems.get_problem("airfoil", target="y")
