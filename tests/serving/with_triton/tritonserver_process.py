"""A real tritonserver for the tests: the one nvidia-pytriton bundles (Triton 2.51, Python backend only),
started on 127.0.0.1 with free ports and stopped with its whole process group.

What it takes to run it here, each found out on this machine:
- The Python-backend stub links libpython3.X.so.1.0: LD_LIBRARY_PATH names the running interpreter's, so
  the stub embeds the same Python as the tests.
- The stub's Python finds its environment from `python3` on PATH (a venv's pyvenv.cfg); PYTHONPATH is
  ignored. The tests make a small venv whose .pth file lists NumPy 1.x, this checkout and the test venv's
  site-packages, in that order.
- NumPy 1.x: the stub's tensors are built against NumPy 1's array layout. Under NumPy 2 every tensor it
  makes from an array has 0 bytes ("input byte size mismatch ... Expected 32, got 0" on a BLS call,
  "output tensor shape does not match size of output" on a response).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
NUMPY1 = Path(os.environ.get("JFLOW_TRITON_NUMPY1", Path(sys.prefix) / "triton-numpy1"))  # in the venv: .ci/run
NUMPY1_HOWTO = f"pip install --no-deps --target {NUMPY1} numpy==1.26.4 (or set JFLOW_TRITON_NUMPY1 to such a folder)"


def unavailable() -> str | None:
    """Why the bundled server cannot run here, or None."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None:
        return "no tritonserver: pip install --no-deps nvidia-pytriton==0.7.0 (it bundles one, Python backend only)"
    dist = Path(spec.origin).parent / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not (dist / "python_backend_stubs" / version / "triton_python_backend_stub").is_file():
        return f"nvidia-pytriton has no Python-backend stub for Python {version}"
    if not (Path(sysconfig.get_config_var("LIBDIR") or "") / (sysconfig.get_config_var("INSTSONAME") or "-")).is_file():
        return "this Python has no shared libpython for the stub to embed"
    if not (NUMPY1 / "numpy").is_dir():
        return f"the server's Python needs NumPy 1.x (the stub's tensors are empty under NumPy 2): {NUMPY1_HOWTO}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    def __init__(self, repo: Path, workdir: Path, timeout_s: float = 180):
        self.repo, self.workdir, self.timeout_s = repo, workdir, timeout_s
        self.http_port, self.grpc_port = _free_port(), _free_port()
        self.log = workdir / "tritonserver.log"
        self.proc = None

    def _prepare(self) -> tuple[list[str], dict]:
        dist = Path(importlib.util.find_spec("pytriton").origin).parent / "tritonserver"
        backend = self.workdir / "backends" / "python"
        backend.mkdir(parents=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy(dist / "backends" / "python" / name, backend / name)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        shutil.copy(dist / "python_backend_stubs" / version / "triton_python_backend_stub", backend)
        env_dir = self.workdir / "server-python"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
        site = Path(subprocess.run([str(env_dir / "bin" / "python"), "-c",
                                    "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True, timeout=60).stdout.strip())
        (site / "jflow-server.pth").write_text(f"{NUMPY1}\n{REPO_ROOT}\n{sysconfig.get_paths()['purelib']}\n")
        libs = [sysconfig.get_config_var("LIBDIR"), str(dist.parent.parent / "nvidia_pytriton.libs")]
        env = {**os.environ, "PATH": f"{env_dir / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               "LD_LIBRARY_PATH": ":".join(libs + [os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(":")}
        env.pop("PYTHONPATH", None)
        command = [str(dist / "bin" / "tritonserver"), "--model-repository", str(self.repo),
                   "--backend-directory", str(self.workdir / "backends"), "--http-address", "127.0.0.1",
                   "--grpc-address", "127.0.0.1", "--http-port", str(self.http_port), "--grpc-port",
                   str(self.grpc_port), "--allow-metrics", "false", "--exit-timeout-secs", "10"]
        return command, env

    def __enter__(self) -> "TritonServer":
        import tritonclient.http as httpclient
        command, env = self._prepare()
        started = time.perf_counter()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # its own group: the stubs stop with it
        client = httpclient.InferenceServerClient(f"127.0.0.1:{self.http_port}")
        while time.perf_counter() - started < self.timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if client.is_server_ready():
                    self.ready_s = time.perf_counter() - started
                    return self
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"tritonserver was not ready after {self.timeout_s:.0f}s:\n{self.tail()}")

    def __exit__(self, *exc) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
