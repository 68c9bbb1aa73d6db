"""The verified stamp sees an in-place edit that keeps a file's size and mtime (ctime moves), also after the
folder is moved, and stamps of the old format (no ctime) are misses."""

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from jflow.artifact import manifest as manifest_module
from jflow.artifact import stamp
from jflow.artifact.manifest import ArtifactError, Manifest
from jflow.cli import main

DATA = "onnx/gen_decoder.onnx.data"


@pytest.fixture
def art(tiny_artifact, tmp_path):
    return shutil.copytree(tiny_artifact, tmp_path / "art")


def _flip_keeping_mtime(path):
    """Flip 64 bytes in place and put the mtime back, as `touch -r` would: size and mtime are unchanged."""
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(1000)
        chunk = f.read(64)
        f.seek(1000)
        f.write(bytes(b ^ 0xFF for b in chunk))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)


def test_an_in_place_edit_with_the_mtime_put_back_is_hashed_again(art, tmp_path):
    Manifest.load(art)  # full check: the stamp is written
    _flip_keeping_mtime(art / DATA)
    with pytest.raises(ArtifactError, match="gen_decoder.onnx.data: altered"):
        Manifest.load(art)
    result = CliRunner().invoke(main, ["generate", str(art), "a cube", "-o", str(tmp_path / "x.png"), "--steps", "1"])
    assert result.exit_code == 1 and "onnx/gen_decoder.onnx.data: altered" in result.output
    assert not (tmp_path / "x.png").exists() and "Traceback" not in result.output


def test_an_edit_is_seen_after_the_folder_is_moved_away_and_back(art, tmp_path):
    Manifest.load(art)
    moved = tmp_path / "moved"
    shutil.move(art, moved)
    Manifest.load(moved)  # a moved folder has another key: hashed in full, stamped there too
    _flip_keeping_mtime(moved / DATA)
    with pytest.raises(ArtifactError, match="gen_decoder.onnx.data: altered"):
        Manifest.load(moved)
    shutil.move(moved, art)  # back where the first stamp is: that stamp holds the old ctime
    with pytest.raises(ArtifactError, match="gen_decoder.onnx.data: altered"):
        Manifest.load(art)


def test_stamps_without_ctime_are_misses(art, monkeypatch):
    m = Manifest.load(art)
    record = json.loads(stamp._path(art).read_text())
    old = {rel: [ident[0], ident[1], ident[3], ident[4]] for rel, ident in record["files"].items()}  # format 1
    stamp._path(art).write_text(json.dumps({"manifest": m.digest, "root": record["root"], "files": old}))
    hashed = []
    real = manifest_module.sha256_file
    monkeypatch.setattr(manifest_module, "sha256_file", lambda p: hashed.append(p) or real(p))
    Manifest.load(art)
    assert len(hashed) == len(m.files)  # every file hashed again, then stamped in the new format
    assert json.loads(stamp._path(art).read_text())["format"] == stamp.FORMAT
    hashed.clear()
    Manifest.load(art)
    assert hashed == []


def test_still_verified_tells_a_hard_link_from_an_edit(art, tmp_path):
    """A hard link (jflow-export triton makes them) moves ctime without changing a byte: still the checked
    file. An in-place edit with the mtime put back is not."""
    m = Manifest.load(art)
    pinned = m.verified[DATA]
    assert m.still_verified(DATA, pinned) == pinned
    os.link(art / DATA, tmp_path / "linked.data")
    assert stamp.identity(art / DATA) != pinned and m.still_verified(DATA, pinned) == stamp.identity(art / DATA)
    _flip_keeping_mtime(art / DATA)
    assert m.still_verified(DATA, pinned) is None
    (art / DATA).unlink()
    assert m.still_verified(DATA, pinned) is None
