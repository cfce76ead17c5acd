"""The one exception type for user mistakes.

`UsageError` subclasses `ValueError`, so library callers can catch it as a
ValueError; the CLI catches it and prints its one-line message with exit
status 2 and no traceback.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


class UsageError(ValueError):
    """A bad value supplied by the user (name, width, spec, data...)."""


def unknown(kind: str, value: object, accepted: Iterable[str]) -> UsageError:
    """Build the standard "unknown X 'v'; accepted: a, b, c" error."""
    return UsageError(f"unknown {kind} {value!r}; accepted: {', '.join(accepted)}")


def check_choice(kind: str, value: object, accepted: Iterable[str]) -> str:
    """Return `value` if it is one of `accepted`, else raise `unknown(...)`."""
    accepted = list(accepted)
    if value not in accepted:
        raise unknown(kind, value, accepted)
    return value  # type: ignore[return-value]


def check_positive_int(kind: str, value: object) -> int:
    """Return `value` as an int if it is a positive integer, else raise UsageError."""
    try:
        as_int = None if isinstance(value, bool) else int(value.__index__())  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        as_int = None
    if as_int is None or as_int < 1:
        raise UsageError(f"{kind} must be a positive integer, got {value!r}")
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
