"""TensorRT backend (needs TensorRT, polygraphy and an NVIDIA GPU; untested on our CPU machines).

Thin on polygraphy: engines load with EngineFromBytes, run with TrtRunner; inputs and outputs are
device arrays (polygraphy.cuda), so the KV cache and z stay on the GPU and only the prompt embeddings
go in and the image or tokens come out. polygraphy reuses a runner's output buffers on the next call,
so outputs are copied device-to-device into buffers the caller owns (the KV of step k feeds step k+1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jflow.errors import JFlowError
from jflow.runtime.engine_profiles import select_profile


class StaleEngineError(JFlowError):
    """The artifact's engines were built for another TensorRT version or GPU."""


def check_engines(section: dict, version: str, gpu_name: str, compute_capability: str) -> None:
    """Refuse engines from another TensorRT or GPU with a message to rebuild (never crash inside TensorRT)."""
    built = (section.get("tensorrt_version"), section.get("gpu_name"), section.get("compute_capability"))
    here = (version, gpu_name, compute_capability)
    if built != here:
        raise StaleEngineError(
            f"the engines were built with TensorRT {built[0]} for {built[1]} (sm {built[2]}), but this machine has "
            f"TensorRT {here[0]} on {here[1]} (sm {here[2]}); rebuild them here with "
            "`jflow-export build --out DIR --target tensorrt`")


class TensorRTGraph:
    def __init__(self, plan: Path, profiles: list[dict]):
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
        self.profiles = profiles
        self.runner = TrtRunner(EngineFromBytes(plan.read_bytes()))
        self.runner.activate()
        self.profile = 0

    def run(self, feeds: dict, outputs: list[str] | None = None) -> dict:
        from polygraphy import cuda
        index = select_profile(self.profiles, {n: tuple(v.shape) for n, v in feeds.items()})
        if index != self.profile:
            self.runner.set_profile(index)
            self.profile = index
        results = self.runner.infer(feeds, copy_outputs_to_host=False)
        owned = {}
        for name in outputs or list(results):
            view = results[name]
            owned[name] = copy = cuda.DeviceArray(shape=view.shape, dtype=view.dtype)
            cuda.wrapper().memcpy(dst=copy.ptr, src=view.ptr, nbytes=view.nbytes,
                                  kind=cuda.MemcpyKind.DeviceToDevice)
        return owned


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, section: dict):
        import tensorrt

        from jflow.engines.targets import gpu_identity
        check_engines(section, tensorrt.__version__, *gpu_identity())
        self.section = section
        self.device = "cuda"

    def open(self, path: Path, entry: dict) -> TensorRTGraph:
        name = path.stem
        graph = self.section["graphs"].get(name)
        if graph is None:
            raise JFlowError(f"no TensorRT engine for {name} in this artifact; build it with "
                             f"`jflow-export build --out DIR --target tensorrt --components {name}`")
        return TensorRTGraph(path.parent.parent / graph["plan"], graph["profiles"])

    def to_device(self, array: np.ndarray):
        from polygraphy import cuda
        from polygraphy.datatype import DataType
        array = np.ascontiguousarray(array)
        return cuda.DeviceArray(shape=array.shape, dtype=DataType.from_dtype(array.dtype)).copy_from(array)

    def to_host(self, handle) -> np.ndarray:
        return handle.numpy() if hasattr(handle, "numpy") else np.asarray(handle)
