"""Messages stay short whatever a manifest lists: 200,000 missing files are a count and the first few
names, not a 200,004-line error; long paths and values are quoted up to a length."""

import json
import shutil

import pytest
from click.testing import CliRunner

from jflow.artifact.manifest import ArtifactError, Manifest
from jflow.cli import main

MISSING = 200_000


@pytest.fixture
def art(tiny_artifact, tmp_path):
    return shutil.copytree(tiny_artifact, tmp_path / "art")


def _edit(root, change):
    data = json.loads((root / "manifest.json").read_text())
    change(data)
    (root / "manifest.json").write_text(json.dumps(data))


def test_200k_missing_files_are_counted_and_the_first_few_named(art, tmp_path):
    listed = len(Manifest.load(art, check_files=False).files)
    _edit(art, lambda d: d["files"].update({f"gone/f{i:06d}.bin": "0" * 64 for i in range(MISSING)}))
    result = CliRunner().invoke(main, ["generate", str(art), "a cube", "-o", str(tmp_path / "x.png")])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) <= 15, len(lines)
    assert f"({MISSING} of {MISSING + listed} file(s): {MISSING} missing)" in lines[0]
    assert "gone/f000000.bin: missing" in result.output and "gone/f000009.bin: missing" in result.output
    assert "gone/f000010.bin" not in result.output and f"(and {MISSING - 10} more)" in result.output
    assert "Re-export the artifact" in lines[-1]


def test_a_failed_check_counts_each_kind(art):
    with open(art / "onnx" / "siglip.onnx", "ab") as f:
        f.write(b"\0")
    (art / "reference" / "llm.npz").unlink()
    with pytest.raises(ArtifactError, match=r"\(2 of \d+ file\(s\): (1 altered, 1 missing|1 missing, 1 altered)\)"):
        Manifest.load(art)


def test_unhashed_files_and_long_values_are_summarised(art):
    cases = {f"case{i}": f"reference/extra{i}.npz" for i in range(10_000)}
    _edit(art, lambda d: d["reference"]["end_to_end"].update(cases))
    with pytest.raises(ArtifactError) as e:
        Manifest.load(art, check_files=False)
    msg = str(e.value)
    assert "10000 file(s) are used but have no sha256" in msg and "(and 9995 more)" in msg and len(msg) < 600
    _edit(art, lambda d: d["reference"]["end_to_end"].clear())
    _edit(art, lambda d: d["embeddings"].update(embed_tokens="/" + "x" * 1_000_000))
    with pytest.raises(ArtifactError, match="must be a relative path inside the artifact") as e:
        Manifest.load(art, check_files=False)
    assert len(str(e.value)) < 600
    _edit(art, lambda d: d["graphs"]["siglip"]["inputs"][0].update(shape=list(range(100_000)), dtype="float64"))
    with pytest.raises(ArtifactError, match="bad entry") as e:
        Manifest.load(art, check_files=False)
    assert len(str(e.value)) < 800
