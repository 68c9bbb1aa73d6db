"""Engine cache: an engine is reused only when everything that makes it valid is unchanged.

Key (`jflow.artifact.engines.EngineKey`): the graph's files (sha256 from the manifest), precision, the
optimization profiles, the TensorRT version, and the GPU's name and compute capability. Engines live in DIR/engines/<graph>-<digest>/ with
an engine.json that records the key; files are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from jflow.json_file import BadJSON, read_json
from jflow.artifact.engines import EngineKey
from jflow.fsutil import atomic_write_bytes

PLAN = "engine.plan"
RECORD = "engine.json"


def reusable(root: Path, key: EngineKey) -> Path | None:
    """The cached plan for `key`, or None when it is missing, stale or incomplete."""
    folder = key.folder(root)
    try:
        record = read_json(folder / RECORD)  # bounded: size and nesting depth
    except (OSError, BadJSON):
        return None
    plan = folder / PLAN
    if record.get("key") != asdict(key) or not plan.is_file() or plan.stat().st_size != record.get("bytes"):
        return None
    return plan


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def store(root: Path, key: EngineKey, plan: bytes, seconds: float) -> Path:
    """Write the plan, then its record (the record last: a plan without one is never reused)."""
    folder = key.folder(root)
    write_atomic(folder / PLAN, plan)
    record = {"key": asdict(key), "bytes": len(plan), "build_seconds": round(seconds, 1)}
    write_atomic(folder / RECORD, (json.dumps(record, indent=2) + "\n").encode())
    return folder / PLAN
