"""Timing spans for profiling: statistics per stage, a Chrome-trace file (opens in Perfetto), and NVTX
ranges when the `nvtx` package is installed (so Nsight Systems shows the same names)."""

from __future__ import annotations

import json
import os
import resource
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from jflow.fsutil import atomic_write_bytes

try:  # optional: NVTX ranges for Nsight Systems
    import nvtx as _nvtx
except Exception:  # not installed (or no CUDA): spans are still timed and traced
    _nvtx = None


class Tracer:
    """Records named spans; `events()` gives Chrome-trace 'X' events in microseconds."""

    def __init__(self):
        self.origin = time.perf_counter_ns()
        self.spans: list[tuple[str, int, int, int, dict]] = []

    @contextmanager
    def span(self, name: str, **args):
        if _nvtx is not None:
            _nvtx.push_range(name)
        start = time.perf_counter_ns()
        try:
            yield
        finally:
            end = time.perf_counter_ns()
            if _nvtx is not None:
                _nvtx.pop_range()
            self.spans.append((name, start - self.origin, end - start, threading.get_ident(), args))

    def events(self) -> list[dict]:
        pid = os.getpid()
        return [{"name": name, "ph": "X", "ts": start / 1e3, "dur": dur / 1e3, "pid": pid, "tid": tid,
                 "cat": name.split(".")[0], "args": args} for name, start, dur, tid, args in self.spans]

    def write_chrome_trace(self, path: str | Path, metadata: dict | None = None) -> None:
        trace = {"traceEvents": self.events(), "displayTimeUnit": "ms", "otherData": metadata or {}}
        atomic_write_bytes(path, json.dumps(trace).encode("utf-8"))


def summarize(times_s: list[float]) -> dict:
    ms = np.asarray(times_s) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "min_ms": float(ms.min()), "runs": len(ms)}


def device_memory_used_mib() -> float | str:
    """GPU memory in use on device 0 (all processes), via cuda-python; a reason string when unavailable."""
    try:
        from cuda import cudart
        err, free, total = cudart.cudaMemGetInfo()
        if int(err) != 0:
            return f"cudaMemGetInfo failed ({err})"
        return round((total - free) / 2**20, 1)
    except Exception as exc:  # cuda-python missing, or no device
        return f"not measured: {type(exc).__name__}: {exc}"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
