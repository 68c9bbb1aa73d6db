"""Starting and stopping `jflow-export serve`: SIGTERM lets the running request finish (within --grace) and
answers the waiting ones 503, then exits 0; an artifact or port it cannot use is one line and exit code 1."""

import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

pytest.importorskip("uvicorn", reason="needs the serve extra: pip install -e '.[serve]'")
from http_server_process import ServeProcess  # noqa: E402

IMAGES = "/v1/images/generations"


def post_in_thread(url, body, results, key):
    def run():
        try:
            results[key] = httpx.post(url + IMAGES, json=body, timeout=60)
        except httpx.HTTPError as exc:
            results[key] = exc
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_sigterm_finishes_the_running_request_refuses_the_waiting_and_exits_0(tiny_artifact):
    server = ServeProcess(tiny_artifact, "--queue", "2", "--threads", "1").start()
    try:
        assert server.url.startswith("http://127.0.0.1:")  # loopback unless --host says otherwise
        results = {}
        running = post_in_thread(server.url, {"prompt": "a red cube", "steps": 8, "seed": 0}, results, "running")
        server.wait_for(lambda h: h["running"] == "image")
        waiting = post_in_thread(server.url, {"prompt": "a blue cube", "steps": 8, "seed": 1}, results, "waiting")
        server.wait_for(lambda h: h["waiting"] == 1)
    finally:
        code = server.stop()
    running.join(60)
    waiting.join(60)
    assert code == 0, server.output()
    assert results["running"].status_code == 200 and len(results["running"].json()["data"]) == 1
    assert results["waiting"].status_code == 503, results["waiting"].text
    assert results["waiting"].json()["error"]["code"] == "shutting_down"
    assert "Traceback" not in server.output() and "Application shutdown complete" in server.output()


def test_sigterm_cancels_a_request_that_outlasts_the_grace_period(tiny_artifact):
    server = ServeProcess(tiny_artifact, "--grace", "0.5", "--threads", "1").start()
    results = {}
    try:
        running = post_in_thread(server.url, {"prompt": "a slow one", "steps": 100, "seed": 0}, results, "running")
        server.wait_for(lambda h: h["running"] == "image")
    finally:
        started = time.monotonic()
        code = server.stop()
    running.join(60)
    assert code == 0, server.output()
    assert time.monotonic() - started < 8  # 100 steps take over 10 s here: the job was stopped, not waited for
    assert not isinstance(results["running"], httpx.Response) or results["running"].status_code != 200


def run_cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "jflow.cli", "serve", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_a_folder_that_is_not_an_artifact_is_one_line_and_exit_1(tmp_path):
    result = run_cli(str(tmp_path / "missing"), "--port", "0")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "missing" in result.stderr and "Traceback" not in result.stderr


def test_a_port_in_use_is_one_line_and_exit_1(tiny_artifact):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(str(tiny_artifact), "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: cannot listen on 127.0.0.1:{port} (Address already in use): choose " \
                                    "another --port, or stop what uses it"


def test_an_artifact_that_fails_its_check_stops_the_server_with_exit_1(tiny_artifact, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_artifact, damaged)
    table = next((damaged / "embeddings").glob("*.npy"))
    table.write_bytes(table.read_bytes()[:-8] + b"\0" * 8)  # same size, different bytes
    result = run_cli(str(damaged), "--port", "0", "--check-files", "full")
    assert result.returncode == 1, result.stderr
    error = result.stderr[result.stderr.index("Error: "):]  # after the server's own start and stop lines
    assert "failed its integrity check" in error and "embeddings/embed_tokens.npy" in error, result.stderr
    assert "Traceback" not in result.stderr
