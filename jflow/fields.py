"""Type and range checks for fields read from JSON files (config.json, processor and tokenizer configs).

Each checker returns None when the value is fine, else the words "must be ..."; `check_fields` turns
the first problem into one ConfigError naming the file and the field. JSON true/false are not numbers
here (Python's bool is an int). Stdlib only: the runtime uses it.
"""

from __future__ import annotations

import math

from jflow.errors import ConfigError


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def positive_int(x):
    return None if _int(x) and x > 0 else "must be a whole number > 0"


def non_negative_int(x):
    return None if _int(x) and x >= 0 else "must be a whole number >= 0"


def any_int(x):
    return None if _int(x) else "must be a whole number"


def positive_real(x):
    return None if _real(x) and x > 0 else "must be a finite number > 0"


def flag(x):
    return None if isinstance(x, bool) else "must be true or false"


def text(x):
    return None if isinstance(x, str) else "must be a string"


def non_empty_text(x):
    return None if isinstance(x, str) and x else "must be a non-empty string"


def channel_list(x):
    if not isinstance(x, list) or not x:
        return "must be a non-empty list of whole numbers > 0"
    return next((f"[{i}] {positive_int(c)}" for i, c in enumerate(x) if positive_int(c)), None)


def three_reals(x):
    if not isinstance(x, list) or len(x) != 3 or not all(_real(v) for v in x):
        return "must be a list of 3 finite numbers (one per colour channel)"
    return None


def real_or_three(x):
    ok = _real(x) or (isinstance(x, list) and len(x) == 3 and all(_real(v) for v in x))
    return None if ok else "must be a finite number or a list of 3 of them"


def positive_real_or_three(x):
    values = x if isinstance(x, list) and len(x) == 3 else [x]
    return None if all(_real(v) and v > 0 for v in values) else "must be a finite number > 0 or a list of 3 of them"


def check_fields(values: dict, table: dict, source, prefix: str = "", nullable: frozenset = frozenset()) -> None:
    """Check each field of `table` present in `values`; null passes only for the `nullable` ones."""
    for key, check in table.items():
        if key not in values or (values[key] is None and key in nullable):
            continue
        value = values[key]
        problem = check(value)
        if problem:
            raise ConfigError(f"{source}: {prefix}{key} {problem}, got {value!r} ({type(value).__name__})")
