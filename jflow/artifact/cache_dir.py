"""Where jflow keeps what it can compute again: one root for every cache, set by JFLOW_CACHE. Stdlib only.

The root is $JFLOW_CACHE, else $XDG_CACHE_HOME/jflow, else ~/.cache/jflow. Each tool has a folder
in it (verified stamps, calibration samples). A cache that cannot be written is never a reason to
leave a traceback: the stamps are skipped silently (they only save time), and a tool that needs its
folder says which one failed and which variable moves it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from jflow.errors import OutputError

ENV = "JFLOW_CACHE"


def root() -> Path:
    """jflow's cache root (see the module note); nothing is created."""
    base = os.environ.get(ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                               "jflow")
    return Path(base)


def writable(name: str, what: str) -> Path:
    """root()/name, created and probed with a file; OutputError naming JFLOW_CACHE when it cannot be."""
    folder = root() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write {what} in the cache folder {folder} ({exc.strerror or exc}); set {ENV} to "
                          f"a writable folder, e.g. {ENV}=/tmp/jflow-cache") from None
    return folder
