"""TensorRT engine identity, in one place: which TensorRT and GPU an engine was built for, and the cache key
that decides whether a stored engine may be reused. The build writes them and the runtime checks them
with the same code, so the two can never disagree about what makes an engine valid.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from jflow.artifact.brief import describe
from jflow.errors import JFlowError


# What to do without TensorRT, in one place for the build and the runtime.
TENSORRT_HOWTO = ("install it (Jetson: JetPack 6 ships it, `sudo apt install nvidia-jetpack`; desktop or server: "
                  "`pip install tensorrt cuda-python polygraphy`, with an NVIDIA driver and CUDA 12)")


class StaleEngineError(JFlowError):
    """The artifact's engines were built for another TensorRT version or GPU."""


class TensorRTMissing(JFlowError):
    """TensorRT cannot be used here. `kind`: "absent" (not installed: `--backend auto` may then use ONNX
    Runtime without a word), "broken" (installed, fails to import) or "no_gpu"."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def _tensorrt_installed() -> bool:
    try:
        return importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):  # a module already imported without a spec: it is there
        return True


def import_tensorrt():
    """The tensorrt module, or TensorRTMissing: not installed, or installed but failing to import (a missing
    libnvinfer raises OSError or ImportError, a registry stub raises what it likes)."""
    try:
        import tensorrt
    except Exception as exc:
        if not _tensorrt_installed():
            raise TensorRTMissing(f"TensorRT is not installed ({describe(exc)})", "absent") from None
        raise TensorRTMissing(f"the installed TensorRT cannot be loaded ({describe(exc)})", "broken") from None
    return tensorrt


@dataclass(frozen=True)
class EngineIdentity:
    """What a TensorRT plan is bound to: it only deserializes on the same TensorRT and GPU architecture."""
    tensorrt_version: str
    gpu_name: str
    compute_capability: str

    @classmethod
    def from_section(cls, section: dict) -> "EngineIdentity":
        return cls(str(section.get("tensorrt_version")), str(section.get("gpu_name")),
                   str(section.get("compute_capability")))

    def as_dict(self) -> dict:
        return asdict(self)

    def check_built_for(self, built: "EngineIdentity") -> None:
        """StaleEngineError (with what to run) when engines built for `built` cannot run here (self)."""
        if built != self:
            raise StaleEngineError(
                f"the engines were built with TensorRT {built.tensorrt_version} for {built.gpu_name} "
                f"(sm {built.compute_capability}), but this machine has TensorRT {self.tensorrt_version} on "
                f"{self.gpu_name} (sm {self.compute_capability}); rebuild them here with "
                "`jflow-export build DIR --target tensorrt`")


def gpu_identity() -> tuple[str, str]:
    """(GPU name, compute capability) of device 0, via cuda-python or nvidia-smi."""
    try:
        from cuda import cudart  # cuda-python
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return name.strip("\x00 "), f"{props.major}.{props.minor}"
    except Exception:  # not installed, or no usable device: try the next way
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            name, cc = (part.strip() for part in out.stdout.splitlines()[0].split(","))
            if out.returncode == 0:
                return name, cc
        except (OSError, subprocess.SubprocessError, IndexError, ValueError):  # hung, broken or no GPU listed
            pass
    raise RuntimeError("no NVIDIA GPU found (neither cuda-python nor nvidia-smi reports one)")


def probe_identity() -> EngineIdentity:
    """This machine's identity; TensorRTMissing without a usable TensorRT or without a GPU."""
    tensorrt = import_tensorrt()
    version = str(getattr(tensorrt, "__version__", "unknown"))
    try:
        gpu = gpu_identity()
    except RuntimeError as exc:
        raise TensorRTMissing(f"TensorRT {version} is here but unusable: {exc}", "no_gpu") from None
    return EngineIdentity(version, *gpu)


@dataclass(frozen=True)
class EngineKey:
    """An engine is reused only when every field is unchanged."""
    graph: str
    graph_sha256: str      # of the .onnx and its external data, together
    precision: str
    profiles: str          # canonical JSON of the profiles
    tensorrt_version: str
    gpu_name: str
    compute_capability: str

    @classmethod
    def for_graph(cls, manifest_data: dict, graph: str, profiles: list[dict], identity: EngineIdentity) -> "EngineKey":
        onnx_file = manifest_data["graphs"][graph]["file"]
        parts = sorted((rel, digest) for rel, digest in manifest_data["files"].items()
                       if rel == onnx_file or rel.startswith(onnx_file + "."))
        graph_sha = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
        return cls(graph, graph_sha, manifest_data["graphs"][graph].get("precision", manifest_data["precision"]),
                   json.dumps(profiles, sort_keys=True), **identity.as_dict())

    @property
    def identity(self) -> EngineIdentity:
        return EngineIdentity(self.tensorrt_version, self.gpu_name, self.compute_capability)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def folder(self, root: Path) -> Path:
        return root / "engines" / f"{self.graph}-{self.digest}"
