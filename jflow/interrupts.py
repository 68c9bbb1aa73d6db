"""SIGTERM (and SIGHUP) as an exception in the main thread, so that a terminated command cleans up as an
interrupted one does: temporary files, partial folders and scratch folders are removed by the
`finally` and `except BaseException` blocks that remove them on errors (SIGINT already raises
KeyboardInterrupt). A second signal during that cleanup is ignored; SIGKILL still ends it at once."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(SystemExit):
    """Raised where the main thread was when the signal arrived; exits with 128 + the signal number."""


def stop_on_signals() -> Callable[[], None]:
    """Install the handlers; returns the function that restores the previous ones (and, when a signal
    arrived, says so in one line on stderr once the cleanup is done)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # only the main thread may set handlers (an app embedding the CLI)
    received: list[int] = []

    def handler(signum, frame):
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the cleanup short
        received.append(signum)
        raise Terminated(128 + signum)

    def unraisable(info) -> None:
        # Raised where Python cannot propagate it (a weakref callback, a __del__: it prints "Exception ignored"
        # and goes on), the signal would be lost and the command would run to its end: deliver it again a
        # moment later, from another thread, so it lands once this callback (and this hook) have returned.
        if isinstance(info.exc_value, Terminated) and received:
            for sig in SIGNALS:
                signal.signal(sig, handler)
            threading.Timer(0.01, os.kill, (os.getpid(), received.pop())).start()
            return
        hook(info)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    hook, sys.unraisablehook = sys.unraisablehook, unraisable

    def restore() -> None:
        sys.unraisablehook = hook
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        if received:
            print(f"Aborted: {signal.Signals(received[0]).name} received; what was half-written was removed",
                  file=sys.stderr)
    return restore
