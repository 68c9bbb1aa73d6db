"""The runner seam, Polygraphy-style: a backend makes graph runners and owns device tensors.

    runner = backend.runner("llm_ort", path, entry); runner.activate()
    out = runner.infer({"inputs_embeds": x, ...}, outputs={"logits": logits_buffer})  # written in place
    runner.deactivate()

Tensors are backend handles: numpy arrays on the CPU, device buffers on GPUs. `empty` allocates once,
`upload(array, out=buffer)` writes into an existing buffer (no allocation), `view` gives a smaller
contiguous shape over a buffer's memory, `download` copies to the host. The loops (ODE loop, decoder,
LLM runner) allocate everything before their first step and then only write, infer and read the
logits they must read. ONNX Runtime (CPU, CUDA) and TensorRT implement it; verify, profile and the
pipeline all go through it; nothing falls back silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from jflow.artifact.contract import ArtifactError
from jflow.errors import InputError, JFlowError

BACKENDS = ("auto", "onnxruntime", "tensorrt")
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}
Outputs = Mapping[str, Any] | Sequence[str] | None


class HostTensors:
    """Tensor handles that are host numpy arrays (ONNX Runtime on the CPU, Triton's BLS)."""

    def empty(self, shape: Sequence[int], dtype) -> np.ndarray:
        return np.zeros(tuple(int(d) for d in shape), np.dtype(dtype))  # zero pages cost no memory until written

    def upload(self, array: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        array = np.asarray(array, order="C")  # (ascontiguousarray would make a scalar 1-d)
        if out is None:
            return array.copy()
        np.copyto(out, array.reshape(out.shape), casting="same_kind")
        return out

    def view(self, handle: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        shape = tuple(int(d) for d in shape)
        return handle.reshape(-1)[:int(np.prod(shape))].reshape(shape)

    def download(self, handle: np.ndarray) -> np.ndarray:
        return handle.copy()


class GraphRunner(Protocol):
    name: str

    def activate(self) -> None: ...
    def infer(self, feeds: Mapping[str, Any], outputs: Outputs = None) -> dict[str, Any]: ...
    # A loop whose buffers never move binds them once and re-runs: prepare(feeds, outputs) then run(prepared).
    def prepare(self, feeds: Mapping[str, Any], outputs: Mapping[str, Any]) -> Any: ...
    def run(self, prepared: Any) -> None: ...
    def deactivate(self) -> None: ...


class Backend(Protocol):
    name: str
    device: str

    def runner(self, name: str, path: Path, entry: dict) -> GraphRunner: ...
    def empty(self, shape: Sequence[int], dtype) -> Any: ...
    def upload(self, array: np.ndarray, out: Any = None) -> Any: ...
    def view(self, handle: Any, shape: Sequence[int]) -> Any: ...
    def download(self, handle: Any) -> np.ndarray: ...


class BackendUnavailable(JFlowError):
    """The backend asked for (or the one the artifact's engines need) cannot run on this machine."""


def graph_error(name: str, what: str, exc: BaseException) -> JFlowError:
    """One clear line for a graph that a backend refused to open or run (never a backend traceback)."""
    text = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {text[0] if text else ''}"[:400]
    return JFlowError(f"graph {name}: {what} ({detail}). Check the artifact with `jflow-export verify DIR`; if it "
                      "fails, re-export it with `jflow-export onnx`")


def check_io(name: str, entry: dict, inputs: dict[str, str], outputs: dict[str, str]) -> None:
    """The graph file must take and give what the manifest says (names and dtypes), or the artifact is
    inconsistent: say which tensor differs instead of failing later inside the backend."""
    problems = []
    for side, actual in (("inputs", inputs), ("outputs", outputs)):
        declared = {t["name"]: t["dtype"] for t in entry[side]}
        if set(actual) != set(declared):
            problems.append(f"{side} are {sorted(actual)} but the manifest says {sorted(declared)}")
            continue
        problems += [f"{side[:-1]} {n} is {actual[n]} but the manifest says {declared[n]}"
                     for n in declared if actual[n] != declared[n]]
    if problems:
        raise ArtifactError(f"graph {name}: {entry['file']} does not match manifest.json: {'; '.join(problems)}. "
                            "The manifest or the graph was altered: re-export the artifact with `jflow-export onnx`")


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
        from jflow.runtime.tensorrt_backend import open_tensorrt
        trt = open_tensorrt(section, requested=backend)
        if trt is not None:
            return trt
    try:
        from jflow.runtime.ort_backend import OnnxRuntimeBackend
        return OnnxRuntimeBackend(providers, threads, spin)
    except (ImportError, OSError) as exc:  # not installed, or a shared library of it missing
        raise BackendUnavailable(f"the onnxruntime backend needs onnxruntime ({type(exc).__name__}: {exc}); "
                                 "pip install onnxruntime") from None
