"""Engine cache keys and reuse, target selection, and the path without TensorRT."""

import dataclasses

import pytest

from jflow.engines import cache
from jflow.engines.targets import TargetUnavailable, TensorRTStatus, choose_target, tensorrt_status
from jflow.runtime.tensorrt_backend import StaleEngineError, check_engines

MANIFEST = {"precision": "fp16", "files": {"onnx/llm.onnx": "a" * 64, "onnx/llm.onnx.data": "b" * 64,
                                           "onnx/siglip.onnx": "c" * 64},
            "graphs": {"llm": {"file": "onnx/llm.onnx"}, "siglip": {"file": "onnx/siglip.onnx"}}}
PROFILES = [{"name": "default", "shapes": {"x": [[1], [1], [4]]}}]


def _key(**changes):
    key = cache.EngineKey.for_graph(MANIFEST, "llm", PROFILES, "10.3.0", "Orin", "8.7")
    return dataclasses.replace(key, **changes)


def test_key_changes_with_everything_that_makes_an_engine_valid():
    base = _key()
    assert base.digest == _key().digest and len(base.digest) == 16
    for field, value in [("graph_sha256", "x"), ("precision", "fp32"), ("profiles", "[]"),
                         ("tensorrt_version", "10.4.0"), ("gpu_name", "RTX 4090"), ("compute_capability", "8.9")]:
        assert _key(**{field: value}).digest != base.digest, field


def test_graph_hash_covers_external_data():
    other = {**MANIFEST, "files": {**MANIFEST["files"], "onnx/llm.onnx.data": "d" * 64}}
    a = cache.EngineKey.for_graph(MANIFEST, "llm", PROFILES, "10.3.0", "Orin", "8.7")
    b = cache.EngineKey.for_graph(other, "llm", PROFILES, "10.3.0", "Orin", "8.7")
    assert a.graph_sha256 != b.graph_sha256
    assert cache.EngineKey.for_graph(other, "siglip", PROFILES, "10.3.0", "Orin", "8.7").graph_sha256 == \
        cache.EngineKey.for_graph(MANIFEST, "siglip", PROFILES, "10.3.0", "Orin", "8.7").graph_sha256


def test_store_then_reuse_and_refuse_stale(tmp_path):
    key = _key()
    assert cache.reusable(tmp_path, key) is None
    plan = cache.store(tmp_path, key, b"plan-bytes", 1.5)
    assert cache.reusable(tmp_path, key) == plan and plan.read_bytes() == b"plan-bytes"
    assert cache.reusable(tmp_path, _key(tensorrt_version="10.4.0")) is None  # another folder: rebuilt
    plan.write_bytes(b"trunc")                                                # damaged plan
    assert cache.reusable(tmp_path, key) is None
    assert not [p for p in tmp_path.rglob(".*tmp*")]                          # no temporary leftovers


def test_target_selection():
    off = TensorRTStatus(False, "TensorRT cannot be imported")
    on = TensorRTStatus(True, version="10.3.0", gpu_name="Orin", compute_capability="8.7")
    assert choose_target("onnxruntime", "DIR") == ("onnxruntime", "")
    target, note = choose_target("auto", "DIR", off)
    assert target == "onnxruntime" and "building the ONNX Runtime target instead" in note
    assert choose_target("auto", "DIR", on)[0] == "tensorrt"
    assert choose_target("tensorrt", "DIR", on)[0] == "tensorrt"
    with pytest.raises(TargetUnavailable) as err:
        choose_target("tensorrt", "DIR", off)
    for words in ("TensorRT cannot be imported", "JetPack", "pip install tensorrt", "artifact in DIR is ready"):
        assert words in str(err.value)
    with pytest.raises(TargetUnavailable, match="jflow-export onnx --model"):
        choose_target("tensorrt", "DIR", off, artifact_ready=False)


def test_this_machine_has_no_tensorrt():
    status = tensorrt_status()
    if status.available:
        pytest.skip("TensorRT and a GPU are present")
    assert status.reason  # says why


def test_stale_engines_are_refused_with_a_rebuild_message():
    section = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}
    check_engines(section, "10.3.0", "Orin", "8.7")
    with pytest.raises(StaleEngineError, match="rebuild them here"):
        check_engines(section, "10.7.0", "Orin", "8.7")
    with pytest.raises(StaleEngineError, match="RTX 4090"):
        check_engines(section, "10.3.0", "RTX 4090", "8.9")
