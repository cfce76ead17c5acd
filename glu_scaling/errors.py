"""The one exception type for user mistakes.

`UsageError` subclasses `ValueError`, so library callers can catch it as a
ValueError; the CLI catches it and prints its one-line message with exit
status 2 and no traceback.  Unknown names get a close-match suggestion
("did you mean 'glu'?", `did_you_mean`); docs/errors.md lists every message.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


class UsageError(ValueError):
    """A bad value supplied by the user (name, width, spec, data...)."""


def suggest(value: object, candidates: Iterable[str], n: int = 1) -> list[str]:
    """Up to `n` close matches of `value` among `candidates` (difflib, case-insensitive), best first."""
    if not isinstance(value, str) or not value.strip():
        return []
    by_lower: dict[str, str] = {}
    for c in candidates:
        by_lower.setdefault(str(c).lower(), str(c))
    text = value.strip().lower()
    hits = difflib.get_close_matches(text, list(by_lower), n=n, cutoff=0.6)
    if not hits:  # a prefix of one name: "lsq" -> "lsq-spline"
        hits = [c for c in by_lower if c.startswith(text)][:n]
    return [by_lower[h] for h in hits]


def did_you_mean(value: object, candidates: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the closest of `candidates` to `value`, or "" if none is close."""
    hits = suggest(value, candidates)
    return f" (did you mean {hits[0]!r}?)" if hits else ""


def unknown(kind: str, value: object, accepted: Iterable[str], candidates: Iterable[str] | None = None) -> UsageError:
    """Build the standard "unknown X 'v' (did you mean 'w'?); accepted: a, b, c" error.

    The suggestion is drawn from `candidates` (default: `accepted`), for when the
    accepted list names a pattern ("gatedK") rather than every spelling.
    """
    accepted = [str(a) for a in accepted]
    hint = did_you_mean(value, accepted if candidates is None else candidates)
    return UsageError(f"unknown {kind} {value!r}{hint}; accepted: {', '.join(accepted)}")


def check_choice(kind: str, value: object, accepted: Iterable[str]) -> str:
    """Return `value` if it is one of `accepted`, else raise `unknown(...)`."""
    accepted = list(accepted)
    if value not in accepted:
        raise unknown(kind, value, accepted)
    return value  # type: ignore[return-value]


# the largest count (points, widths, steps, ...) accepted anywhere: beyond it an array of that
# length cannot be indexed by XLA's int32 sizes, let alone held in memory
MAX_COUNT = 2**31 - 1


def check_positive_int(kind: str, value: object, maximum: int = MAX_COUNT) -> int:
    """Return `value` as an int if it is an integer in [1, maximum], else raise UsageError."""
    try:
        as_int = None if isinstance(value, bool) else int(value.__index__())  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        as_int = None
    if as_int is None or as_int < 1:
        raise UsageError(f"{kind} must be a positive integer, got {value!r}")
    if as_int > maximum:
        raise UsageError(f"{kind} must be at most {maximum}, got {as_int}")
    return as_int


def check_interval(interval) -> tuple[float, float]:
    """Return (a, b) as floats if `interval` is a finite pair with a < b, else raise."""
    try:
        a, b = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise UsageError(f"interval must be a pair (a, b) of numbers, got {interval!r}") from None
    if not (math.isfinite(a) and math.isfinite(b) and a < b):
        raise UsageError(f"interval must be finite with a < b, got {interval!r}")
    return a, b
