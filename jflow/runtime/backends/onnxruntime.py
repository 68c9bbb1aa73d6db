"""ONNX Runtime behind the runner seam (CPU, and CUDA when onnxruntime-gpu is installed).

Handles: numpy arrays on the CPU (ORT binds their memory directly, no copy), `CudaTensor`s on CUDA.
Every call binds inputs and outputs by pointer through IOBinding, so a pre-allocated output (the KV
cache, the next z) is written where it already lives, and an input that is also an output (the KV
cache of the fused LLM) is updated in place.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from jflow.artifact.contract import disabled_optimizers
from jflow.errors import InputError, JFlowError
from jflow.runtime.backends.base import BaseRunner, HostTensors, Prepared, check_io, graph_error

GPU_PROVIDERS = ("CUDAExecutionProvider",)  # TensorRT runs through our own TensorRT backend instead


@dataclass
class CudaTensor:
    """A device buffer (or a view of its first elements, with another shape) on the CUDA provider."""
    value: Any  # the OrtValue that owns the memory
    shape: tuple
    dtype: np.dtype

    @property
    def ptr(self) -> int:
        return self.value.data_ptr()


class Bound(NamedTuple):
    """A bound call: the IOBinding and the session that made it (a binding runs only on its own session)."""
    session: Any
    binding: Any
    keep: list  # host arrays converted for this binding must outlive it
    given: int  # outputs bound to the caller's buffers; those onnxruntime allocated come after them
    wanted: list


def tapped_model(path: Path, taps, name: str = "") -> bytes:
    """The graph at `path` (without its weights) with the intermediate tensors `taps` as extra outputs, for a
    session that reads its weights from path's folder. Host-side: needs the onnx package."""
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    given = {i.name for i in model.graph.input}  # a graph input is there already: nothing to add
    made = {o for node in model.graph.node for o in node.output} | given
    missing = [t for t in taps if t not in made]
    if missing:
        raise JFlowError(f"jflow bug: graph {name or path.stem} ({path.name}) computes no tensor {missing[0]!r} to tap")
    outputs = {o.name for o in model.graph.output}
    for tensor in taps:
        if tensor not in outputs and tensor not in given:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    return model.SerializeToString()


class HostOnAsk(Mapping):
    """Tapped OrtValues copied to the host one at a time, as a hook reads them: a hook that keeps a statistic
    of each holds one copy at a time, not one of every tapped tensor (0.6 GB in a full-size prefill)."""

    def __init__(self, values: dict):
        self.values = values

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name].numpy()

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


class OrtRunner(BaseRunner):
    binds_once = True  # IOBinding holds the buffers' addresses: a prepared call only runs

    def __init__(self, backend: "OnnxRuntimeBackend", name: str, path: Path, entry: dict, exported: Path | None = None):
        super().__init__(backend, name, entry)
        self.path, self.exported = path, exported or path  # taps name the exported graph's tensors
        self.session = None
        self.taps: list[str] = []
        self._opening = threading.Lock()  # two threads' first calls must not make two sessions

    def tap(self, tensors) -> None:
        if self.session is not None:
            raise JFlowError(f"jflow bug: graph {self.name} is open already; tap its tensors before its first call")
        self.taps = list(tensors)

    def activate(self) -> None:
        if self.session is not None:
            return
        with self._opening:
            if self.session is None:
                disabled = disabled_optimizers(self.entry)
                session = self.backend.tapped_session(self.name, self.exported, self.taps, disabled) if self.taps \
                    else self.backend.session(self.name, self.path, disabled)
                check_io(self.name, self.entry,
                         {t.name: _ORT_TYPES.get(t.type, t.type) for t in session.get_inputs()},
                         {t.name: _ORT_TYPES.get(t.type, t.type) for t in session.get_outputs()
                          if t.name not in self.taps})
                self.session = session

    def deactivate(self) -> None:
        self.session = None

    def bind(self, feeds: dict[str, Any], given: dict[str, Any], wanted: list[str]) -> Bound:
        b, session = self.backend, self.session
        if session is None:  # released by another thread after activate
            raise self._released()
        binding = session.io_binding()
        keep = []
        for name, value in feeds.items():
            if isinstance(value, np.ndarray) and b.device != "cpu":
                value = b.upload(value)
            keep.append(value)
            binding.bind_input(name, b.device, 0, *b.describe(value))
        for name, handle in given.items():
            binding.bind_output(name, b.device, 0, *b.describe(handle))
        for name in [*wanted, *self.taps]:  # taps last: onnxruntime allocates them on every run
            binding.bind_output(name, b.device)
        return Bound(session, binding, keep, len(given), wanted)

    def execute(self, bound: Bound) -> dict[str, Any]:
        if self.session is None:  # deactivated (Pipeline.close) after this call was bound
            raise self._released()
        try:
            bound.session.run_with_iobinding(bound.binding)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise graph_error(self.name, f"onnxruntime could not run it on {self.backend.device}", exc) from None
        if not bound.wanted and not self.taps:
            return {}
        values = bound.binding.get_outputs()[bound.given:]
        if self.taps:
            self.report_taps(HostOnAsk(dict(zip(self.taps, values[len(bound.wanted):]))))
        return {n: self.backend.adopt(v) for n, v in zip(bound.wanted, values)}

    def check_bound(self, prepared: Prepared) -> None:
        if self.session is None:
            raise self._released()

    def _released(self) -> JFlowError:
        return JFlowError(f"graph {self.name}: its session was released (the Pipeline was closed) while a call "
                          "was using it; load the artifact again with Pipeline.load(...)")


class OnnxRuntimeBackend(HostTensors):
    name = "onnxruntime"

    def __init__(self, providers: list[str] | None = None, threads: int | None = None, spin: bool = True):
        import onnxruntime as ort
        super().__init__()
        self.ort = ort
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in available]
        if missing:
            raise InputError(f"onnxruntime here has no {', '.join(missing)} (available: {', '.join(available)}); "
                             "install onnxruntime-gpu for the CUDA provider")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads must be a whole number >= 1, got {threads!r}")
        self.providers, self.threads, self.spin = providers, threads, spin
        self.device = "cuda" if providers[0] in GPU_PROVIDERS else "cpu"

    # ---- graphs ----------------------------------------------------------------------------------
    def session(self, name: str, path: Path, disabled: list[str] = ()):
        options = self.options()
        try:
            return self.ort.InferenceSession(str(path), sess_options=options, providers=self.providers,
                                             disabled_optimizers=list(disabled) or None)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise graph_error(name, f"onnxruntime cannot open {path.name}", exc) from None

    def options(self):
        options = self.ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = self.threads or 0
        # spin: workers spin between the kernels of a run (a decode step is hundreds of small kernels) and
        # stop when the run ends, because the loops alternate between sessions (gen_encoder -> llm ->
        # gen_decoder), each with its own pool, and one session's spinning workers would take the cores
        # from the next. Measured on 2 cores: SmolLM2 decode 15.2 ms/token (16.4 sleeping), a bench-preset
        # ODE step ~935 ms (~1000 spinning on). spin=False: workers always sleep, for when other processes
        # compete for the cores. (A process-wide shared pool is as fast, but forces every ORT session of
        # the host app to use it.)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin else "0")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        return options

    def tapped_session(self, name: str, path: Path, taps: list[str], disabled: list[str] = ()):
        """A session of the graph at `path` that also gives the intermediate tensors `taps` (its weights read
        where they lie). Host-side tooling only: it needs the onnx package, which the runtime does not."""
        model = tapped_model(path, taps, name)
        options = self.options()
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(path.parent))
        try:
            return self.ort.InferenceSession(model, sess_options=options,
                                             providers=self.providers, disabled_optimizers=list(disabled) or None)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise graph_error(name, f"onnxruntime cannot open {path.name} with taps", exc) from None

    def runner(self, name: str, manifest) -> OrtRunner:
        return OrtRunner(self, name, self.graph_file(name, manifest), manifest.graph(name), manifest.graph_path(name))

    def graph_file(self, name: str, manifest) -> Path:
        """The graph's file: the one `build --target onnxruntime` saved after ORT's offline optimization when
        this onnxruntime made it, else the exported one."""
        optimized = manifest.engines.optimized_graph(name, self.ort.__version__)
        return manifest.path(optimized) if optimized is not None else manifest.graph_path(name)

    # ---- tensors (host arrays on the CPU; CudaTensor on the CUDA provider) ----------------------------
    def allocate(self, shape: tuple, dtype: np.dtype) -> Any:
        if self.device == "cpu":
            return super().allocate(shape, dtype)
        value = self.ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype.type, self.device, 0)
        return CudaTensor(value, shape, dtype)

    def write(self, array: np.ndarray, out: Any) -> Any:
        if isinstance(out, np.ndarray) or (out is None and self.device == "cpu"):
            return super().write(array, out)
        if out is None:
            out = self.allocate(array.shape, array.dtype)
        if out.shape == tuple(out.value.shape()):
            out.value.update_inplace(np.asarray(array, dtype=out.dtype, order="C").reshape(out.shape))
        else:
            raise NotImplementedError("jflow: uploading into a view of a CUDA buffer is not supported")
        return out

    def view(self, handle: Any, shape) -> Any:
        if isinstance(handle, np.ndarray):
            return super().view(handle, shape)
        return CudaTensor(handle.value, tuple(int(d) for d in shape), handle.dtype)

    def read(self, handle: Any) -> np.ndarray:
        if isinstance(handle, np.ndarray):
            return super().read(handle)
        if handle.shape != tuple(handle.value.shape()):
            raise NotImplementedError("jflow: reading a view of a CUDA buffer is not supported")
        return handle.value.numpy()

    def describe(self, handle: Any) -> tuple:
        """(element type, shape, pointer) for IOBinding."""
        if isinstance(handle, np.ndarray):
            return handle.dtype.type, list(handle.shape), handle.ctypes.data
        return handle.dtype.type, list(handle.shape), handle.ptr

    def adopt(self, value) -> Any:
        """A handle for an OrtValue that onnxruntime allocated."""
        if self.device == "cpu":
            return value.numpy()
        return CudaTensor(value, tuple(value.shape()), _ORT_ELEMENT[value.data_type()])


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32"}
_ORT_ELEMENT = {"tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16),
                "tensor(int64)": np.dtype(np.int64), "tensor(int32)": np.dtype(np.int32)}
