"""Reading JSON that came with an artifact, a checkpoint or a cache, within bounds. Stdlib only (a helper
below jflow.artifact: the output folders and owner markers read their small files through it too).

Python's json parser recurses once per nesting level: a file nested a few thousand levels deep ends in a
RecursionError, and one nested less deeply but still absurdly would reach our own recursive code (repr
in error messages, json.dumps on rewrite). Every file of ours is a few levels deep, so anything deeper
than MAX_DEPTH, or larger than MAX_BYTES, is a damaged or hostile file: `BadJSON` says which, in words
the caller puts after the file's name, and the caller adds what to do about it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jflow.input_files import open_regular

MAX_DEPTH = 64            # our deepest file (a manifest with engine profiles) is about 10 levels deep
MAX_BYTES = 64 * 2**20    # a full-size manifest is ~0.1 MB; some tokenizer configs reach a few MB


class BadJSON(ValueError):
    """A JSON file that is unreadable, too large or too deeply nested; str() reads after the file's name."""


def read_json(path: str | Path, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The parsed contents of `path`. BadJSON when it is not UTF-8 JSON, over `max_bytes` or nested deeper
    than `max_depth`; OSError when it cannot be read (the callers say so in their own words)."""
    return parse_json(read_bounded(path, max_bytes), max_depth)


def read_bounded(path: str | Path, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of `path`, or BadJSON when it holds more than `max_bytes` (never reads more than that)."""
    with open_regular(path) as f:  # a FIFO or device in place of the file: NotAFile (an OSError), never a hang
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise BadJSON(f"is larger than {max_bytes // 2**20} MiB, far more than such a file holds")
    return raw


def parse_json(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """`raw` parsed, or BadJSON (see read_json)."""
    try:
        data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except RecursionError:
        raise BadJSON(f"is nested more than {max_depth} levels deep (far more than such a file holds)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadJSON(f"is not valid JSON ({exc})") from None
    if _depth_over(data, max_depth):
        raise BadJSON(f"is nested more than {max_depth} levels deep (far more than such a file holds)")
    return data


def _depth_over(data: Any, max_depth: int) -> bool:
    """Whether any value lies deeper than `max_depth` containers; iterative, so it never recurses itself."""
    todo = [(data, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, (dict, list)):
            if depth > max_depth:
                return True
            todo.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value)
                        if isinstance(v, (dict, list)))
    return False


def read_config_object(path: Path, hint: str = "") -> dict:
    """A checkpoint's or artifact's optional JSON object file: {} when absent, else its object; anything
    else is one ConfigError line naming the file (`hint`: what to do about it, after a semicolon)."""
    from jflow.errors import ConfigError
    tail = f"; {hint}" if hint else ""
    if not path.exists():
        return {}
    try:
        data = read_json(path)  # bounded: size and nesting depth
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror or exc}){tail}") from None
    except BadJSON as exc:  # "is not valid JSON (...)", "is nested more than 64 levels deep ..."
        raise ConfigError(f"{path} {exc}{tail}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data
