"""Convergence orders: least-squares slopes in log-log with confidence intervals.

`fit_slope(x, y)` fits log y = a + s log x.  With one observation per x the
interval is the usual OLS one, s +- t_{0.975, m-2} se(s).  With `groups` (e.g.
seeds), a slope is fitted per group and the interval is over groups,
mean +- t_{0.975, G-1} sd / sqrt(G); the reported slope is then the mean of the
per-group slopes.  `fit_range=(lo, hi)` keeps only lo <= x <= hi.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from glu_scaling.errors import UsageError


@dataclasses.dataclass(frozen=True)
class SlopeFit:
    slope: float
    ci_low: float
    ci_high: float
    r2: float
    intercept: float  # of log y = intercept + slope log x (natural logs)
    n_points: int
    range: tuple[float, float]

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["range"] = list(self.range)
        return d


def t_quantile(df, q):
    """Student t quantile (scipy.stats.t.ppf calls the same `stdtrit`).  scipy.special is
    imported here, not with the package: it is 0.13 s of every command's start-up (the
    speedrun imports it in a background thread while it trains)."""
    from scipy.special import stdtrit

    return stdtrit(df, q)


def _ols(lx: np.ndarray, ly: np.ndarray):
    A = np.stack([np.ones_like(lx), lx], axis=1)
    coef, *_ = np.linalg.lstsq(A, ly, rcond=None)
    resid = ly - A @ coef
    ss_tot = np.sum((ly - ly.mean()) ** 2)
    r2 = 1.0 - np.sum(resid**2) / ss_tot if ss_tot > 0 else 1.0
    m = lx.size
    sxx = np.sum((lx - lx.mean()) ** 2)
    se = np.sqrt(np.sum(resid**2) / (m - 2) / sxx) if m > 2 and sxx > 0 else np.nan
    return coef[0], coef[1], r2, se


def fit_slope(x, y, *, groups=None, fit_range=None, confidence: float = 0.95) -> SlopeFit:
    """Slope of log y against log x, with a `confidence` interval.

    Args:
      x, y: positive values, shape (m,).
      groups: optional labels (m,), e.g. seeds: per-group slopes, CI over groups.
      fit_range: optional (lo, hi) on x.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise UsageError(f"x and y must have the same length, got {x.size} and {y.size}")
    g = None if groups is None else np.asarray(groups).ravel()
    if g is not None and g.shape != x.shape:
        raise UsageError(f"groups must have one label per point ({x.size}), got {g.size}")
    if not 0.0 < confidence < 1.0:
        raise UsageError(f"confidence must be in (0, 1), got {confidence!r}")
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if fit_range is not None:
        lo, hi = check_fit_range(fit_range)
        keep &= (x >= lo) & (x <= hi)
    x, y = x[keep], y[keep]
    g = None if g is None else g[keep]
    if np.unique(x).size < 2:
        raise UsageError(f"need positive data at 2 or more distinct x to fit a slope, got {np.unique(x).size}")
    lx, ly = np.log(x), np.log(y)
    intercept, slope, r2, se = _ols(lx, ly)
    alpha = 1.0 - confidence
    per_group = []
    if g is not None:
        for label in np.unique(g):
            sel = g == label
            if np.unique(lx[sel]).size >= 2:
                per_group.append(_ols(lx[sel], ly[sel])[1])
    if len(per_group) >= 2:
        slopes = np.asarray(per_group)
        slope = float(slopes.mean())
        half = t_quantile(slopes.size - 1, 1 - alpha / 2) * slopes.std(ddof=1) / np.sqrt(slopes.size)
        # the line drawn with this slope: the least-squares intercept at that slope, and its r2
        intercept = float(np.mean(ly - slope * lx))
        total = np.sum((ly - ly.mean()) ** 2)
        r2 = 1.0 - np.sum((ly - intercept - slope * lx) ** 2) / total if total > 0 else 1.0
    elif np.isfinite(se):
        half = t_quantile(lx.size - 2, 1 - alpha / 2) * se
    else:
        half = np.nan
    return SlopeFit(float(slope), float(slope - half), float(slope + half), float(r2), float(intercept),
                    int(lx.size), (float(x.min()), float(x.max())))


def local_slopes(x, y) -> np.ndarray:
    """Slopes between consecutive points, log(y_{i+1}/y_i) / log(x_{i+1}/x_i); (m-1,)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise UsageError(f"x and y must be 1D of the same length, got shapes {x.shape} and {y.shape}")
    return np.diff(np.log(y)) / np.diff(np.log(x))


def check_fit_range(fit_range) -> tuple[float, float]:
    """(lo, hi) as floats with lo <= hi (either may be infinite), else UsageError."""
    try:
        lo, hi = (float(v) for v in fit_range)
    except (TypeError, ValueError):
        raise UsageError(f"fit_range must be a pair (lo, hi) of numbers, got {fit_range!r}") from None
    if not lo <= hi:  # also NaN
        raise UsageError(f"fit_range needs lo <= hi, got {fit_range!r}")
    return lo, hi


# Models whose errors enter a slope: a "stalled" model (its line search gave up) is still
# a finished, finite model of the protocol; a "diverged" one is left out.
FIT_STATUSES = ("ok", "stalled")


def fit_records(records: list[dict], *, x: str = "n_hidden", y: str = "test_rmse", fit_range=None,
                statuses=FIT_STATUSES) -> SlopeFit | None:
    """`fit_slope` of records' `y` against `x`, seeds as groups, over the models whose status is
    in `statuses` and whose n_hidden lies in `fit_range` (whatever the x axis); None when fewer
    than 2 distinct x with a finite, positive y remain."""
    lo, hi = (-np.inf, np.inf) if fit_range is None else fit_range
    sel = [r for r in records if r["status"] in statuses and lo <= r["n_hidden"] <= hi
           and r[y] is not None and np.isfinite(r[y]) and r[y] > 0]
    if len({r[x] for r in sel}) < 2:
        return None
    return fit_slope([r[x] for r in sel], [r[y] for r in sel], groups=[r["seed"] for r in sel])


def _is_string(value) -> bool:
    return isinstance(value, str)


def _is_integer(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number_or_null(value) -> bool:
    return value is None or (isinstance(value, int | float | np.number) and not isinstance(value, bool))


# the fields of a results record that a slope fit (and a convergence plot) reads: (test, JSON type)
FIT_FIELDS = {"arch": (_is_string, "a string"), "problem": (_is_string, "a string"),
              "status": (_is_string, "a string"), "n_hidden": (_is_integer, "an integer"),
              "n_params": (_is_integer, "an integer"), "seed": (_is_integer, "an integer"),
              "test_rmse": (_is_number_or_null, "a number or null")}


def check_fit_record(record: dict) -> None:
    """UsageError (one line, naming the model and the bad field) unless `record` has every
    FIT_FIELDS entry with its type: a hand-edited results.jsonl line gets a message, not a
    traceback."""
    for name, (valid, kind) in FIT_FIELDS.items():
        if name not in record or not valid(record[name]):
            model = ", ".join(f"{k}={record.get(k)!r}" for k in ("arch", "n_hidden", "seed"))
            found = f"has {name}={record[name]!r}" if name in record else f"has no {name}"
            raise UsageError(f"the results record of {model} {found}; a slope fit needs {name} as {kind}: "
                             "fix or remove its line in the folder's results.jsonl (or results.host*.jsonl)")


def slopes_table(records: list[dict], *, fit_range=None, statuses=FIT_STATUSES) -> list[dict]:
    """slopes.json rows: per (arch, problem) and x in {n_hidden, n_params}, test RMSE slope.

    Seeds are the groups of the confidence interval.  `fit_range` is on n_hidden.
    Models whose status is not in `statuses` (default: diverged ones) are left out.
    Every record must hold FIT_FIELDS (`check_fit_record`).
    """
    for record in records:
        check_fit_record(record)
    rows = []
    keys = sorted({(r["arch"], r["problem"]) for r in records})
    for arch, problem in keys:
        sel = [r for r in records if r["arch"] == arch and r["problem"] == problem]
        for axis in ("n_hidden", "n_params"):
            fit = fit_records(sel, x=axis, fit_range=fit_range, statuses=statuses)
            if fit is None:
                break
            rows.append({"arch": arch, "problem": problem, "n_in": sel[0].get("n_in"), "x": axis,
                         "slope": fit.slope, "ci_low": fit.ci_low, "ci_high": fit.ci_high, "r2": fit.r2,
                         "range": list(fit.range), "n_models": fit.n_points})
    return rows
