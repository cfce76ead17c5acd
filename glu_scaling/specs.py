"""SPECs: the widths and seeds of a sweep as 'lo:hi[:step]' (hi exclusive, as range), a
comma list or integers, parsed and bounded in one place."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from glu_scaling.errors import MAX_COUNT, UsageError

MAX_SPEC_LENGTH = 100_000  # values in one widths / seeds spec


SEED_LIMIT = 2**32  # seeds become uint32 PRNG keys


def parse_spec(spec: str | int | Sequence[int], kind: str = "widths", minimum: int = 1,
               maximum: int | None = None) -> list[int]:
    """Parse 'lo:hi[:step]' (hi exclusive, as range), 'a,b,c' or an int into a sorted list
    of at most MAX_SPEC_LENGTH values in [minimum, maximum] (maximum None: 2**32 - 1 for
    seeds, which become uint32 PRNG keys, else `errors.MAX_COUNT`)."""
    if maximum is None:
        maximum = SEED_LIMIT - 1 if kind == "seeds" else MAX_COUNT
    if isinstance(spec, int | np.integer) and not isinstance(spec, bool):
        values = [int(spec)]
    elif isinstance(spec, str):
        text = spec.strip()
        try:
            if ":" in text:
                parts = [int(p) for p in text.split(":")]
                if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] <= 0):
                    raise ValueError
                values = range(*parts)  # checked against MAX_COUNT below before it is listed
            else:
                values = [int(p) for p in text.split(",")] if text else []
        except ValueError:
            raise UsageError(f"malformed {kind} spec {spec!r}; use lo:hi[:step] (hi exclusive, step > 0) "
                             f"or a comma list such as 1,2,4") from None
    else:
        try:
            values = [_integer(v) for v in spec]
        except (AttributeError, TypeError, ValueError):
            raise UsageError(f"malformed {kind} {spec!r}; give integers, a lo:hi[:step] string "
                             f"or a comma list such as '1,2,4'") from None
    if not values:
        raise UsageError(f"{kind} spec {spec!r} is empty; use lo:hi[:step] with lo < hi, or a comma list")
    lo, hi = (values[0], values[-1]) if isinstance(values, range) else (min(values), max(values))  # O(1) on a range
    if lo < minimum:
        raise UsageError(f"{kind} must be >= {minimum}, got {lo} in {spec!r}")
    if hi > maximum:
        raise UsageError(f"{kind} must be <= {maximum}, got {hi}")
    if len(values) > MAX_SPEC_LENGTH:
        raise UsageError(f"{kind} spec {spec!r} gives {len(values)} values; at most {MAX_SPEC_LENGTH} are accepted")
    return sorted(set(values))


def _integer(value) -> int:
    """`value` as an int if it is an integer (a bool or a float is not), else TypeError."""
    if isinstance(value, bool):
        raise TypeError(f"{value!r} is not an integer")
    return int(value.__index__())
