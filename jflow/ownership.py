"""Who is writing a temporary folder: a marker with the writer's host, boot and process identity.

A later run uses it to tell a folder left behind by a killed process (safe to delete) from one that
is still being written. Anything without a readable marker, from another host or user, or whose
process may still run, is kept: in doubt, never delete. Stdlib only (the runtime imports jflow.fsutil).
"""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

from jflow.json_file import read_json
MARKER = ".jflow-owner.json"


def identity(pid: int | None = None) -> dict:
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "host": socket.gethostname(), "boot_id": _boot_id(), "start": _start_time(pid)}


def mark(folder: Path) -> None:
    """Write the marker into `folder` (private to us: mkdtemp), whole or not at all."""
    tmp = folder / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(identity()), encoding="utf-8")
    os.replace(tmp, folder / MARKER)


def is_abandoned(folder: Path) -> bool:
    """True only for a real folder of ours whose marker says: this host, and the process is gone."""
    try:
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != _uid():
            return False
        data = read_json(Path(folder) / MARKER)  # bounded: a planted marker nested 10^5 deep is not ours
        pid, host, boot, start = int(data["pid"]), data["host"], data.get("boot_id"), data.get("start")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    if host != socket.gethostname():
        return False  # its process cannot be checked from here
    here = _boot_id()
    if boot and here and boot != here:
        return True  # written before the last reboot: that process is gone
    if not _alive(pid):
        return True
    now = _start_time(pid)
    return start is not None and now is not None and now != start  # the pid was reused


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0


def _alive(pid: int) -> bool:
    if os.name == "nt" or pid <= 0:
        return True  # os.kill(pid, 0) would terminate it on Windows; cannot tell, so keep
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: alive, another user's
    return True


def _start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot (/proc/PID/stat field 22); None where /proc is absent."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None
