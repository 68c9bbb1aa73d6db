"""One writer for every manifest: quantize drafts its manifest, verifies the draft once and writes once, and
what it writes passes `verify` with the bounds it measured."""

import json

import numpy as np
import pytest
from PIL import Image

from jflow.artifact import writer as writer_module
from jflow.artifact.manifest import Manifest
from jflow.runtime import verify as verify_module


@pytest.fixture
def counted(monkeypatch):
    """Every manifest write and every verify call, recorded as they pass through (both still run)."""
    writes, verifies = [], []
    real_write, real_verify = writer_module.ArtifactWriter.write, verify_module.verify_artifact

    def write(self, manifest):
        writes.append(manifest.root)
        return real_write(self, manifest)

    def verify(dir, *args, **kwargs):
        verifies.append(kwargs.get("graphs"))
        return real_verify(dir, *args, **kwargs)
    monkeypatch.setattr(writer_module.ArtifactWriter, "write", write)
    monkeypatch.setattr(verify_module, "verify_artifact", verify)
    return writes, verifies


def test_quantize_verifies_once_and_writes_its_manifest_once(tiny_artifact, tmp_path, counted, monkeypatch):
    from jflow.calibration.quantize import quantize_artifact
    monkeypatch.setenv("JFLOW_CACHE", str(tmp_path / "cache"))
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    lines = []
    out = quantize_artifact(tiny_artifact, tmp_path / "int4", "int4", calib=photos, samples=2, steps=3,
                            cache=tmp_path / "cache", log=lines.append)
    writes, verifies = counted
    assert len(writes) == 1  # the manifest, once, with the measured errors and bounds in it
    graphs = [g for part in verifies[:-1] for g in part]
    assert sorted(graphs) == sorted(set(Manifest.load(tiny_artifact).graphs) - {"llm_ort"})  # each graph once
    assert verifies[-1] == ["generation", "understanding"] and len(verifies) == 3  # one pass, in three parts
    data = json.loads((out / "manifest.json").read_text())
    overrides = data["tolerances"]["overrides"]
    assert set(data["quantization"]["measured"]) >= set(overrides)
    assert all(any(g in line and "quantizes worse" in line for line in lines) for g in overrides)
    report = verify_module.verify_artifact(out)  # `jflow-export verify` on what was written
    assert report.ok and all(r.passed for r in report.rows)
