"""TensorRT behind the runner seam (needs TensorRT, polygraphy and an NVIDIA GPU; never run on our CPU machines).

Thin on TensorRT's own API: a plan is deserialized once per graph (polygraphy's EngineFromBytes), and
each call sets input shapes, picks the TensorRT optimization profile that fits them (the profiles come
from the manifest's engines section), and binds every input and output by device address (`set_tensor_address`), then `execute_async_v3`. Outputs the caller passes are
written in place (the KV cache, the next z); others land in scratch buffers the runner allocated once
per shape. Handles are polygraphy `cuda.DeviceArray`s or `cuda.DeviceView`s over them.

The LLM runs in its portable form here: its attention concatenates past and new K/V, so the cache moves
between two pre-allocated buffers (no per-call allocation, one copy per call). In-place KV on TensorRT
needs TensorRT >= 10.15's IKVCacheUpdateLayer (the cache must be a network input with a static length,
its output aliases that memory; write indices per row = our cache lengths) with IAttentionLayer, or the
TensorRT-LLM GPT attention plugin; see README "Engines".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jflow.artifact.brief import describe
from jflow.artifact.engines import EngineIdentity
from jflow.engines.machine import TENSORRT_HOWTO, TensorRTMissing, import_tensorrt, probe_identity
from jflow.errors import InputError, JFlowError
from jflow.runtime.backends.base import BackendUnavailable, BaseBackend, BaseRunner, check_io, graph_error


INSTEAD = "or run this artifact on ONNX Runtime instead with --backend onnxruntime"
FIXES = {"absent": TENSORRT_HOWTO, "broken": "repair or reinstall it " + TENSORRT_HOWTO.removeprefix("install it "),
         "no_gpu": "run on a machine with an NVIDIA GPU"}


def open_tensorrt(section: dict, requested: str) -> "TensorRTBackend | None":
    """The TensorRT backend for the artifact's engines. With requested="auto", None when TensorRT is not
    installed (ONNX Runtime runs the graphs). Anything else that stops TensorRT is one BackendUnavailable
    line: what is missing, how to get it, how to run on ONNX Runtime instead."""
    who = ("--backend tensorrt: " if requested == "tensorrt" else
           "this artifact has TensorRT engines and --backend auto uses them where TensorRT is installed: ")
    try:
        import_tensorrt()  # installed at all? (apart from the GPU probe, which may be patched or absent)
        identity = probe_identity()
    except TensorRTMissing as exc:
        if requested == "auto" and exc.kind == "absent":
            return None
        raise BackendUnavailable(f"{who}{exc}; {FIXES[exc.kind]}, {INSTEAD}") from None
    try:
        return TensorRTBackend(section, identity)
    except JFlowError:  # engines for another TensorRT or GPU: says what to rebuild
        raise
    except ImportError as exc:  # polygraphy (engine loading, CUDA buffers) missing
        raise BackendUnavailable(f"{who}the TensorRT backend needs polygraphy and cuda-python ({describe(exc)}); "
                                 f"pip install polygraphy cuda-python, {INSTEAD}") from None
    except Exception as exc:  # polygraphy could not start CUDA: no driver, no libcudart
        raise BackendUnavailable(f"{who}CUDA could not be set up ({describe(exc)}); check the NVIDIA driver and "
                                 f"CUDA 12, {INSTEAD}") from None


def fits(profile: dict, shapes: dict[str, tuple]) -> bool:
    for name, shape in shapes.items():
        low, _, high = profile["shapes"][name]
        if len(shape) != len(low) or any(not lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
            return False
    return True


def select_profile(profiles: list[dict], shapes: dict[str, tuple]) -> int:
    """Index of the first optimization profile whose ranges hold every input shape; a clear error when none does."""
    for index, profile in enumerate(profiles):
        if fits(profile, shapes):
            return index
    described = ", ".join(f"{n}={list(s)}" for n, s in shapes.items() if not n.startswith("past_"))
    raise InputError(f"no optimization profile holds these shapes ({described}); the engines were built for smaller "
                     "limits: rebuild with larger --max-batch / --max-context")


class TrtRunner(BaseRunner):
    def __init__(self, backend: "TensorRTBackend", name: str, plan: Path, profiles: list[dict], entry: dict):
        super().__init__(backend, name, entry)
        self.plan, self.profiles = plan, profiles
        self.context = None
        self.scratch: dict[str, Any] = {}

    def activate(self) -> None:
        if self.context is not None:
            return
        import tensorrt as trt
        from polygraphy.backend.trt import EngineFromBytes
        try:
            self.engine = EngineFromBytes(self.plan.read_bytes())()
            self.context = self.engine.create_execution_context()
        except Exception as exc:
            raise graph_error(self.name, f"TensorRT cannot load {self.plan.name}", exc) from None
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        engine_dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        check_io(self.name, self.entry, {n: engine_dtypes[n].name for n in names if n not in self.outputs},
                 {n: engine_dtypes[n].name for n in self.outputs})
        self.output_dtypes = {n: engine_dtypes[n] for n in self.outputs}
        self.profile = 0

    def deactivate(self) -> None:
        self.context = self.engine = None
        self.scratch.clear()

    def bind(self, feeds: dict[str, Any], given: dict[str, Any], wanted: list[str]) -> tuple:
        """Setting a context's shapes and addresses is cheap: done on every call (no binding to keep)."""
        b, ctx = self.backend, self.context
        feeds = {n: b.upload(v) if isinstance(v, np.ndarray) else v for n, v in feeds.items()}
        index = select_profile(self.profiles, {n: tuple(v.shape) for n, v in feeds.items()})
        if index != self.profile:
            ctx.set_optimization_profile_async(index, b.stream.ptr)
            self.profile = index
        for name, handle in feeds.items():
            ctx.set_input_shape(name, tuple(handle.shape))
            ctx.set_tensor_address(name, handle.ptr)
        results = {}
        for name in self.outputs:  # TensorRT needs every output bound
            shape = tuple(ctx.get_tensor_shape(name))
            handle = given.get(name)
            if handle is None:
                handle = self.scratch.get(name)
                if handle is None or tuple(handle.shape) != shape:
                    handle = self.scratch[name] = b.empty(shape, self.output_dtypes[name])
            ctx.set_tensor_address(name, handle.ptr)
            if name in wanted:
                results[name] = handle
        return ctx, results

    def execute(self, bound: tuple) -> dict[str, Any]:
        ctx, results = bound
        b = self.backend
        try:
            if not ctx.execute_async_v3(b.stream.ptr):
                raise RuntimeError("execute_async_v3 returned false")
            b.stream.synchronize()
        except Exception as exc:
            raise graph_error(self.name, "TensorRT could not run it", exc) from None
        # Scratch buffers are reused by the next call: hand out copies of the ones the caller asked for.
        return {n: b.copy(h) for n, h in results.items()}


class TensorRTBackend(BaseBackend):
    name = "tensorrt"
    device = "cuda"

    def __init__(self, section: dict, identity: EngineIdentity | None = None):
        from polygraphy import cuda
        super().__init__()
        (identity or probe_identity()).check_built_for(EngineIdentity.from_section(section))
        self.section, self.cuda = section, cuda
        self.stream = cuda.Stream()

    def runner(self, name: str, manifest) -> TrtRunner:
        """The runner of a graph's plan, found in the manifest's engines section (paths relative to the artifact)."""
        engines = manifest.engines.tensorrt
        plan = None if engines is None else engines.graphs.get(name)
        if plan is None:
            raise JFlowError(f"no TensorRT engine for {name} in this artifact; build it with "
                             f"`jflow-export build DIR --target tensorrt --components {name}`")
        return TrtRunner(self, name, manifest.path(plan.plan), plan.profiles, manifest.graph(name))

    def allocate(self, shape: tuple, dtype: np.dtype) -> Any:
        from polygraphy.datatype import DataType
        return self.cuda.DeviceArray(shape=shape, dtype=DataType.from_dtype(dtype))

    def write(self, array: np.ndarray, out: Any) -> Any:
        out = self.allocate(array.shape, array.dtype) if out is None else out
        self.cuda.wrapper().memcpy(dst=out.ptr, src=array.ctypes.data, nbytes=array.nbytes,
                                   kind=self.cuda.MemcpyKind.HostToDevice, stream_ptr=self.stream.ptr)
        self.stream.synchronize()
        return out

    def view(self, handle: Any, shape: Sequence[int]) -> Any:
        return self.cuda.DeviceView(ptr=handle.ptr, shape=tuple(int(d) for d in shape), dtype=handle.dtype)

    def copy(self, handle: Any) -> Any:
        out = self.empty(handle.shape, handle.dtype)
        self.cuda.wrapper().memcpy(dst=out.ptr, src=handle.ptr, nbytes=handle.nbytes,
                                   kind=self.cuda.MemcpyKind.DeviceToDevice, stream_ptr=self.stream.ptr)
        return out

    def read(self, handle: Any) -> np.ndarray:
        return np.asarray(handle.numpy())
