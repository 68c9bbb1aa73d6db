"""Verified stamps: after a full sha256 check, remember each file's (size, mtime, ctime, inode, device) so
the next load re-hashes only what changed. A multi-GB artifact then starts in milliseconds instead of
seconds (far longer on a Jetson's eMMC), and the guarantee stays: a changed, replaced or truncated file
has a new identity and is hashed again.

ctime is the field that makes it hold: an unprivileged user can put back a file's mtime (`touch -r`)
after editing it in place, but every write, chmod or utime sets ctime to the current time, and only
root can set it back (by changing the clock or editing the file system). Moving the folder changes
the stamp's key (the resolved folder path), so a moved artifact is hashed in full once.

The stamp is tied to the sha256 of manifest.json, so a new manifest invalidates it. It lives in the
user's cache folder, not in the artifact (which may sit on read-only media), and it is a cache: anyone
who can rewrite it could as well rewrite the artifact; `--check-files full` always re-hashes everything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from jflow.artifact import cache_dir
from jflow.json_file import read_json
from jflow.errors import JFlowError
from jflow.fsutil import atomic_write_bytes


FORMAT = 2  # 1 had no ctime: such stamps are misses, and the next full check replaces them


def folder() -> Path:
    return cache_dir.root() / "verified"


def _path(root: Path) -> Path:
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:32]
    return folder() / f"{key}.json"


def identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def read(root: Path, manifest_digest: str) -> dict[str, list[int]]:
    """{relative path: identity} recorded for this manifest, or {} (no stamp, another manifest, unreadable)."""
    try:
        data = read_json(_path(root))
    except (OSError, ValueError):  # BadJSON is a ValueError: a damaged stamp is a miss
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("manifest") != manifest_digest \
            or not manifest_digest:
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
        record = {"format": FORMAT, "manifest": manifest_digest, "root": str(root.resolve()), "files": files}
        atomic_write_bytes(target, json.dumps(record).encode("utf-8"))
    except (OSError, JFlowError):
        pass
