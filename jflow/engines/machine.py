"""What this machine can run engines with: its TensorRT and its GPU. Stdlib only (tensorrt and cuda-python
are imported when asked, nvidia-smi is run when cuda-python cannot say).

The contract (`jflow.artifact.engines`) says which TensorRT and GPU an engine was built for; this module
finds out which ones are here, so the build (`jflow.engines.targets`) and the runtime's TensorRT backend
compare the same two things. It lies below the runtime: it imports nothing of jflow but the contract.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess

from jflow.artifact.brief import describe
from jflow.artifact.engines import EngineIdentity
from jflow.errors import JFlowError

# What to do without TensorRT, in one place for the build and the runtime.
TENSORRT_HOWTO = ("install it (Jetson: JetPack 6 ships it, `sudo apt install nvidia-jetpack`; desktop or server: "
                  "`pip install tensorrt cuda-python polygraphy`, with an NVIDIA driver and CUDA 12)")


class TensorRTMissing(JFlowError):
    """TensorRT cannot be used here. `kind`: "absent" (not installed: `--backend auto` may then use ONNX
    Runtime without a word), "broken" (installed, fails to import) or "no_gpu"."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def tensorrt_installed() -> bool:
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
        if not tensorrt_installed():
            raise TensorRTMissing(f"TensorRT is not installed ({describe(exc)})", "absent") from None
        raise TensorRTMissing(f"the installed TensorRT cannot be loaded ({describe(exc)})", "broken") from None
    return tensorrt


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
