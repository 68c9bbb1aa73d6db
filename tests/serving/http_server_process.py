"""The real `jflow-export serve` for the HTTP tests: a child process on 127.0.0.1 with a free port (--port 0, the
port read from its first line), waited for until /health says ready (bounded), and stopped with SIGTERM,
whose exit code the caller can check. Its output is kept for the assertions and for failure messages."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

READY_TIMEOUT_S = 60
URL_LINE = re.compile(r"serving \S+ on (http://\S+) ")


def answer_artifact(src: Path, dst: Path, max_new_tokens: int = 512) -> Path:
    """The tiny artifact with room for a long answer. Its greedy answer is 292 tokens (the shared fixture stops
    at 16, in under 0.1 s): a stream long enough to be cut by a client that goes away. Only the manifest's
    limit changes; the graphs take any length up to max_context."""
    from jflow.artifact.manifest import Manifest
    from jflow.artifact.writer import ArtifactWriter
    shutil.copytree(src, dst)
    limits = dict(Manifest.load(dst, check_files=False).data["limits"], max_new_tokens=max_new_tokens)
    ArtifactWriter(dst).update({"limits": limits})
    return dst


class ServeProcess:
    def __init__(self, artifact: Path, *args: str):
        self.command = [sys.executable, "-m", "jflow.cli", "serve", str(artifact), "--port", "0", *args]
        self.lines: list[str] = []
        self.url: str | None = None
        self.proc: subprocess.Popen | None = None

    def start(self, wait_ready: bool = True) -> "ServeProcess":
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self.url is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{self.output()}")
            time.sleep(0.05)
        while wait_ready:
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready:\n{self.output()}")
            time.sleep(0.1)
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if self.url is None and (match := URL_LINE.search(line)):
                self.url = match[1]

    def output(self) -> str:
        return "\n".join(self.lines)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def wait_for(self, condition, timeout_s: float = 30) -> dict:
        """/health once `condition(health)` holds; AssertionError with the last health after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not condition(health := self.health()):
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not get there in {timeout_s} s: {health}")
            time.sleep(0.02)
        return health

    def wait_idle(self, timeout_s: float = 30) -> dict:
        """/health once nothing runs or waits (a cancelled job has been wound up)."""
        return self.wait_for(lambda h: h["running"] is None and h["waiting"] == 0, timeout_s)

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM, then the exit code (the process group is killed if it does not end in time)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise AssertionError(f"the server did not stop within {timeout_s} s of SIGTERM:\n{self.output()}")
