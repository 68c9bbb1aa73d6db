"""Which engine target a build uses, and a clear answer when TensorRT or a GPU is missing."""

from __future__ import annotations

from dataclasses import dataclass

from jflow.artifact.engines import EngineIdentity
from jflow.engines.machine import TensorRTMissing, probe_identity
from jflow.errors import JFlowError

TARGETS = ("auto", "tensorrt", "onnxruntime")

INSTALL_HELP = """\
How to get TensorRT (10.3 or newer):
  Jetson (Orin):   JetPack 6 ships it: sudo apt install nvidia-jetpack, then python3 -c "import tensorrt"
                   (the python3-libnvinfer package; use the system Python or a venv with --system-site-packages)
  Desktop / server: pip install tensorrt   (needs an NVIDIA driver and CUDA 12), and pip install cuda-python
{next_step}"""
READY = """The ONNX artifact in {out} is ready: copy the folder to the device and run there
  jflow-export build {out} --target tensorrt"""
NOT_YET = """{out} holds no ONNX artifact yet: export it here with
  jflow-export onnx CHECKPOINT --out {out} --precision fp16
then copy the folder to the device and run there
  jflow-export build {out} --target tensorrt"""


class TargetUnavailable(JFlowError):
    """The requested engine target cannot be built on this machine."""


@dataclass(frozen=True)
class TensorRTStatus:
    available: bool
    reason: str = ""
    version: str = ""
    gpu_name: str = ""
    compute_capability: str = ""

    @property
    def identity(self) -> EngineIdentity:
        return EngineIdentity(self.version, self.gpu_name, self.compute_capability)


def tensorrt_status() -> TensorRTStatus:
    try:
        identity = probe_identity()
    except TensorRTMissing as exc:  # not installed, failing to import (a registry stub, no libnvinfer), or no GPU
        return TensorRTStatus(False, str(exc))
    return TensorRTStatus(True, version=identity.tensorrt_version, gpu_name=identity.gpu_name,
                          compute_capability=identity.compute_capability)


def choose_target(requested: str, out: str, status: TensorRTStatus | None = None,
                  artifact_ready: bool = True) -> tuple[str, str]:
    """(target, note). `tensorrt` without TensorRT+GPU raises; `auto` falls back to onnxruntime and says so."""
    if requested not in TARGETS:
        raise TargetUnavailable(f"unknown target {requested!r}; choose one of {', '.join(TARGETS)}")
    if requested == "onnxruntime":
        return "onnxruntime", ""
    status = status or tensorrt_status()
    if status.available:
        return "tensorrt", f"TensorRT {status.version} on {status.gpu_name} (sm {status.compute_capability})"
    if requested == "tensorrt":
        raise TargetUnavailable(f"cannot build TensorRT engines here: {status.reason}.\n"
                                + INSTALL_HELP.format(next_step=(READY if artifact_ready else NOT_YET).format(out=out)))
    return "onnxruntime", (f"TensorRT is not available ({status.reason}); building the ONNX Runtime target "
                           f"instead. For TensorRT engines, build on the device:\n  jflow-export build {out} "
                           "--target tensorrt")
