"""Keeping messages short whatever a file holds. Stdlib only.

A manifest (or a checkpoint index) may list 200,000 missing files or hold a path of a million
characters; an error that quotes all of it buries its own point. Lists are shown as a count and
their first few items, values are quoted up to a length.
"""

from __future__ import annotations

import reprlib
from typing import Any, Iterable

SHOWN = 5      # items of a list a message names before "and N more"
QUOTED = 120   # characters of a quoted value


def listing(items: Iterable[Any], shown: int = SHOWN, sep: str = ", ") -> str:
    """'a, b, c' for a short list; 'a, b, c, d, e (and 199995 more)' for a long one (with a separator
    that breaks lines, the remainder gets a line of its own)."""
    items = [str(item) for item in items]
    head = sep.join(items[:shown])
    if len(items) <= shown:
        return head
    gap = sep if "\n" in sep else " "
    return f"{head}{gap}(and {len(items) - shown} more)"


def quoted(value: Any, limit: int = QUOTED) -> str:
    """repr(value) with long strings, lists and deep nesting elided by reprlib, cut to `limit` characters."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 4, QUOTED, QUOTED
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 8


def describe(exc: BaseException) -> str:
    """'Type: first line of its message', at most 300 characters: an exception named inside a one-line error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
