"""Folders written under a temporary name: a killed writer's leftovers are removed by the next run (only
when provably abandoned), and publishing never silently replaces a folder that appeared meanwhile."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from jflow import fsutil, ownership
from jflow.errors import OutputError
from jflow.output_folders import OUTPUT_MARK


def partials(folder, name):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


def fake_partial(parent, name, suffix, **marker):
    """A leftover .NAME.partial-SUFFIX folder; with `marker` fields, an owner marker too."""
    folder = parent / f".{name}{fsutil.PARTIAL}{suffix}"
    (folder / fsutil.CONTENT).mkdir(parents=True)
    (folder / fsutil.CONTENT / "half.onnx").write_bytes(b"half")
    if marker:
        (folder / ownership.MARKER).write_text(json.dumps({**ownership.identity(), **marker}))
    return folder


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_abandoned_is_proven_never_guessed(tmp_path):
    assert ownership.is_abandoned(fake_partial(tmp_path, "a", "dead", pid=dead_pid()))
    assert not ownership.is_abandoned(fake_partial(tmp_path, "a", "nomarker"))
    assert not ownership.is_abandoned(fake_partial(tmp_path, "a", "live"))  # this very process
    assert not ownership.is_abandoned(fake_partial(tmp_path, "a", "otherhost", pid=dead_pid(),
                                                   host=socket.gethostname() + "-elsewhere"))
    garbled = fake_partial(tmp_path, "a", "garbled")
    (garbled / ownership.MARKER).write_text("{not json")
    assert not ownership.is_abandoned(garbled)
    if ownership.identity()["start"] is not None:  # Linux: a reused pid (same number, other start time)
        assert ownership.is_abandoned(fake_partial(tmp_path, "a", "reused", start=1))
    if ownership.identity()["boot_id"] is not None:
        assert ownership.is_abandoned(fake_partial(tmp_path, "a", "reboot", boot_id="an-earlier-boot"))


def test_next_run_removes_only_abandoned_partials_of_that_name(tmp_path):
    stale = fake_partial(tmp_path, "art", "dead", pid=dead_pid())
    kept = [fake_partial(tmp_path, "art", "nomarker"), fake_partial(tmp_path, "art", "live"),
            fake_partial(tmp_path, "other", "dead", pid=dead_pid())]
    with fsutil.staged_dir(tmp_path / "art") as folder:
        (folder / "model.onnx").write_bytes(b"whole")
    assert not stale.exists() and all(k.exists() for k in kept)
    assert (tmp_path / "art" / "model.onnx").read_bytes() == b"whole"
    assert not (tmp_path / "art" / ownership.MARKER).exists()  # the marker is never published


WRITER = """
import sys, time
from jflow.fsutil import staged_dir
with staged_dir(sys.argv[1]) as folder:
    (folder / "graph.onnx").write_bytes(b"half")
    print("writing", flush=True)
    time.sleep(60)
"""


def kill_while_writing(script: str, target) -> None:
    """Run `script` on `target` in a child process and SIGKILL it once it says it is writing."""
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_killed_writer_leaves_a_partial_that_the_next_run_removes(tmp_path):
    out = tmp_path / "art"
    kill_while_writing(WRITER, out)
    assert len(partials(tmp_path, "art")) == 1 and not out.exists()
    with fsutil.staged_dir(out) as folder:
        (folder / "graph.onnx").write_bytes(b"whole")
    assert partials(tmp_path, "art") == [] and (out / "graph.onnx").read_bytes() == b"whole"


@pytest.mark.parametrize("native", [True, False], ids=["renameat2", "fallback"])
def test_publishing_refuses_a_target_that_appeared_meanwhile(tmp_path, monkeypatch, native):
    if not native:
        monkeypatch.setattr(fsutil, "_renameat2", lambda: None)
    out = tmp_path / "art"
    with pytest.raises(OutputError, match="appeared while"):
        with fsutil.staged_dir(out) as folder:
            (folder / "mine").write_text("second")
            with fsutil.staged_dir(out) as theirs:  # another export finished first
                (theirs / "theirs").write_text("first")
    assert contents(out) == ["theirs"] and partials(tmp_path, "art") == []
    with fsutil.staged_dir(out, replace=True) as folder:  # --force still replaces jflow's own output
        (folder / "mine").write_text("forced")
    assert contents(out) == ["mine"] and partials(tmp_path, "art") == []


def contents(folder):
    """What a published folder holds besides jflow's output mark."""
    return sorted(p.name for p in folder.iterdir() if p.name != OUTPUT_MARK)


def test_force_replaces_only_what_jflow_wrote_checked_just_before_the_swap(tmp_path):
    out = tmp_path / "art"
    with fsutil.staged_dir(out) as folder:
        (folder / "graph.onnx").write_text("v1")
    assert (out / OUTPUT_MARK).is_file()  # every published folder carries the mark
    with pytest.raises(OutputError, match="not written by jflow"):
        with fsutil.staged_dir(out, replace=True) as folder:
            (folder / "graph.onnx").write_text("v2")
            # While this export ran, the folder was replaced by one of the user's own.
            os.rename(out, tmp_path / "moved-away")
            out.mkdir()
            (out / "report.docx").write_text("precious")
    assert contents(out) == ["report.docx"] and (out / "report.docx").read_text() == "precious"
    assert partials(tmp_path, "art") == []


def test_the_mark_in_a_moved_folder_is_checked_too(tmp_path, monkeypatch):
    """The check before the swap and the swap are two steps: what was moved is checked again, and a folder
    that is not jflow's goes back where it was."""
    out = tmp_path / "art"
    with fsutil.staged_dir(out) as folder:
        (folder / "graph.onnx").write_text("v1")
    real_check = fsutil.check_replaceable

    def check_then_swap(path, what):  # the user's folder takes the name just after the check
        real_check(path, what)
        os.rename(out, tmp_path / "moved-away")
        out.mkdir()
        (out / "report.docx").write_text("precious")
    monkeypatch.setattr(fsutil, "check_replaceable", check_then_swap)
    with pytest.raises(OutputError, match="not jflow's output"):
        with fsutil.staged_dir(out, replace=True) as folder:
            (folder / "graph.onnx").write_text("v2")
    assert contents(out) == ["report.docx"] and partials(tmp_path, "art") == []


def test_an_export_never_replaces_or_enters_its_source(tmp_path):
    source = tmp_path / "ckpt"
    with fsutil.staged_dir(source) as folder:
        (folder / "model.safetensors").write_text("weights")
    for out, how in ((source, "is the source"), (source / "sub", "lies inside the source"),
                     (tmp_path, "contains the source"), (tmp_path / "ckpt" / ".." / "ckpt", "is the source")):
        with pytest.raises(OutputError, match=how):
            fsutil.check_new_dir(out, replace=True, sources=[source])
        with pytest.raises(OutputError, match=how):
            with fsutil.staged_dir(out, replace=True, sources=[source]):
                pass
    link = tmp_path / "link"
    link.symlink_to(source)  # another spelling of the same folder
    with pytest.raises(OutputError, match="is the source"):
        fsutil.check_new_dir(source, replace=True, sources=[link])
    assert (source / "model.safetensors").read_text() == "weights"


def test_fallback_also_refuses_an_empty_target_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(fsutil, "_renameat2", lambda: None)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()  # a plain rename would silently replace an empty folder
    with pytest.raises(FileExistsError):
        fsutil.rename_noreplace(src, dst)
    assert src.is_dir()


def test_rename_noreplace_of_a_file(tmp_path):
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    with pytest.raises(FileExistsError):
        fsutil.rename_noreplace(tmp_path / "a", tmp_path / "b")
    fsutil.rename_noreplace(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "b").read_text() == "b" and (tmp_path / "c").read_text() == "a"


SCRATCH_WRITER = """
import sys, time
from jflow.fsutil import scratch_dir
with scratch_dir(sys.argv[1]) as scratch:
    (scratch / "llm.onnx.data").write_bytes(b"big")
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_killed_ort_build_leaves_a_scratch_folder_that_the_next_one_removes(tmp_path):
    kill_while_writing(SCRATCH_WRITER, tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    unmarked = tmp_path / f"{fsutil.SCRATCH}someone-elses"
    unmarked.mkdir()
    with fsutil.scratch_dir(tmp_path) as scratch:
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([scratch.name, unmarked.name])
    assert [p.name for p in tmp_path.iterdir()] == [unmarked.name]


def test_a_dotdot_target_names_the_folder_it_is(tmp_path):
    (tmp_path / "art").mkdir()
    with pytest.raises(OutputError, match="already exists"):
        fsutil.check_new_dir(tmp_path / "art" / "x" / "..")
    assert not (tmp_path / "art" / "x").exists()


def test_what_counts_as_written_by_jflow(tmp_path, tiny_artifact):
    """The mark, or (for folders written before it) an artifact's manifest or a repository's generated
    model.py; never a look-alike of the user's, a link, or a file."""
    from jflow.output_folders import written_by_jflow

    legacy_artifact = tmp_path / "old-art"
    legacy_artifact.mkdir()
    (legacy_artifact / "manifest.json").write_bytes((tiny_artifact / "manifest.json").read_bytes()[:5000])
    legacy_repo = tmp_path / "old-repo" / "janusflow_generate" / "1"
    legacy_repo.mkdir(parents=True)
    (legacy_repo / "model.py").write_text('"""Written by `jflow-export triton`: a Triton Python-backend model"""')
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "manifest.json").write_text('{"name": "my web app", "jflow_version": "1"}')
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / OUTPUT_MARK).symlink_to(legacy_artifact / "manifest.json")
    link = tmp_path / "link"
    link.symlink_to(legacy_artifact)
    assert written_by_jflow(legacy_artifact) and written_by_jflow(tmp_path / "old-repo")
    assert not any(written_by_jflow(p) for p in (theirs, forged, link, legacy_artifact / "manifest.json"))


def test_a_deeply_nested_mark_is_not_ours_and_no_traceback(tmp_path):
    # Before: json.loads on the mark raised RecursionError, and `--force` ended in a traceback.
    from jflow.output_folders import written_by_jflow

    folder = tmp_path / "nested"
    folder.mkdir()
    (folder / OUTPUT_MARK).write_text("[" * 4000)
    assert not written_by_jflow(folder)
