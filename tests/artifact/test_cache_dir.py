"""One cache root for everything jflow caches ($JFLOW_CACHE): a quantize whose cache folder cannot be written
says which variable moves it, before any work; the tests keep their caches out of the user's."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from jflow.artifact import stamp
from jflow.artifact.manifest import Manifest
from jflow.cli import main
from jflow.errors import OutputError

REPO = Path(__file__).resolve().parents[2]


def _unwritable_home(tmp_path, monkeypatch):
    """A HOME whose .cache cannot be made into a folder (a file is in the way: true for root as well), with
    no JFLOW_CACHE or XDG_CACHE_HOME set, as on a machine with a read-only home."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".cache").write_text("a file where the cache folder would go")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("JFLOW_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return home


def test_quantize_with_an_unwritable_home_names_the_variable_to_set(tiny_artifact, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(photos / "p.png")
    home = _unwritable_home(tmp_path, monkeypatch)
    result = CliRunner().invoke(main, ["quantize", str(tiny_artifact), "--out", str(tmp_path / "int8"),
                                       "--precision", "int8", "--calib", str(photos), "--samples", "1"])
    assert result.exit_code == 1 and not isinstance(result.exception, OSError), result.output
    assert f"cannot write the calibration samples in the cache folder {home}/.cache/jflow/calibration" \
        in result.output
    assert "set JFLOW_CACHE to a writable folder" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "int8").exists()  # refused before any work


def test_the_cache_root_is_jflow_cache_then_xdg_then_home(tmp_path, monkeypatch):
    from jflow.artifact import cache_dir
    monkeypatch.setenv("JFLOW_CACHE", str(tmp_path / "jc"))
    assert cache_dir.root() == tmp_path / "jc" and stamp.folder() == tmp_path / "jc" / "verified"
    assert cache_dir.writable("calibration", "x") == tmp_path / "jc" / "calibration"
    monkeypatch.delenv("JFLOW_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir.root() == tmp_path / "xdg" / "jflow"
    _unwritable_home(tmp_path, monkeypatch)
    with pytest.raises(OutputError, match="set JFLOW_CACHE to a writable folder"):
        cache_dir.writable("calibration", "the calibration samples")


def test_the_tests_never_write_the_users_cache(tiny_artifact, tmp_path, private_cache, real_cache):
    art, moved = tmp_path / "art", tmp_path / "moved"
    shutil.copytree(tiny_artifact, art)
    Manifest.load(art)  # writes a verified stamp, in this process ...
    shutil.move(art, moved)
    code = f"from jflow.artifact.manifest import Manifest; Manifest.load({str(moved)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)  # ... and in one the test starts
    names = [stamp._path(art).name, stamp._path(moved).name]
    assert all((private_cache / "verified" / name).is_file() for name in names)
    assert not any((real_cache / "verified" / name).exists() for name in names)  # the user's: untouched
    assert not stamp.folder().is_relative_to(real_cache) and os.environ["XDG_CACHE_HOME"] == str(private_cache.parent)


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_the_quick_starts_outputs_are_ignored_by_git():
    names = ["tiny-ckpt/config.json", "tiny-fp16/manifest.json", "cube.png"]
    out = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.split() == names
