"""The manifest's one reader and writer: schema, the runtime's contract, sha256 of every file, verified
stamps, and plain folders only."""

import json
import os
import shutil

import pytest

from jflow.artifact import manifest as manifest_module
from jflow.artifact import stamp
from jflow.artifact.files import file_hashes, sha256_file
from jflow.artifact.manifest import SCHEMA_VERSION, ArtifactError, Manifest
from jflow.artifact.writer import ArtifactWriter
from jflow.errors import JFlowError


@pytest.fixture
def art(tiny_artifact, tmp_path, monkeypatch):
    monkeypatch.setenv("JFLOW_CACHE", str(tmp_path / "cache"))  # stamps of this test only
    return shutil.copytree(tiny_artifact, tmp_path / "art")


def _edit(root, change):
    data = json.loads((root / "manifest.json").read_text())
    change(data)
    (root / "manifest.json").write_text(json.dumps(data))
    return data


def test_load_ok(art):
    m = Manifest.load(art)
    assert m.root == art and m.precision == "fp32" and m.schema_version == SCHEMA_VERSION
    assert {"onnx/llm.onnx", "onnx/llm.onnx.data", "onnx/llm_ort.onnx", "tokenizer.json"} <= set(m.files)
    assert "onnx/llm_ort.onnx.data" not in m.files  # the ORT form shares the portable graph's weights
    assert m.graph("llm")["inputs"][0]["name"] == "inputs_embeds" and m.graph("llm_ort")["form_of"] == "llm"
    assert m.path("onnx/llm.onnx") == (art / "onnx" / "llm.onnx").absolute()
    assert m.graph_path("siglip").is_file() and m.reference_path("siglip").is_file()
    assert m.reference_path("generation").name == "e2e_generation.npz"
    assert m.limits["max_batch"] == 3 and m.data["tolerances"]["fp32"]["rel_l2"] == 1e-4


def test_file_hashes_are_sorted_relative_and_skip_manifest(art):
    h = file_hashes(art)
    assert list(h) == sorted(h) and "manifest.json" not in h
    assert h["onnx/llm.onnx"] == sha256_file(art / "onnx" / "llm.onnx")


def test_unknown_graph_names_the_available_ones(art):
    with pytest.raises(ArtifactError, match="no graph 'unet'.*siglip, llm"):
        Manifest.load(art).graph("unet")


def test_missing_folder_and_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="not a jflow artifact.*does not exist.*jflow-export onnx"):
        Manifest.load(tmp_path / "nope")
    with pytest.raises(ArtifactError, match="not a jflow artifact.*manifest.json is missing"):
        Manifest.load(tmp_path)
    assert issubclass(ArtifactError, JFlowError)


def test_bad_json(art):
    (art / "manifest.json").write_text("{ not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Manifest.load(art)


def test_schema_version(art):
    _edit(art, lambda d: d.update(schema_version=SCHEMA_VERSION + 1, jflow_version="9.9.9"))
    with pytest.raises(ArtifactError) as e:
        Manifest.load(art)
    msg = str(e.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in msg and f"reads schema version {SCHEMA_VERSION}" in msg
    assert "re-export" in msg and "9.9.9" in msg
    _edit(art, lambda d: d.pop("schema_version"))
    with pytest.raises(ArtifactError, match="no schema_version"):
        Manifest.load(art)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("limits"), "missing required key.*limits"),
    (lambda d: d["graphs"].pop("llm"), "graphs lacks llm; the runtime needs all of"),
    (lambda d: d["graphs"].pop("vae_decoder"), "graphs lacks vae_decoder"),
    (lambda d: d.update(precision="int3"), "precision 'int3'"),
    (lambda d: d["limits"].update(max_batch=True), "limits: max_batch is True, but its values must be whole numbers "
                                                   "from 1 to 2147483647"),
    (lambda d: d["limits"].update(max_context=10**12), "limits: max_context is 1000000000000, but its values must "
                                                       "be whole numbers from 1 to 2147483647"),
    (lambda d: d["limits"].update(max_context=500), "leaves no room for a prompt"),
    (lambda d: d["generation"].update(latent_size="48"), "generation: latent_size is '48', but its values must be "
                                                         "whole numbers from 1"),
    (lambda d: d["embeddings"].update(embed_tokens="../../etc/passwd"), "inside the artifact"),
    (lambda d: d["embeddings"].update(embed_tokens="/etc/passwd"), "inside the artifact"),
    (lambda d: d["files"].update({"../escape": "0" * 64}), "inside the artifact"),
    (lambda d: d["graphs"]["llm"]["outputs"].pop(1), "llm'\\].outputs lacks logits"),
    (lambda d: d["graphs"]["siglip"]["inputs"][0].update(dtype="bfloat17"), "bad entry"),
    (lambda d: d["graphs"]["gen_encoder"].update(precision="fp8"), "precision 'fp8'"),
    (lambda d: d["files"].pop("tokenizer.json"), "1 file\\(s\\) are used but have no sha256 under \"files\": "
                                                 "tokenizer.json;"),
    (lambda d: d["files"].pop("reference/llm.npz"), "are used but have no sha256 under \"files\": reference/llm.npz"),
])
def test_what_the_runtime_needs_is_checked_on_every_load(art, change, message):
    _edit(art, change)
    with pytest.raises(ArtifactError, match=message):
        Manifest.load(art, check_files=False)


def test_altered_missing_and_linked_files_are_all_listed(art):
    with open(art / "onnx" / "siglip.onnx", "ab") as f:
        f.write(b"\0")
    (art / "reference" / "llm.npz").unlink()
    outside = art.parent / "outside.npz"
    shutil.move(art / "reference" / "vae_decoder.npz", outside)
    os.symlink(outside, art / "reference" / "vae_decoder.npz")
    with pytest.raises(ArtifactError) as e:
        Manifest.load(art)
    msg = str(e.value)
    assert "onnx/siglip.onnx: altered" in msg and "reference/llm.npz: missing" in msg
    assert "reference/vae_decoder.npz is a symbolic link" in msg and "3 of" in msg
    Manifest.load(art, check_files=False)  # the manifest itself is still readable


def test_a_linked_folder_is_refused_when_hashing_or_checking(art, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(art / "embeddings", elsewhere)
    os.symlink(elsewhere, art / "embeddings")
    with pytest.raises(ArtifactError, match="embeddings/embed_tokens.npy: embeddings is a symbolic link"):
        Manifest.load(art)
    with pytest.raises(ArtifactError, match="embeddings is a symbolic link; an artifact is a plain folder"):
        file_hashes(art)


def test_a_verified_stamp_skips_unchanged_files_and_catches_changed_ones(art, monkeypatch):
    hashed = []
    real = manifest_module.sha256_file
    monkeypatch.setattr(manifest_module, "sha256_file", lambda p: hashed.append(p) or real(p))
    Manifest.load(art)  # no stamp yet: every file is hashed, then the stamp is written
    files = len(Manifest.load(art, check_files=False).files)
    assert len(hashed) == files and stamp.read(art, Manifest.load(art, check_files=False).digest)
    hashed.clear()
    Manifest.load(art)
    assert hashed == []  # nothing changed: nothing re-read
    Manifest.load(art, check_files="full")
    assert len(hashed) == files  # full: every file again
    hashed.clear()
    table = art / "embeddings" / "embed_tokens.npy"
    data = bytearray(table.read_bytes())
    data[-1] ^= 1
    table.write_bytes(bytes(data))  # same size, new mtime
    with pytest.raises(ArtifactError, match="embed_tokens.npy: altered"):
        Manifest.load(art)
    assert [p.name for p in hashed] == ["embed_tokens.npy"]  # only the changed file was read


def test_a_new_manifest_invalidates_the_stamp(art):
    m = Manifest.load(art)
    _edit(art, lambda d: d.update(tools={**d["tools"], "note": "edited"}))
    assert Manifest.load(art, check_files=False).digest != m.digest
    assert stamp.read(art, Manifest.load(art, check_files=False).digest) == {}


def test_writer_and_updater_round_trip(art):
    data = Manifest.load(art).data
    fresh = {k: v for k, v in data.items() if k not in ("files", "schema_version", "jflow_version")}
    written = ArtifactWriter(art).create(fresh).data
    assert written["files"] == file_hashes(art) and Manifest.load(art, check_files="full").data == written
    (art / "engines").mkdir()
    (art / "engines" / "plan.bin").write_bytes(b"plan")
    ArtifactWriter(art).update({"engines": {"tensorrt": {"tensorrt_version": "10.3.0", "gpu_name": "Orin",
                                                         "compute_capability": "8.7", "graphs": {}}}})
    m = Manifest.load(art, check_files="full")
    assert m.files["engines/plan.bin"] == sha256_file(art / "engines" / "plan.bin") and "engines" in m.data
    with pytest.raises(ArtifactError, match="graphs lacks llm"):  # the writer checks the contract too
        ArtifactWriter(art).create({**fresh, "graphs": {k: v for k, v in fresh["graphs"].items() if k != "llm"}})
