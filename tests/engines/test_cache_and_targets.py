"""Engine cache keys and reuse, target selection, and the path without TensorRT."""

import dataclasses

import pytest

from jflow.artifact.engines import EngineIdentity, EngineKey, StaleEngineError
from jflow.engines import cache
from jflow.engines.targets import TargetUnavailable, TensorRTStatus, choose_target, tensorrt_status

MANIFEST = {"precision": "fp16", "files": {"onnx/llm.onnx": "a" * 64, "onnx/llm.onnx.data": "b" * 64,
                                           "onnx/siglip.onnx": "c" * 64},
            "graphs": {"llm": {"file": "onnx/llm.onnx"}, "siglip": {"file": "onnx/siglip.onnx"}}}
PROFILES = [{"name": "default", "shapes": {"x": [[1], [1], [4]]}}]
ORIN = EngineIdentity("10.3.0", "Orin", "8.7")


def _key(**changes):
    key = EngineKey.for_graph(MANIFEST, "llm", PROFILES, ORIN)
    return dataclasses.replace(key, **changes)


def test_key_changes_with_everything_that_makes_an_engine_valid():
    base = _key()
    assert base.digest == _key().digest and len(base.digest) == 16
    for field, value in [("graph_sha256", "x"), ("precision", "fp32"), ("profiles", "[]"),
                         ("tensorrt_version", "10.4.0"), ("gpu_name", "RTX 4090"), ("compute_capability", "8.9")]:
        assert _key(**{field: value}).digest != base.digest, field


def test_graph_hash_covers_external_data():
    other = {**MANIFEST, "files": {**MANIFEST["files"], "onnx/llm.onnx.data": "d" * 64}}
    a = EngineKey.for_graph(MANIFEST, "llm", PROFILES, ORIN)
    b = EngineKey.for_graph(other, "llm", PROFILES, ORIN)
    assert a.graph_sha256 != b.graph_sha256
    assert EngineKey.for_graph(other, "siglip", PROFILES, ORIN).graph_sha256 == \
        EngineKey.for_graph(MANIFEST, "siglip", PROFILES, ORIN).graph_sha256


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
    with pytest.raises(TargetUnavailable, match="jflow-export onnx CHECKPOINT --out DIR"):
        choose_target("tensorrt", "DIR", off, artifact_ready=False)


def test_this_machine_has_no_tensorrt():
    status = tensorrt_status()
    if status.available:
        pytest.skip("TensorRT and a GPU are present")
    assert status.reason  # says why


def test_stale_engines_are_refused_with_a_rebuild_message():
    built = EngineIdentity.from_section({"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"})
    ORIN.check_built_for(built)
    with pytest.raises(StaleEngineError, match="rebuild them here"):
        EngineIdentity("10.7.0", "Orin", "8.7").check_built_for(built)
    with pytest.raises(StaleEngineError, match="RTX 4090"):
        EngineIdentity("10.3.0", "RTX 4090", "8.9").check_built_for(built)
    with pytest.raises(StaleEngineError, match="sm 8.9"):  # same name, another architecture: still stale
        EngineIdentity("10.3.0", "Orin", "8.9").check_built_for(built)


def test_one_identity_for_build_key_and_runtime_check():
    # The key a build stores and the identity the runtime checks come from the same fields.
    key = _key()
    assert key.identity == ORIN and EngineIdentity.from_section({**ORIN.as_dict(), "graphs": {}}) == ORIN
