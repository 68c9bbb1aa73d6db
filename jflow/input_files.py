"""Opening a file named as input without blocking on what is not a file. Stdlib only.

A folder, a FIFO, a socket or a device (/dev/zero) where a picture or a JSON file is expected must not
read as "not found", and must never block: opening a FIFO for reading waits for a writer, and
/dev/zero never ends. The path is opened without blocking and the open file itself is checked (fstat),
so a path swapped for a FIFO between a check and the open cannot block either.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class NotAFile(OSError):
    """The path exists but is not a regular file; strerror says what it is ("is a folder, not a file")."""


def open_regular(path: str | Path) -> BinaryIO:
    """`path` opened for binary reading. FileNotFoundError, PermissionError (any OSError) as open() raises
    them, and NotAFile (an OSError) for a folder, FIFO, socket or device, which is never read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise NotAFile(errno.EINVAL, f"is {kind}, not a file", str(path))
        os.set_blocking(fd, True)  # a regular file: plain reads from here on
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
