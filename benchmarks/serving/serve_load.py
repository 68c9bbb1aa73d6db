"""Load on `jflow-export serve`: bursts of concurrent mixed requests against a bounded queue.

    python -m benchmarks.serving.serve_load ARTIFACT [--clients 50] [--queue 8] [--waves 3] [--retry-waves 2]

Starts the real server on 127.0.0.1 (a free port), then sends `--waves` bursts of `--clients` requests at
once, a third each of chat, streamed chat and image generation, each with its own seed or question, so every
answer can be checked against the in-process `Pipeline`'s. Every request must end in that exact answer or in
a 503 with Retry-After (queue_full); nothing may be lost (no timeout, no connection error) or duplicated (the
server's counters: accepted == completed == the 200s, rejected == the 503s). Then `--retry-waves` bursts retry
each 503 after its Retry-After until all are served. The server's RSS and peak RSS (VmRSS / VmHWM from /proc) are read
before and after each wave. Traffic goes to loopback only and every request has a time limit. Writes
benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks import RESULTS
from jflow.runtime.pipeline import Pipeline

REQUEST_TIMEOUT_S = 120
MAX_TRIES = 60  # the retrying wave's bound per request


def start_server(artifact: str, queue: int, log: Path) -> tuple[subprocess.Popen, str]:
    """The server, its output going to `log` (a pipe nobody reads would fill and block it)."""
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "jflow.cli", "serve", artifact, "--port", "0", "--queue",
                                 str(queue)], stdout=sink, stderr=subprocess.STDOUT)
    deadline, url = time.monotonic() + 120, None
    while time.monotonic() < deadline and proc.poll() is None:
        if url is None and (match := re.search(r"on (http://\S+) ", log.read_text())):
            url = match[1]
        if url is not None:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the server did not become ready:\n{log.read_text()[-2000:]}")


def machine() -> dict:
    """The CPU (model and the ISA flags ONNX Runtime's kernels depend on), cores and Python: numbers differ a lot
    between our machines."""
    cpu, flags = platform.machine(), set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            cpu = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    isa = [f for f in ("avx512_vnni", "avx512f", "avx_vnni", "avx2") if f in flags]
    return {"cpu": cpu, "isa": isa, "cores": os.cpu_count(), "python": platform.python_version()}


def memory(pid: int) -> dict:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mib": int(fields["VmRSS"].split()[0]) / 1024, "peak_rss_mib": int(fields["VmHWM"].split()[0]) / 1024}


def picture_url(seed: int) -> tuple[np.ndarray, str]:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return pixels, "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def make_requests(pipe: Pipeline, count: int) -> list[dict]:
    """Request i: its kind, body and the answer the Pipeline gives for it."""
    out = []
    for i in range(count):
        kind = ("chat", "stream", "image")[i % 3]
        if kind == "image":
            body = {"prompt": f"picture number {i}", "steps": 2, "seed": i}
            buffer = io.BytesIO()
            pipe.generate(body["prompt"], steps=2, seed=i)[0].save(buffer, format="PNG")
            expected = buffer.getvalue()
        else:
            pixels, url = picture_url(i)
            question = f"What is in picture {i}?"
            body = {"max_tokens": 12, "temperature": 0.7, "seed": i, "stream": kind == "stream",
                    "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                              {"type": "text", "text": question}]}]}
            expected = pipe.answer(pixels, question, max_new_tokens=12, temperature=0.7, seed=i)
        out.append({"kind": kind, "body": body, "expected": expected})
    return out


async def send(client: httpx.AsyncClient, request: dict) -> dict:
    """One request: {"status", "ok" (the exact expected answer), "retry_after", "seconds"} or an error."""
    started = time.perf_counter()
    path = "/v1/images/generations" if request["kind"] == "image" else "/v1/chat/completions"
    try:
        if request["kind"] == "stream":
            async with client.stream("POST", path, json=request["body"]) as response:
                if response.status_code != 200:
                    await response.aread()
                    return outcome(response, started, None)
                text, done = "", False
                async for line in response.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: "):
                        chunk = json.loads(line[6:])
                        text += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
                return outcome(response, started, done and text == request["expected"])
        response = await client.post(path, json=request["body"])
        if response.status_code != 200:
            return outcome(response, started, None)
        data = response.json()
        if request["kind"] == "image":
            ok = base64.b64decode(data["data"][0]["b64_json"]) == request["expected"]
        else:
            ok = data["choices"][0]["message"]["content"] == request["expected"]
        return outcome(response, started, ok)
    except httpx.HTTPError as exc:
        return {"status": None, "error": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - started}


def outcome(response: httpx.Response, started: float, ok) -> dict:
    result = {"status": response.status_code, "ok": ok, "seconds": time.perf_counter() - started}
    if response.status_code == 503:
        result["retry_after"] = response.headers.get("Retry-After")
        result["code"] = response.json()["error"]["code"]
    elif response.status_code != 200:
        result["error"] = response.text[:300]
    return result


async def wave(url: str, requests: list[dict], retry: bool) -> list[dict]:
    limits = httpx.Limits(max_connections=len(requests) + 8, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        async def one(request):
            for tries in range(1, MAX_TRIES + 1):
                result = await send(client, request)
                if not (retry and result["status"] == 503):
                    return {**result, "tries": tries}
                await asyncio.sleep(float(result["retry_after"]))
            return {**result, "tries": MAX_TRIES}
        return await asyncio.gather(*(one(r) for r in requests))


def summary(results: list[dict]) -> dict:
    served = [r for r in results if r["status"] == 200]
    latencies = sorted(r["seconds"] for r in served)
    return {"requests": len(results), "served_correct": sum(r["ok"] is True for r in served),
            "served_wrong": sum(r["ok"] is not True for r in served),
            "rejected_503": sum(r["status"] == 503 and r.get("code") == "queue_full" and bool(r.get("retry_after"))
                                for r in results),
            "other": [r for r in results if r["status"] not in (200, 503)],
            "tries_max": max(r["tries"] for r in results),
            "served_seconds_p50": latencies[len(latencies) // 2] if latencies else None,
            "served_seconds_max": latencies[-1] if latencies else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifact")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--queue", type=int, default=8)
    parser.add_argument("--waves", type=int, default=3, help="bursts whose 503s are final")
    parser.add_argument("--retry-waves", type=int, default=2, help="then bursts that retry each 503")
    args = parser.parse_args()
    with Pipeline.load(args.artifact) as pipe:
        requests = make_requests(pipe, args.clients)
    log = Path(tempfile.mkdtemp()) / "server.log"
    proc, url = start_server(args.artifact, args.queue, log)
    report = {"artifact": args.artifact, "clients": args.clients, "queue": args.queue, "machine": machine(),
        "server_memory_start": memory(proc.pid), "waves": []}
    try:
        asyncio.run(wave(url, requests[:3], retry=False))  # warm-up: every graph loaded before the first reading
        for number in range(args.waves + args.retry_waves):
            retry = number >= args.waves
            before, counters = memory(proc.pid), httpx.get(f"{url}/health").json()["counters"]
            started = time.perf_counter()
            results = asyncio.run(wave(url, requests, retry))
            seconds = time.perf_counter() - started
            after, now = memory(proc.pid), httpx.get(f"{url}/health").json()
            delta = {k: now["counters"].get(k, 0) - counters.get(k, 0) for k in ("accepted", "completed", "rejected")}
            entry = {"retrying": retry, "seconds": round(seconds, 2), **summary(results), "server_counters": delta,
                     "memory_before": before, "memory_after": after}
            served = sum(r["status"] == 200 for r in results)
            entry["none_lost_or_duplicated"] = (not entry["other"] and delta["accepted"] == delta["completed"] == served
                                                and delta["rejected"] == sum(r["tries"] - 1 for r in results)
                                                + entry["rejected_503"])
            report["waves"].append(entry)
            print(json.dumps({k: v for k, v in entry.items() if k != "other"}))
        report["still_answers"] = httpx.get(f"{url}/health", timeout=10).json()["status"] == "ready"
    finally:
        proc.send_signal(signal.SIGTERM)
        report["server_exit_code"] = proc.wait(60)
        report["server_log_tracebacks"] = log.read_text().count("Traceback")
    report["all_correct"] = all(w["served_wrong"] == 0 and w["none_lost_or_duplicated"] for w in report["waves"]) \
        and all(w["served_correct"] == args.clients for w in report["waves"] if w["retrying"]) \
        and report["server_log_tracebacks"] == 0
    out = RESULTS / "serve_load.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}; all correct: {report['all_correct']}, exit code {report['server_exit_code']}")
    return 0 if report["all_correct"] and report["server_exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
