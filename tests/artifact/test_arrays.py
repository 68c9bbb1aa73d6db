"""An artifact's numpy files are read as plain numeric arrays: a pickled (object) array, an archive in place
of an array or a truncated file is one line naming the file, never unpickled and never a bare numpy error."""

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from jflow.artifact.manifest import ArtifactError
from jflow.artifact.writer import ArtifactWriter
from jflow.cli import main
from jflow.runtime.pipeline import Pipeline
from jflow.runtime.verify import verify_artifact


@pytest.fixture
def art(tiny_artifact, tmp_path):
    return shutil.copytree(tiny_artifact, tmp_path / "art")


def _replace(art, rel, write):
    write(art / rel)
    ArtifactWriter(art).update({}, rehash=[rel])  # a consistent manifest: only the file's content is wrong


def _pickled(path):
    with open(path, "wb") as f:
        np.save(f, np.array([{"payload": 1}, None], dtype=object), allow_pickle=True)


@pytest.mark.parametrize("rel", ["embeddings/embed_tokens.npy", "embeddings/beg_of_und_embed.npy"])
def test_a_pickled_embedding_file_is_named(art, tmp_path, rel):
    _replace(art, rel, _pickled)
    with pytest.raises(ArtifactError) as e:
        Pipeline.load(art)
    assert rel in str(e.value) and "cannot be read as a numeric .npy array" in str(e.value)
    assert "Object arrays" in str(e.value) or "Python objects" in str(e.value)  # numpy's reason, after the name
    result = CliRunner().invoke(main, ["generate", str(art), "a cube", "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and rel in result.output and "Traceback" not in result.output


def test_an_archive_or_a_truncated_table_is_named(art):
    rel = "embeddings/embed_tokens.npy"
    _replace(art, rel, lambda p: np.savez(open(p, "wb"), table=np.zeros((2, 2), np.float32)))
    with pytest.raises(ArtifactError, match=f"{rel} .*is an .npz archive, not one .npy array"):
        Pipeline.load(art)
    _replace(art, rel, lambda p: p.write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, "
                                               b"'shape': (100000, 64), }" + b" " * 50 + b"\n" + b"\0" * 64))
    with pytest.raises(ArtifactError, match=f"{rel} .*cannot be read as a numeric .npy array"):
        Pipeline.load(art)


def test_verify_names_a_pickled_reference_file(art):
    rel = "reference/llm.npz"
    _replace(art, rel, lambda p: np.savez(open(p, "wb"), **{"in.x": np.array([object()], dtype=object)}))
    report = verify_artifact(art)
    failed = [row for row in report.rows if not row.passed]
    assert any(row.graph == "llm" and rel in row.note and "plain arrays" in row.note for row in failed), \
        [row.note for row in failed]
