"""Verified stamps: after a full sha256 check, remember each file's (size, mtime, inode, device) so the next
load re-hashes only what changed. A multi-GB artifact then starts in milliseconds instead of seconds
(far longer on a Jetson's eMMC), and the guarantee stays: a changed, replaced or truncated file has a
new identity and is hashed again.

The stamp is tied to the sha256 of manifest.json, so a new manifest invalidates it. It lives in the
user's cache folder, not in the artifact (which may sit on read-only media), and it is a cache: anyone
who can rewrite it could as well rewrite the artifact; `--check-files full` always re-hashes everything.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from jflow.errors import JFlowError
from jflow.fsutil import atomic_write_bytes


def folder() -> Path:
    base = os.environ.get("JFLOW_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                         os.path.expanduser("~/.cache"), "jflow")
    return Path(base) / "verified"


def _path(root: Path) -> Path:
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:32]
    return folder() / f"{key}.json"


def identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


def read(root: Path, manifest_digest: str) -> dict[str, list[int]]:
    """{relative path: identity} recorded for this manifest, or {} (no stamp, another manifest, unreadable)."""
    try:
        data = json.loads(_path(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("manifest") != manifest_digest or not manifest_digest:
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def write(root: Path, manifest_digest: str, files: dict[str, list[int]]) -> None:
    """Record a successful check; silently skipped where the cache folder is not writable."""
    if not manifest_digest:
        return
    target = _path(root)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, json.dumps({"manifest": manifest_digest, "root": str(root.resolve()),
                                               "files": files}).encode("utf-8"))
    except (OSError, JFlowError):
        pass
