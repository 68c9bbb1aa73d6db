"""The backend seam: open a graph, run it on named tensors, move arrays on and off the device.

Tensors are backend handles. For ONNX Runtime they are OrtValues bound with IOBinding, so outputs
(the KV cache, the ODE state) stay where the provider computed them and feed the next call without a
host round trip; on the CPU provider that is the same code path, just with device "cpu". The sampler
and the decoder are written against this interface only; the TensorRT backend (issue 5) implements it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jflow.errors import InputError, JFlowError

BACKENDS = ("auto", "onnxruntime", "tensorrt")
# Preferred ONNX Runtime providers, best first; the CPU is always last.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64}


class Graph(Protocol):
    def run(self, feeds: dict[str, Any], outputs: list[str] | None = None) -> dict[str, Any]: ...


class Backend(Protocol):
    name: str

    def open(self, path: Path, entry: dict) -> Graph: ...
    def to_device(self, array: np.ndarray) -> Any: ...
    def to_host(self, handle: Any) -> np.ndarray: ...


@dataclass
class OrtGraph:
    session: Any
    device: str
    ort: Any
    dtypes: dict  # input name -> numpy dtype from the manifest contract

    def run(self, feeds: dict[str, Any], outputs: list[str] | None = None) -> dict[str, Any]:
        binding = self.session.io_binding()
        for name, value in feeds.items():
            if not isinstance(value, self.ort.OrtValue):
                value = self.ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value, dtype=self.dtypes[name]),
                                                              self.device, 0)
            binding.bind_ortvalue_input(name, value)
        names = outputs or [o.name for o in self.session.get_outputs()]
        for name in names:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        return dict(zip(names, binding.get_outputs()))


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort
        self.ort = ort
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in available]
        if missing:
            raise InputError(f"onnxruntime here has no {', '.join(missing)} (available: {', '.join(available)}); "
                             "install onnxruntime-gpu for CUDA/TensorRT providers")
        self.providers = providers
        self.device = "cuda" if providers[0] in GPU_PROVIDERS else "cpu"
        self.threads = threads

    def open(self, path: Path, entry: dict) -> OrtGraph:
        options = self.ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        try:
            session = self.ort.InferenceSession(str(path), sess_options=options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise JFlowError(f"onnxruntime cannot open {path}: {exc}") from exc
        dtypes = {t["name"]: NUMPY_DTYPES[t["dtype"]] for t in entry["inputs"]}
        return OrtGraph(session, self.device, self.ort, dtypes)

    def to_device(self, array: np.ndarray) -> Any:
        return self.ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def to_host(self, handle: Any) -> np.ndarray:
        return handle.numpy() if isinstance(handle, self.ort.OrtValue) else np.asarray(handle)


def make_backend(backend: str = "auto", providers: list[str] | None = None, threads: int | None = None,
                 engines: dict | None = None) -> Backend:
    """'auto' picks TensorRT when the artifact has engines for this TensorRT and GPU, else ONNX Runtime
    (with its GPU providers when installed, else the CPU). `engines` is the manifest's engines section."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    section = (engines or {}).get("tensorrt")
    if backend == "tensorrt":
        if not section:
            raise InputError("this artifact has no TensorRT engines; build them on the device with "
                             "`jflow-export build --out DIR --target tensorrt`")
        from jflow.runtime.tensorrt_backend import TensorRTBackend
        return TensorRTBackend(section)
    if backend == "auto" and section:
        try:
            from jflow.runtime.tensorrt_backend import TensorRTBackend
            return TensorRTBackend(section)
        except Exception:  # no TensorRT here, or engines for another GPU: ONNX Runtime still runs
            pass
    try:
        return OnnxRuntimeBackend(providers, threads)
    except ImportError as exc:
        raise JFlowError(f"the onnxruntime backend needs onnxruntime ({exc}); pip install onnxruntime") from exc
