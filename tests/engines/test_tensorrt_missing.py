"""An artifact with TensorRT engines on a machine where TensorRT cannot run: one line each (what is missing,
how to get it, how to run on ONNX Runtime instead), never a traceback.

The machines are made with real Python packages on PYTHONPATH, in a fresh process each: a `tensorrt`
whose import raises OSError (a missing libnvinfer), and an importable `tensorrt` with a `cuda` whose
device query fails and no nvidia-smi on PATH (no GPU).
"""

import os
import shutil
import subprocess
import sys

import pytest

from jflow.artifact.writer import ArtifactWriter
from jflow.engines.targets import tensorrt_status

SECTION = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "graphs": {}}
INSTEAD = "or run this artifact on ONNX Runtime instead with --backend onnxruntime"


@pytest.fixture(scope="module")
def engines_art(tiny_artifact, tmp_path_factory):
    art = shutil.copytree(tiny_artifact, tmp_path_factory.mktemp("trt") / "art")
    ArtifactWriter(art).update({"engines": {"tensorrt": SECTION}})
    return art


def _machine(tmp_path, kind):
    """A folder for PYTHONPATH that makes this process's machine `kind`, and an empty folder for PATH."""
    site = tmp_path / f"site-{kind}"
    if site.exists():
        pass
    elif kind == "oserror":
        (site / "tensorrt").mkdir(parents=True)
        (site / "tensorrt" / "__init__.py").write_text(
            'raise OSError("libnvinfer.so.10: cannot open shared object file: No such file or directory")\n')
    elif kind == "no_gpu":
        (site / "tensorrt").mkdir(parents=True)
        (site / "tensorrt" / "__init__.py").write_text('__version__ = "10.3.0"\n')
        (site / "cuda").mkdir()
        (site / "cuda" / "__init__.py").write_text("")
        (site / "cuda" / "cudart.py").write_text("def cudaGetDeviceProperties(device):\n"
                                                 "    raise RuntimeError('cudaErrorNoDevice: no CUDA-capable device')\n")
    else:
        site.mkdir()  # nothing: TensorRT is not installed
    bin_dir = tmp_path / "empty-bin"
    bin_dir.mkdir(exist_ok=True)
    return site, bin_dir


def _run(tmp_path, kind, *args):
    site, bin_dir = _machine(tmp_path, kind)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path, "PATH": str(bin_dir)}
    proc = subprocess.run([sys.executable, "-c", "from jflow.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    return proc.returncode, out


@pytest.mark.skipif(tensorrt_status().available, reason="TensorRT and a GPU are present here")
def test_backend_tensorrt_without_tensorrt_installed(engines_art, tmp_path):
    rc, out = _run(tmp_path, "absent", "generate", engines_art, "a cube", "-o", tmp_path / "x.png", "--steps", "1",
                   "--backend", "tensorrt")
    assert rc == 1 and "--backend tensorrt: TensorRT is not installed" in out
    assert "pip install tensorrt" in out and "JetPack" in out and INSTEAD in out
    assert not (tmp_path / "x.png").exists()
    rc, out = _run(tmp_path, "absent", "generate", engines_art, "a cube", "-o", tmp_path / "x.png", "--steps", "1")
    assert rc == 0 and (tmp_path / "x.png").is_file()  # auto: engines built elsewhere, ONNX Runtime runs here


def test_a_tensorrt_whose_import_raises_oserror(engines_art, tmp_path):
    for args in (["generate", engines_art, "a cube", "-o", tmp_path / "x.png", "--steps", "1"],
                 ["verify", engines_art, "--backend", "tensorrt"]):
        rc, out = _run(tmp_path, "oserror", *args)
        assert rc == 1 and "the installed TensorRT cannot be loaded (OSError: libnvinfer.so.10" in out, out
        assert "repair or reinstall it" in out and INSTEAD in out
    assert not (tmp_path / "x.png").exists()


def test_an_importable_tensorrt_without_a_gpu(engines_art, tmp_path):
    rc, out = _run(tmp_path, "no_gpu", "generate", engines_art, "a cube", "-o", tmp_path / "x.png", "--steps", "1")
    assert rc == 1 and "this artifact has TensorRT engines and --backend auto uses them" in out
    assert "TensorRT 10.3.0 is here but unusable: no NVIDIA GPU found" in out and INSTEAD in out
    assert len(out.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists()
