"""The runner seam: `base.py` declares it and does what every backend shares once; `onnxruntime.py` and
`tensorrt.py` implement it (Triton's BLS runner lives with the serving code, `jflow/serving/triton`).
`make_backend` is the one place that names a concrete backend."""

from __future__ import annotations

from jflow.errors import InputError
from jflow.runtime.backends.base import (BACKENDS, NUMPY_DTYPES, Backend, BackendUnavailable, BaseBackend, BaseRunner,
                                         GraphRunner, Hook, HostTensors, Outputs, Prepared, check_io, graph_error)

__all__ = ["BACKENDS", "NUMPY_DTYPES", "Backend", "BackendUnavailable", "BaseBackend", "BaseRunner", "GraphRunner",
           "Hook", "HostTensors", "Outputs", "Prepared", "check_io", "graph_error", "make_backend"]


def make_backend(backend: str = "auto", providers: list[str] | None = None, threads: int | None = None,
                 engines: dict | None = None, spin: bool = True) -> Backend:
    """'auto' picks TensorRT when the artifact has engines and TensorRT is installed, else ONNX Runtime (with
    its GPU providers when installed, else the CPU). `engines` is the manifest's engines section.
    threads / spin: ONNX Runtime's intra-op threads per session, and whether its workers spin during a run
    (they stop when it ends; spin=False: they always sleep, for cores shared with other processes)."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    section = (engines or {}).get("tensorrt")
    if backend == "tensorrt" and not section:
        raise InputError("this artifact has no TensorRT engines; build them on the device with "
                         "`jflow-export build DIR --target tensorrt`")
    if section and backend in ("tensorrt", "auto"):
        # auto: engines built elsewhere and no TensorRT here, ONNX Runtime runs the graphs (None); TensorRT
        # here but broken, no GPU, stale engines: an error, never a silent slow run
        from jflow.runtime.backends.tensorrt import open_tensorrt
        trt = open_tensorrt(section, requested=backend)
        if trt is not None:
            return trt
    try:
        from jflow.runtime.backends.onnxruntime import OnnxRuntimeBackend
        return OnnxRuntimeBackend(providers, threads, spin)
    except (ImportError, OSError) as exc:  # not installed, or a shared library of it missing
        raise BackendUnavailable(f"the onnxruntime backend needs onnxruntime ({type(exc).__name__}: {exc}); "
                                 "pip install onnxruntime") from None
