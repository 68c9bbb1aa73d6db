"""`jflow-export build`: the ONNX Runtime target on CPU, the TensorRT target where TensorRT and a GPU exist."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from jflow.cli import main
from jflow.engines.build import build
from jflow.engines.targets import tensorrt_status
from jflow.runtime.backends import make_backend
from jflow.artifact.manifest import Manifest
from jflow.runtime.pipeline import Pipeline

HAS_TENSORRT = tensorrt_status().available
needs_tensorrt = pytest.mark.skipif(not HAS_TENSORRT, reason="needs TensorRT and an NVIDIA GPU: "
                                    + (tensorrt_status().reason or "present"))


@pytest.fixture
def artifact_copy(tiny_artifact, tmp_path):
    return shutil.copytree(tiny_artifact, tmp_path / "art")


def test_onnxruntime_target(artifact_copy):
    assert build(artifact_copy, target="onnxruntime", log=lambda _: None) == "onnxruntime"
    m = Manifest.load(artifact_copy)  # every new file is hashed, the manifest still checks out
    graphs = m.data["engines"]["onnxruntime"]["graphs"]
    # Every graph the ORT runtime runs but the LLM, whose fused form is already ORT's (weights never twice).
    assert set(graphs) == {"siglip", "gen_encoder", "gen_decoder", "vae_decoder"}
    assert all((artifact_copy / rel).is_file() and rel in m.files for rel in graphs.values())
    pipe = Pipeline.load(artifact_copy)
    optimized = pipe.generate_latents("a cat", steps=2, seed=1)
    assert pipe.runner("gen_encoder").path.as_posix().endswith("ort/gen_encoder.onnx")  # the optimized graph is used
    plain = Pipeline.load(artifact_copy)
    plain.manifest.data["engines"] = {}
    assert np.abs(optimized - plain.generate_latents("a cat", steps=2, seed=1)).max() <= 1e-5


def test_auto_target_without_tensorrt_builds_onnxruntime_and_says_so(artifact_copy):
    if HAS_TENSORRT:
        pytest.skip("TensorRT is present here")
    lines = []
    assert build(artifact_copy, target="auto", components=["siglip"], log=lines.append) == "onnxruntime"
    assert "building the ONNX Runtime target instead" in lines[0]
    assert json.loads((artifact_copy / "manifest.json").read_text())["engines"]["onnxruntime"]["graphs"] == \
        {"siglip": "ort/siglip.onnx"}


def test_cli_build_exports_first_then_builds(tmp_path):
    result = CliRunner().invoke(main, ["build", str(tmp_path / "a"), "--model", "tiny", "--target",
                                       "onnxruntime", "--precision", "fp32", "--max-context", "800"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "ort" / "siglip.onnx").is_file() and "built the onnxruntime target" in result.output
    assert not (tmp_path / "a" / "ort" / "llm.onnx").exists()


def test_components_each_target_cannot_build_are_refused(artifact_copy):
    from jflow.errors import InputError
    with pytest.raises(InputError, match="llm_ort is the LLM"):
        build(artifact_copy, target="onnxruntime", components=["llm_ort"], log=lambda _: None)
    from jflow.engines.build import components_for
    m = Manifest.load(artifact_copy)
    assert components_for(m, "tensorrt", None) == ["siglip", "llm", "gen_encoder", "gen_decoder", "vae_decoder"]
    with pytest.raises(InputError, match="TensorRT builds `llm`"):
        components_for(m, "tensorrt", ["llm_ort"])


def test_cli_tensorrt_target_fails_fast_without_tensorrt(tmp_path, artifact_copy):
    if HAS_TENSORRT:
        pytest.skip("TensorRT is present here")
    result = CliRunner().invoke(main, ["build", str(tmp_path / "new"), "--model", "tiny",
                                       "--target", "tensorrt"])
    assert result.exit_code == 1 and "JetPack" in result.output and "jflow-export onnx CHECKPOINT" in result.output
    assert not (tmp_path / "new").exists()  # failed before exporting anything
    result = CliRunner().invoke(main, ["build", "--out", str(artifact_copy), "--target", "tensorrt"])
    assert result.exit_code == 1 and "is ready" in result.output and "Traceback" not in result.output


def test_backend_selection_without_engines(tiny_artifact):
    from jflow.errors import InputError
    with pytest.raises(InputError, match="no TensorRT engines"):
        make_backend("tensorrt", engines={})
    fallback = make_backend("auto", engines={"tensorrt": {"tensorrt_version": "0", "gpu_name": "x",
                                                          "compute_capability": "0", "graphs": {}}})
    assert fallback.name == "onnxruntime"  # engines it cannot use: ONNX Runtime still runs


@pytest.mark.tensorrt
@needs_tensorrt
def test_tensorrt_build_and_parity(artifact_copy):
    assert build(artifact_copy, target="tensorrt", log=lambda _: None) == "tensorrt"
    m = Manifest.load(artifact_copy)
    assert set(m.data["engines"]["tensorrt"]["graphs"]) == {"siglip", "llm", "gen_encoder", "gen_decoder",
                                                            "vae_decoder"}
    trt, ort = Pipeline.load(artifact_copy, backend="tensorrt"), Pipeline.load(artifact_copy, backend="onnxruntime")
    a, b = trt.generate_latents("a cat", steps=3, seed=0), ort.generate_latents("a cat", steps=3, seed=0)
    assert np.abs(a - b).max() <= 1e-2
    photo = np.zeros((64, 64, 3), np.uint8)
    assert trt.answer_tokens(photo, "what?", max_new_tokens=4) == ort.answer_tokens(photo, "what?", max_new_tokens=4)
    lines = []
    build(artifact_copy, target="tensorrt", log=lines.append)  # second build reuses every engine
    assert all("up to date" in line for line in lines if line.strip())


@pytest.mark.tensorrt
@needs_tensorrt
def test_stale_engine_is_refused(artifact_copy):
    from jflow.artifact.engines import StaleEngineError
    build(artifact_copy, target="tensorrt", components=["siglip"], log=lambda _: None)
    manifest = json.loads((artifact_copy / "manifest.json").read_text())
    manifest["engines"]["tensorrt"]["tensorrt_version"] = "9.0.0"
    (artifact_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StaleEngineError, match="rebuild"):
        make_backend("tensorrt", engines=manifest["engines"])


def test_build_never_writes_through_a_link_out_of_the_artifact(artifact_copy, tmp_path):
    import os

    from jflow.artifact.manifest import ArtifactError
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, artifact_copy / "ort")
    with pytest.raises(ArtifactError, match="ort is a symbolic link"):
        build(artifact_copy, target="onnxruntime", components=["siglip"], log=lambda _: None)
    assert list(outside.iterdir()) == []  # nothing landed outside
    os.unlink(artifact_copy / "ort")
    (tmp_path / "secret.txt").write_text("not yours")
    os.symlink(tmp_path / "secret.txt", artifact_copy / "extra.txt")  # a member linking outside
    with pytest.raises(ArtifactError, match="extra.txt is a symbolic link"):
        build(artifact_copy, target="onnxruntime", components=["siglip"], log=lambda _: None)
    assert "extra.txt" not in json.loads((artifact_copy / "manifest.json").read_text())["files"]


def test_a_graph_onnxruntime_refuses_is_one_line_naming_it(artifact_copy):
    from jflow.artifact.writer import ArtifactWriter
    (artifact_copy / "onnx" / "gen_encoder.onnx").write_bytes(b"\x08\x07garbage")
    ArtifactWriter(artifact_copy).update({}, rehash=["onnx/gen_encoder.onnx"])
    result = CliRunner().invoke(main, ["build", "--out", str(artifact_copy), "--target", "onnxruntime",
                                       "--components", "gen_encoder"])
    assert result.exit_code == 1 and "graph gen_encoder: onnxruntime refused to optimize" in result.output
    assert "Traceback" not in result.output


@pytest.fixture
def fake_tensorrt(monkeypatch):
    """An importable `tensorrt` stand-in: the auto backend then believes TensorRT is installed."""
    import sys
    import types
    module = types.ModuleType("tensorrt")
    module.__version__ = "10.3.0"
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


def test_auto_backend_falls_back_only_when_tensorrt_is_missing(fake_tensorrt, monkeypatch):
    from jflow.artifact.engines import EngineIdentity, StaleEngineError
    from jflow.engines import machine
    section = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "graphs": {}}
    monkeypatch.setattr(machine, "gpu_identity", lambda: (_ for _ in ()).throw(RuntimeError("no NVIDIA GPU found")))
    with pytest.raises(Exception, match="no NVIDIA GPU found"):  # TensorRT here but unusable: said, not hidden
        make_backend("auto", engines={"tensorrt": section})
    monkeypatch.setattr(machine, "probe_identity", lambda: EngineIdentity("10.7.0", "Orin", "8.7"))
    import jflow.runtime.backends.tensorrt as trt_backend
    monkeypatch.setattr(trt_backend, "probe_identity", machine.probe_identity)
    with pytest.raises(StaleEngineError, match="rebuild them here"):  # engines for another TensorRT
        make_backend("auto", engines={"tensorrt": section})
    monkeypatch.delitem(__import__("sys").modules, "tensorrt")
    monkeypatch.setattr("builtins.__import__", _refusing("tensorrt"))
    assert make_backend("auto", engines={"tensorrt": section}).name == "onnxruntime"  # not installed: fine


def _refusing(blocked):
    real = __builtins__["__import__"] if isinstance(__builtins__, dict) else __builtins__.__import__

    def importer(name, *args, **kwargs):
        if name == blocked:
            raise ImportError(f"No module named {blocked!r}")
        return real(name, *args, **kwargs)
    return importer
