"""`--force` replaces only what jflow wrote, and no output ever replaces or enters its own source: the current
folder, its parents, the home folder, the root, a folder of the user's, a command's input are each refused
with one line and exit 1, and nothing is touched (issue 18, points 1 and 2)."""

import shutil

import pytest
from click.testing import CliRunner

from jflow.cli import main
from jflow.errors import OutputError
from jflow.output_folders import OUTPUT_MARK


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _refused(args, *words):
    result = _run(*args)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1, (args, result.output)
    assert all(w in errors[0] for w in words), (args, result.output)
    assert "Traceback" not in result.output


def _snapshot(root):
    """Every path under `root` with its bytes (onnxruntime's own telemetry under HOME/.cache left out)."""
    return sorted((str(p.relative_to(root)), p.read_bytes() if p.is_file() else None) for p in root.rglob("*")
                  if ".cache" not in p.relative_to(root).parts)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """tmp/work/sub (the current folder) and tmp/home (HOME), each holding a file of the user's."""
    sub, home = tmp_path / "work" / "sub", tmp_path / "home"
    sub.mkdir(parents=True)
    home.mkdir()
    for folder in (tmp_path / "work", sub, home):
        (folder / "report.docx").write_text("precious")
    monkeypatch.chdir(sub)
    monkeypatch.setenv("HOME", str(home))
    return tmp_path


def test_force_never_replaces_the_current_folder_its_parents_home_or_root(tree, tiny_artifact):
    art = shutil.copytree(tiny_artifact, tree / "art")
    before = _snapshot(tree)
    cases = [
        (("tiny", "--out", ".", "--force"), "is the current folder"),
        (("tiny", "--out", "..", "--force"), "contains the current folder"),
        (("tiny", "--out", tree / "work" / "sub", "--force"), "is the current folder"),
        (("tiny", "--out", tree, "--force"), "contains the current folder"),
        (("tiny", "--out", tree / "home", "--force"), "is your home folder"),
        (("tiny", "--out", "/", "--force"), "is the root folder"),
        (("onnx", "tiny", "--out", "..", "--force"), "contains the current folder"),
        (("triton", art, "--out", ".", "--force"), "is the current folder"),
        (("quantize", art, "--out", "..", "--precision", "int8", "--force"), "contains the current folder"),
        (("build", ".", "--model", "tiny", "--target", "onnxruntime"), "is the current folder"),
        (("tiny", "--out", "."), "is the current folder"),  # without --force too: never "use --force"
    ]
    for args, words in cases:
        _refused(args, words, "never replaces it")
    assert _snapshot(tree) == before


def test_force_replaces_only_a_folder_jflow_wrote(tree):
    theirs = tree / "dot3"
    theirs.mkdir()
    (theirs / "report.docx").write_text("precious")
    for args in (("tiny", "--out", theirs, "--force"), ("onnx", "tiny", "--out", theirs, "--force")):
        _refused(args, "not written by jflow", "remove it yourself")
    assert sorted(p.name for p in theirs.iterdir()) == ["report.docx"]

    ours = tree / "ckpt"
    assert _run("tiny", "--out", ours).exit_code == 0
    assert (ours / OUTPUT_MARK).is_file()  # jflow's mark: a later --force may replace it
    (ours / "config.json").write_text("{}")
    assert _run("tiny", "--out", ours, "--force").exit_code == 0
    assert (ours / "config.json").read_text() != "{}"

    link = tree / "link"
    link.symlink_to(ours)
    _refused(("tiny", "--out", link, "--force"), "symbolic link")
    assert (ours / "model.safetensors").is_file()


def test_an_export_never_replaces_or_enters_its_source(tree, tiny_dir, tiny_artifact):
    ckpt = shutil.copytree(tiny_dir, tree / "ckpt")
    art = shutil.copytree(tiny_artifact, tree / "art")
    shutil.copytree(ckpt / "vae", tree / "vae")  # a --vae folder is a source too
    before = _snapshot(tree)
    cases = [
        (("onnx", ckpt, "--out", ckpt, "--force"), "is the source"),
        (("onnx", ckpt, "--out", ckpt / "onnx"), "lies inside the source"),
        (("onnx", ckpt, "--out", tree / "vae" / "x", "--vae", tree / "vae"), "lies inside the source"),
        (("triton", art, "--out", art, "--force"), "is the source"),
        (("triton", art, "--out", art / "repo"), "lies inside the source"),
        (("quantize", art, "--out", art, "--precision", "int8", "--force"), "is the source"),
        (("quantize", art / "onnx" / "..", "--out", art / "q", "--precision", "int4"), "lies inside the source"),
        (("build", ckpt / "art", "--model", ckpt, "--target", "onnxruntime"), "lies inside the source"),
    ]
    for args, words in cases:
        _refused(args, words, "outside it")
    assert _snapshot(tree) == before


def test_the_api_keeps_the_same_rules(tree, tiny_ref, tiny_dir, tiny_artifact):
    from jflow.calibration.quantize import quantize_artifact
    from jflow.export.artifact import export_artifact
    from jflow.modeling import load_janusflow, write_tiny_checkpoint
    from jflow.serving.triton.repository import export_repository

    art = shutil.copytree(tiny_artifact, tree / "art")
    art_before = _snapshot(art)
    with pytest.raises(OutputError, match="is the source"):
        quantize_artifact(art, art, "int8", samples=1, force=True, log=lambda _: None)
    with pytest.raises(OutputError, match="lies inside the source"):
        export_repository(art, art / "repo", log=lambda _: None)
    assert _snapshot(art) == art_before

    ckpt = shutil.copytree(tiny_dir, tree / "ckpt")
    before = _snapshot(ckpt)
    ref = load_janusflow(ckpt)
    with pytest.raises(OutputError, match="is the source"):
        export_artifact(ref, ckpt, force=True, log=lambda _: None)
    theirs = tree / "theirs"
    theirs.mkdir()
    (theirs / "report.docx").write_text("precious")
    with pytest.raises(OutputError, match="not written by jflow"):
        write_tiny_checkpoint(theirs, overwrite=True)
    assert _snapshot(ckpt) == before and (theirs / "report.docx").read_text() == "precious"
