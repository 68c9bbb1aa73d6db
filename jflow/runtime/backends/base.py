"""The runner seam, Polygraphy-style: a backend makes graph runners and owns device tensors.

    runner = backend.runner("llm_ort", manifest); runner.activate()
    out = runner.infer({"inputs_embeds": x, ...}, outputs={"logits": logits_buffer})  # written in place
    runner.deactivate()

Tensors are backend handles: numpy arrays on the CPU, device buffers on GPUs. `empty` allocates once,
`upload(array, out=buffer)` writes into an existing buffer (no allocation), `view` gives a smaller
contiguous shape over a buffer's memory, `download` copies to the host. The loops (ODE loop, decoder,
LLM runner) allocate everything before their first step and then only write, infer and read the
logits they must read. ONNX Runtime (CPU, CUDA), TensorRT and Triton's BLS implement it; verify,
profile and the pipeline all go through it; nothing falls back silently.

What every backend shares is written here once: `BaseRunner.infer()` checks the input names, coerces
host feeds to the graph's dtypes, sorts the outputs into given buffers and wanted names, and calls the
hooks around the backend's own `bind` and `execute` (Polygraphy's `infer()` -> `infer_impl()`).
`BaseBackend` does the same for tensors: hooks see every allocation, write and download.
"""

from __future__ import annotations

from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager, Mapping, Protocol, Sequence

import numpy as np

from jflow.artifact.contract import ArtifactError
from jflow.errors import InputError, JFlowError

BACKENDS = ("auto", "onnxruntime", "tensorrt")
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}
Outputs = Mapping[str, Any] | Sequence[str] | None


class Hook:
    """Watches a backend's work (tracing, recording, counting); a hook overrides only what it needs.

    call(runner, feeds): a context manager around each graph call, `infer` or `run` of a prepared binding;
    bind(runner, feeds): before a binding is prepared; tensor(kind): each "alloc", "write" or "download";
    tapped(runner, values): inside a call of a runner asked to `tap` intermediate tensors, their values."""

    def call(self, runner: "BaseRunner", feeds: Mapping[str, Any]) -> ContextManager:
        return nullcontext()

    def bind(self, runner: "BaseRunner", feeds: Mapping[str, Any]) -> None:
        pass

    def tensor(self, kind: str) -> None:
        pass

    def tapped(self, runner: "BaseRunner", values: Mapping[str, np.ndarray]) -> None:
        pass


class GraphRunner(Protocol):
    name: str

    def activate(self) -> None: ...
    def infer(self, feeds: Mapping[str, Any], outputs: Outputs = None) -> dict[str, Any]: ...
    # A loop whose buffers never move binds them once and re-runs: prepare(feeds, outputs) then run(prepared).
    def prepare(self, feeds: Mapping[str, Any], outputs: Mapping[str, Any]) -> "Prepared": ...
    def run(self, prepared: "Prepared") -> None: ...
    def deactivate(self) -> None: ...


class Backend(Protocol):
    name: str
    device: str
    hooks: list[Hook]

    def runner(self, name: str, manifest) -> GraphRunner: ...
    def add_hook(self, hook: Hook) -> None: ...
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


@dataclass
class Prepared:
    """A call made ready once: its feeds and given outputs, and the backend's binding where it has one."""
    feeds: dict[str, Any]
    outputs: dict[str, Any]
    bound: Any = None


class BaseRunner:
    """One graph of the manifest on one backend. A backend implements `bind` (make its call from feeds,
    given output buffers and wanted output names) and `execute` (run it; return the wanted outputs as
    new handles), plus `activate` / `deactivate`. `binds_once`: its binding holds the buffers' addresses,
    so a prepared call is bound at `prepare` and only executed by `run`; otherwise `run` binds each time."""

    binds_once = False

    def __init__(self, backend: "BaseBackend", name: str, entry: dict):
        self.backend, self.name, self.entry = backend, name, entry
        self.dtypes = {t["name"]: np.dtype(NUMPY_DTYPES[t["dtype"]]) for t in entry["inputs"]}
        self.output_names = [t["name"] for t in entry["outputs"]]
        self.hooks = backend.hooks  # the backend's list: a hook added later sees this runner's calls too

    # ---- what a backend implements ------------------------------------------------------------------
    def activate(self) -> None:
        pass

    def deactivate(self) -> None:
        pass

    def bind(self, feeds: dict[str, Any], given: dict[str, Any], wanted: list[str]) -> Any:
        raise NotImplementedError

    def execute(self, bound: Any) -> dict[str, Any]:
        raise NotImplementedError

    def check_bound(self, prepared: Prepared) -> None:
        """Refuse to run a prepared binding that can no longer run (a backend whose session was released)."""

    def tap(self, tensors: Sequence[str]) -> None:
        """Before the graph is opened: hand the values of these intermediate tensors to the hooks' `tapped`
        after every call (Polygraphy's "mark outputs"; calibration measures activation ranges this way in the
        run itself instead of running the graph again). A backend that cannot says so."""
        raise InputError(f"graph {self.name}: the {self.backend.name} backend cannot tap intermediate tensors; "
                         "use the onnxruntime backend")

    def report_taps(self, values: Mapping[str, np.ndarray]) -> None:
        for hook in list(self.hooks):
            hook.tapped(self, values)

    # ---- the seam -----------------------------------------------------------------------------------
    def infer(self, feeds: Mapping[str, Any], outputs: Outputs = None) -> dict[str, Any]:
        """Run on `feeds`; `outputs` maps names to pre-allocated handles (written in place) or lists the
        names to return in new handles (default: every output)."""
        feeds = self.coerce(feeds)
        given, wanted = self.sort_outputs(outputs)
        with self.hooked(feeds):
            self.activate()  # after the hooks: a closed Pipeline's check comes before any file is opened
            results = self.execute(self.bind(feeds, given, wanted))
        return {**given, **results}

    def prepare(self, feeds: Mapping[str, Any], outputs: Mapping[str, Any]) -> Prepared:
        """Bind `feeds` and the pre-allocated `outputs` once; `run` reuses them, so a loop whose buffers
        never move binds nothing per step."""
        for hook in self.hooks:
            hook.bind(self, feeds)
        feeds = self.coerce(feeds)
        given, _ = self.sort_outputs(outputs)
        self.activate()
        return Prepared(feeds, given, self.bind(feeds, given, []) if self.binds_once else None)

    def run(self, prepared: Prepared) -> None:
        self.check_bound(prepared)
        with self.hooked(prepared.feeds):
            bound = prepared.bound if self.binds_once else self.bind(prepared.feeds, prepared.outputs, [])
            self.execute(bound)

    # ---- done once for every backend ----------------------------------------------------------------
    def coerce(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Known input names only (one line naming what the graph takes); host arrays in the graph's dtype,
        C-contiguous (0-d stays 0-d); device handles as they are."""
        out = {}
        for name, value in feeds.items():
            dtype = self.dtypes.get(name)
            if dtype is None:
                raise InputError(f"graph {self.name} has no input {name!r} (it takes {', '.join(self.dtypes)})")
            if isinstance(value, np.ndarray) and (value.dtype != dtype or not value.flags.c_contiguous):
                value = np.asarray(value, dtype=dtype, order="C")
            out[name] = value
        return out

    def sort_outputs(self, outputs: Outputs) -> tuple[dict[str, Any], list[str]]:
        """(buffers given to write into, names wanted in new handles): a mapping gives buffers, a list
        names, None every output."""
        given = dict(outputs) if isinstance(outputs, Mapping) else {}
        wanted = [] if isinstance(outputs, Mapping) else list(outputs or self.output_names)
        unknown = [n for n in [*given, *wanted] if n not in self.output_names]
        if unknown:
            raise InputError(f"graph {self.name} has no output {unknown[0]!r} (it gives {', '.join(self.output_names)})")
        return given, wanted

    def hooked(self, feeds: dict[str, Any]) -> ContextManager:
        if not self.hooks:
            return nullcontext()
        if len(self.hooks) == 1:
            return self.hooks[0].call(self, feeds)
        stack = ExitStack()
        for hook in list(self.hooks):
            stack.enter_context(hook.call(self, feeds))
        return stack


class BaseBackend:
    """Tensors behind hooks: `empty`, `upload`, `download` tell every hook, then call the backend's own
    `allocate`, `write`, `read` (which never call each other's public side, so nothing is counted twice)."""

    name = ""
    device = "cpu"

    def __init__(self):
        self.hooks: list[Hook] = []

    def add_hook(self, hook: Hook) -> None:
        self.hooks.append(hook)

    def remove_hook(self, hook: Hook) -> None:
        self.hooks.remove(hook)

    def _notify(self, kind: str) -> None:
        for hook in self.hooks:
            hook.tensor(kind)

    def empty(self, shape: Sequence[int], dtype) -> Any:
        self._notify("alloc")
        return self.allocate(tuple(int(d) for d in shape), np.dtype(dtype))

    def upload(self, array: np.ndarray, out: Any = None) -> Any:
        self._notify("alloc" if out is None else "write")
        return self.write(np.asarray(array, order="C"), out)  # (ascontiguousarray would make a scalar 1-d)

    def download(self, handle: Any) -> np.ndarray:
        self._notify("download")
        return self.read(handle)

    def allocate(self, shape: tuple, dtype: np.dtype) -> Any:
        raise NotImplementedError

    def write(self, array: np.ndarray, out: Any) -> Any:
        raise NotImplementedError

    def read(self, handle: Any) -> np.ndarray:
        raise NotImplementedError

    def view(self, handle: Any, shape: Sequence[int]) -> Any:
        raise NotImplementedError


class HostTensors(BaseBackend):
    """Tensor handles that are host numpy arrays (ONNX Runtime on the CPU, Triton's BLS)."""

    def allocate(self, shape: tuple, dtype: np.dtype) -> np.ndarray:
        return np.zeros(shape, dtype)  # zero pages cost no memory until written

    def write(self, array: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        if out is None:
            return array.copy()
        np.copyto(out, array.reshape(out.shape), casting="same_kind")
        return out

    def view(self, handle: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        shape = tuple(int(d) for d in shape)
        return handle.reshape(-1)[:int(np.prod(shape))].reshape(shape)

    def read(self, handle: np.ndarray) -> np.ndarray:
        return handle.copy()
