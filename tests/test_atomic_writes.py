"""Every file jflow writes appears whole under its name, through a temporary file that nobody else can
have prepared: a symlink planted at an old predictable temporary name must never be written through."""

import json
import os
import shutil

import numpy as np
import pytest

from jflow import fsutil
from jflow.engines import cache
from jflow.artifact.writer import ArtifactWriter
from jflow.runtime.image_io import save_images

VICTIM = b"precious"


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim"
    path.write_bytes(VICTIM)
    return path


def plant(link, victim):
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(victim, link)


def untouched(victim, folder):
    """The victim keeps its bytes, and no temporary file is left behind in `folder`."""
    return victim.read_bytes() == VICTIM and not [p for p in folder.iterdir() if ".tmp" in p.name
                                                  and not p.is_symlink()]


def test_save_images_does_not_follow_a_planted_temp_link(tmp_path, victim):
    out = tmp_path / "o.png"
    plant(tmp_path / ".o.png.tmp", victim)  # the temp name of jflow <= 0.x
    save_images(np.zeros((1, 8, 8, 3), np.uint8), out)
    assert untouched(victim, tmp_path)
    assert out.read_bytes().startswith(b"\x89PNG") and not out.is_symlink()


def test_engine_cache_write_does_not_follow_a_planted_temp_link(tmp_path, victim):
    folder = tmp_path / "engines"
    plant(folder / f".engine.plan.tmp-{os.getpid()}", victim)
    cache.write_atomic(folder / "engine.plan", b"plan")
    assert untouched(victim, folder) and (folder / "engine.plan").read_bytes() == b"plan"


def test_manifest_update_does_not_follow_a_planted_temp_link(tiny_artifact, tmp_path, victim):
    root = shutil.copytree(tiny_artifact, tmp_path / "art")
    plant(root / f".manifest.json.tmp-{os.getpid()}", victim)  # the name the old writer used
    ArtifactWriter(root).update({"engines": {"onnxruntime": {"graphs": {}}}})
    assert victim.read_bytes() == VICTIM
    assert json.loads((root / "manifest.json").read_text())["engines"] == {"onnxruntime": {"graphs": {}}}


def test_ort_target_does_not_follow_planted_links(tmp_path, victim):
    from jflow.engines.ort_target import optimize_graph
    source, target = tmp_path / "double.onnx", tmp_path / "ort" / "double.onnx"
    _save_add_model(source)
    plant(target.parent / ".double.onnx.partial", victim)
    optimize_graph(source, target)
    assert victim.read_bytes() == VICTIM
    assert target.is_file() and not target.is_symlink()
    assert sorted(p.name for p in target.parent.iterdir() if not p.is_symlink()) in (
        ["double.onnx"], ["double.onnx", "double.onnx.data"])  # nothing temporary left


def _save_add_model(path):
    """y = x + b with a 4 KiB initializer (so ORT writes its weights to an external .data file)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    b = numpy_helper.from_array(np.arange(1024, dtype=np.float32), "b")
    graph = helper.make_graph([helper.make_node("Add", ["x", "b"], ["y"])], "add",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1024])], initializer=[b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_atomic_write_bytes_replaces_a_link_at_the_target_itself(tmp_path, victim):
    target = tmp_path / "t.json"
    plant(target, victim)
    fsutil.atomic_write_bytes(target, b"{}")
    assert victim.read_bytes() == VICTIM and target.read_bytes() == b"{}" and not target.is_symlink()


def test_atomic_write_gives_ordinary_permissions_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.bin"
    fsutil.atomic_write_bytes(target, b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    with pytest.raises(RuntimeError):
        with fsutil.atomic_file(tmp_path / "b.bin") as f:
            f.write(b"half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_temporary_names_fit_wherever_the_final_name_fits(tmp_path):
    """Issue 18, point 13: the temporary file or folder of a name at the file system's limit (NAME_MAX bytes)
    is shortened to fit, so a legal name never fails at the end of the work."""
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    image = tmp_path / ("n" * (limit - 4) + ".png")
    save_images(np.zeros((1, 8, 8, 3), np.uint8), image)
    wide = tmp_path / ("é" * ((limit - 4) // 2) + ".bin")  # 2 bytes a character: cut on a character boundary
    fsutil.atomic_write_bytes(wide, b"x")
    folder = tmp_path / ("d" * limit)
    with fsutil.staged_dir(folder) as staged:
        (staged / "graph.onnx").write_bytes(b"whole")
    assert image.read_bytes().startswith(b"\x89PNG") and wide.read_bytes() == b"x"
    assert (folder / "graph.onnx").read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([image.name, wide.name, folder.name])
    with pytest.raises(fsutil.OutputError, match=f"at most {limit}"):
        fsutil.check_writable_file(tmp_path / ("n" * limit + ".png"))
