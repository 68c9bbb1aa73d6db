"""JSON from an artifact or a checkpoint is read within bounds: a manifest (or config, tokenizer config,
shard index, owner marker) nested thousands of levels deep, or too large, is one clear line, never a
RecursionError traceback."""

import json
import shutil

import pytest
from click.testing import CliRunner

from jflow.artifact.manifest import ArtifactError, Manifest
from jflow.cli import main
from jflow.errors import CheckpointError, ConfigError


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.fixture
def art(tiny_artifact, tmp_path):
    return shutil.copytree(tiny_artifact, tmp_path / "art")


@pytest.mark.parametrize("levels", [5_000, 200_000])
def test_a_deeply_nested_manifest_is_one_line_in_generate_and_verify(art, tmp_path, levels):
    (art / "manifest.json").write_text(_nested(levels))
    with pytest.raises(ArtifactError, match="manifest.json is nested more than 64 levels deep"):
        Manifest.load(art)
    for args in (["generate", str(art), "a cube", "-o", str(tmp_path / "x.png")], ["verify", str(art)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and "manifest.json is nested more than 64 levels deep" in result.output, args
        assert "Traceback" not in result.output and "RecursionError" not in result.output
        assert not isinstance(result.exception, RecursionError)


def test_nesting_the_parser_survives_is_refused_too(art):
    data = json.loads((art / "manifest.json").read_text())
    deep = {}
    for _ in range(100):  # within Python's recursion limit, but no manifest of ours is near this deep
        deep = {"x": deep}
    data["tools"]["note"] = deep
    (art / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="nested more than 64 levels deep"):
        Manifest.load(art, check_files=False)


def test_json_files_are_read_within_a_size_bound(tmp_path):
    from jflow.json_file import BadJSON, read_json
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"x": "y" * 5000}))
    assert read_json(path, max_bytes=6000)["x"] == "y" * 5000
    with pytest.raises(BadJSON, match="is larger than 0 MiB"):
        read_json(path, max_bytes=4000)


def test_every_json_of_an_artifact_or_checkpoint_is_bounded(art, tiny_dir, tmp_path):
    from jflow.modeling.config import read_config
    from jflow.modeling.weights import weight_files
    from jflow.ownership import MARKER, is_abandoned
    from jflow.runtime.processor_config import ProcessorSettings
    from jflow.runtime.tokenizer import JanusFlowTokenizer

    ckpt = shutil.copytree(tiny_dir, tmp_path / "ckpt")
    (ckpt / "config.json").write_text(_nested(200_000))
    with pytest.raises(ConfigError, match="config.json is nested more than 64 levels deep"):
        read_config(ckpt)
    (art / "tokenizer_config.json").write_text(_nested(5_000))
    with pytest.raises(ConfigError, match="tokenizer_config.json is nested more than 64 levels deep"):
        JanusFlowTokenizer.from_dir(art)
    (art / "processor_config.json").write_text(_nested(5_000))
    with pytest.raises(ConfigError, match="processor_config.json is nested more than 64 levels deep"):
        ProcessorSettings.from_dir(art)
    (ckpt / "model.safetensors.index.json").write_text(_nested(5_000))
    with pytest.raises(CheckpointError, match="index.json is not a valid shard index.*nested more than 64"):
        weight_files(ckpt)
    planted = tmp_path / ".x.partial-1"
    planted.mkdir()
    (planted / MARKER).write_text(_nested(200_000))
    assert is_abandoned(planted) is False  # not provably ours: kept, and no traceback


def test_a_fifo_in_place_of_a_json_file_is_named_and_never_blocks(art):
    import os
    import threading

    from jflow.runtime.processor_config import ProcessorSettings
    (art / "processor_config.json").unlink()
    os.mkfifo(art / "processor_config.json")
    outcome = []

    def load():
        try:
            ProcessorSettings.from_dir(art)
        except Exception as exc:  # the ConfigError under test
            outcome.append(exc)
    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "reading a FIFO as processor_config.json blocked"
    assert isinstance(outcome[0], ConfigError)
    assert "processor_config.json (is a named pipe (FIFO), not a file)" in str(outcome[0])
