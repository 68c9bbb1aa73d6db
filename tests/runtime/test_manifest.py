"""The artifact manifest: loading, schema version, and the sha256 check of every file."""

import json

import numpy as np
import pytest

from jflow.errors import JFlowError
from handmade_artifact import save_double_model, write_manifest
from jflow.runtime.manifest import SCHEMA_VERSION, ArtifactError, Manifest, file_hashes, sha256_file




@pytest.fixture
def artifact(tmp_path):
    root = tmp_path / "art"
    save_double_model(root / "onnx" / "double.onnx")
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    (root / "reference").mkdir()
    np.savez(root / "reference" / "double.npz", **{"in.x": x, "out.y": x * 2 + np.arange(4, dtype=np.float32)})
    write_manifest(root)
    return root


def test_load_ok(artifact):
    m = Manifest.load(artifact)
    assert m.root == artifact and m.precision == "fp32" and m.schema_version == SCHEMA_VERSION
    assert sorted(m.files) == ["onnx/double.onnx", "reference/double.npz"]
    assert m.graph("double")["inputs"][0]["name"] == "x"
    assert m.path("onnx/double.onnx") == (artifact / "onnx" / "double.onnx").absolute()
    assert m.graph_path("double").is_file() and m.reference_path("double").is_file()
    assert m.limits["max_batch"] == 2


def test_file_hashes_are_sorted_relative_and_skip_manifest(artifact):
    h = file_hashes(artifact)
    assert list(h) == sorted(h) and "manifest.json" not in h
    assert h["onnx/double.onnx"] == sha256_file(artifact / "onnx" / "double.onnx")
    import hashlib
    assert h["reference/double.npz"] == hashlib.sha256((artifact / "reference/double.npz").read_bytes()).hexdigest()


def test_unknown_graph_names_the_available_ones(artifact):
    with pytest.raises(ArtifactError, match="no graph 'llm'.*double"):
        Manifest.load(artifact).graph("llm")


def test_missing_folder_and_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="not a jflow artifact.*does not exist.*jflow-export onnx"):
        Manifest.load(tmp_path / "nope")
    with pytest.raises(ArtifactError, match="not a jflow artifact.*no manifest.json.*jflow-export onnx"):
        Manifest.load(tmp_path)
    assert issubclass(ArtifactError, JFlowError)


def test_bad_json(artifact):
    (artifact / "manifest.json").write_text("{ not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Manifest.load(artifact)


def test_wrong_schema_version(artifact):
    write_manifest(artifact, schema_version=SCHEMA_VERSION + 1, jflow_version="9.9.9")
    with pytest.raises(ArtifactError) as e:
        Manifest.load(artifact)
    msg = str(e.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in msg and f"reads schema version {SCHEMA_VERSION}" in msg
    assert "re-export" in msg and "9.9.9" in msg


def test_missing_schema_version_and_required_keys(artifact):
    data = write_manifest(artifact)
    del data["schema_version"]
    (artifact / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="no schema_version"):
        Manifest.load(artifact)
    data = write_manifest(artifact)
    del data["graphs"], data["limits"]
    (artifact / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="missing required key.*limits, graphs"):
        Manifest.load(artifact)


def test_bad_values(artifact):
    write_manifest(artifact, precision="int3")
    with pytest.raises(ArtifactError, match="precision 'int3'"):
        Manifest.load(artifact)
    write_manifest(artifact, files={"../escape": "0" * 64})
    with pytest.raises(ArtifactError, match="inside the artifact"):
        Manifest.load(artifact, check_files=False)


def test_used_file_without_hash_is_refused(artifact):
    write_manifest(artifact, files={"onnx/double.onnx": sha256_file(artifact / "onnx/double.onnx")})
    with pytest.raises(ArtifactError, match="reference/double.npz.*no sha256"):
        Manifest.load(artifact)


def test_altered_and_missing_files_are_all_listed(artifact):
    with open(artifact / "onnx" / "double.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError) as e:
        Manifest.load(artifact)
    assert "onnx/double.onnx: altered (sha256 mismatch)" in str(e.value)
    assert "Re-export" in str(e.value)
    (artifact / "reference" / "double.npz").unlink()
    with pytest.raises(ArtifactError) as e:
        Manifest.load(artifact)
    msg = str(e.value)
    assert "onnx/double.onnx: altered" in msg and "reference/double.npz: missing" in msg and "2 of 2" in msg
    Manifest.load(artifact, check_files=False)  # the manifest itself is still readable
