"""Run the HTTP server: bind the socket, load the Pipeline on the worker thread, serve with uvicorn, and stop
cleanly on SIGTERM or Ctrl-C (waiting requests get 503, the running one may finish within the grace
period, then the Pipeline is released and the process exits 0)."""

from __future__ import annotations

import ipaddress
import signal
import socket
from contextlib import contextmanager
from typing import Any, Callable

import uvicorn

from jflow.errors import JFlowError
from jflow.serving.http_app import build_app
from jflow.serving.limits import ServeLimits
from jflow.serving.request_queue import PipelineWorker


class _Server(uvicorn.Server):
    """uvicorn's server, telling the worker when shutdown begins: requests still waiting in the queue are
    answered 503 at once instead of being run one by one while the server is asked to stop."""

    def __init__(self, config: uvicorn.Config, worker: PipelineWorker):
        super().__init__(config)
        self.worker = worker

    async def shutdown(self, sockets=None):
        self.worker.stop_accepting()
        await super().shutdown(sockets)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or one line saying why not (port taken, address not on this machine)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise JFlowError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise JFlowError(f"cannot listen on {host}:{port} ({exc.strerror}): choose another --port, or stop what "
                         "uses it") from None
    sock.set_inheritable(True)
    return sock


@contextmanager
def _exit_quietly_on_signals():
    """uvicorn handles SIGTERM/SIGINT while it serves, then re-raises the signal to the handlers it found; with
    these no-op handlers in place that re-raise ends nothing, so a stop by signal is a clean exit 0."""
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(load: Callable[[], Any], model_id: str, host: str, port: int, limits: ServeLimits,
          api_key: str | None = None, grace_s: float = 30.0, say: Callable[[str], None] = print) -> None:
    """Serve until stopped. Raises JFlowError (one line) if the port cannot be had or the model fails to load."""
    sock = bind(host, port)
    server: _Server | None = None

    def failed(message: str) -> None:
        if server is not None:
            server.should_exit = True  # read by uvicorn's main loop every 0.1 s

    worker = PipelineWorker(load, limits.queue, on_failed=failed)
    app = build_app(worker, model_id, limits, api_key)
    config = uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=grace_s, lifespan="on",
                            server_header=False)
    server = _Server(config, worker)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    say(f"serving {model_id} on http://{shown}:{bound_port} (queue {limits.queue}"
        f"{', API key required' if api_key else ''}); stop with Ctrl-C or SIGTERM")
    if not is_loopback(host) and not api_key:
        say(f"warning: --host {host} lets other machines use the model without a key; consider --api-key")
    with _exit_quietly_on_signals():
        server.run(sockets=[sock])
    sock.close()
    if worker.error is not None:
        raise JFlowError(worker.error)
