"""The jflow-export command line on the tiny model: outputs, and one clear line for each bad input."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from jflow.cli import main


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_tiny_then_reference_generate(tmp_path):
    ckpt = tmp_path / "ckpt"
    assert _run("tiny", ckpt).exit_code == 0
    assert (ckpt / "config.json").is_file() and (ckpt / "vae" / "config.json").is_file()
    out = tmp_path / "img.png"
    result = _run("reference", "generate", "--model", ckpt, "a red cube", "-o", out, "--steps", 2, "--seed", 1)
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(out))
    assert image.shape == (384, 384, 3) and image.std() > 0

    from jflow.modeling import load_janusflow
    expected = load_janusflow(ckpt).generate("a red cube", steps=2, seed=1).images[0]
    assert np.array_equal(image, expected)


def test_reference_generate_several(tmp_path):
    result = _run("reference", "generate", "--model", "tiny", "a cat", "-o", tmp_path / "cat.png",
                  "--steps", 1, "-n", 2, "--seed", 0)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cat-1.png").is_file() and (tmp_path / "cat-2.png").is_file()


def test_reference_chat(tmp_path, tiny_ref, photo):
    Image.fromarray(photo).save(tmp_path / "photo.png")
    result = _run("reference", "chat", "--model", "tiny", "--image", tmp_path / "photo.png", "what is this?",
                  "--max-new-tokens", 5)
    assert result.exit_code == 0, result.output
    assert result.output.rstrip("\n") == tiny_ref.answer(photo, "what is this?", max_new_tokens=5)


def test_bad_inputs_give_one_clear_line(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    cases = [
        (("reference", "generate", "--model", tmp_path / "missing", "x"), "checkpoint folder not found"),
        (("reference", "generate", "--model", "tiny", "x", "--steps", 0), "Invalid value for '--steps'"),
        (("reference", "generate", "--model", "tiny", "x", "--cfg", -2), "Invalid value for '--cfg'"),
        (("reference", "generate", "--model", "tiny", "x", "-o", tmp_path / "a.jpg"), "must end in .png"),
        (("reference", "chat", "--model", "tiny", "--image", tmp_path / "notes.png", "q"), "not a readable image"),
        (("reference", "chat", "--model", "tiny", "--image", tmp_path / "none.png", "q"), "image file not found"),
    ]
    for args, message in cases:
        result = _run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output


def test_tiny_refuses_existing_folder(tmp_path):
    assert _run("tiny", tmp_path / "t").exit_code == 0
    result = _run("tiny", tmp_path / "t")
    assert result.exit_code == 1 and "already exists" in result.output
    assert _run("tiny", tmp_path / "t", "--force").exit_code == 0


def test_onnx_then_verify(tmp_path):
    art = tmp_path / "art"
    result = _run("onnx", "--model", "tiny", "--out", art, "--max-batch", 2, "--max-context", 800)
    assert result.exit_code == 0, result.output
    assert "jflow-export verify" in result.output
    result = _run("verify", art)
    assert result.exit_code == 0 and "0 failed" in result.output

    (art / "reference" / "llm.npz").write_bytes(b"tampered")
    result = CliRunner().invoke(main, ["verify", str(art)])
    assert result.exit_code == 1 and "reference/llm.npz" in result.output and "FAIL" in result.output

    result = _run("onnx", "--model", "tiny", "--out", art)
    assert result.exit_code == 1 and "already exists" in result.output


def test_verify_of_a_folder_that_is_no_artifact(tmp_path):
    result = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert result.exit_code == 1 and "jflow-export onnx" in result.output


def test_generate_and_chat_on_an_artifact(tiny_artifact, tiny_ref, tmp_path, photo):
    out = tmp_path / "cube.png"
    result = _run("generate", tiny_artifact, "a red cube", "-o", out, "--steps", 2, "--seed", 4)
    assert result.exit_code == 0, result.output
    expected = tiny_ref.generate("a red cube", steps=2, seed=4).images[0]
    assert np.abs(np.asarray(Image.open(out)).astype(int) - expected).max() <= 1

    Image.fromarray(photo).save(tmp_path / "photo.png")
    result = _run("chat", tiny_artifact, "--image", tmp_path / "photo.png", "what is this?", "--max-new-tokens", 5)
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip("\n") == tiny_ref.answer(photo, "what is this?", max_new_tokens=5)


def test_generate_and_chat_bad_input(tiny_artifact, tmp_path):
    cases = [
        (("generate", tiny_artifact, "x", "--steps", 0), "Invalid value for '--steps'"),
        (("generate", tmp_path / "none", "x"), "not a jflow artifact"),
        (("chat", tiny_artifact, "--image", tmp_path / "none.png", "q"), "image file not found"),
    ]
    for args, message in cases:
        result = _run(*args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
    # An unknown backend is refused by the option parser, before anything loads.
    result = _run("chat", tiny_artifact, "--image", tmp_path / "none.png", "q", "--backend", "tf")
    assert result.exit_code == 1 and "Invalid value for '--backend'" in result.output


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder nobody may create files in (root ignores permissions: then the read-only /sys)."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").write_text("x")
    except OSError:
        yield folder
    else:
        (folder / "probe").unlink()
        try:
            open("/sys/jflow-probe", "w").close()
        except OSError:
            yield Path("/sys")
        else:
            pytest.skip("no unwritable folder on this machine")
    finally:
        folder.chmod(0o755)


def _refused(args, message, code=1):
    result = _run(*args)
    assert result.exit_code == code, (args, result.output)
    assert message in result.output, (args, result.output)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "Traceback" not in result.output and len(errors) == 1 and message in errors[0], result.output


def test_output_paths_are_checked_before_anything_loads(tmp_path, unwritable_dir):
    (tmp_path / "taken.png").mkdir()
    (tmp_path / "c-2.png").mkdir()
    (tmp_path / "afile").write_text("x")
    missing = tmp_path / "no-such-artifact"  # would fail loading: the output check must come first
    cases = [
        (("generate", missing, "x", "-o", tmp_path / "taken.png"), "taken.png is a folder"),
        (("generate", missing, "x", "-o", unwritable_dir / "o.png"), "not writable"),
        (("generate", missing, "x", "-o", tmp_path / "nope" / "o.png"), "does not exist"),
        (("generate", missing, "x", "-o", tmp_path / "c.png", "-n", 2), "c-2.png is a folder"),
        (("reference", "generate", "--model", missing, "x", "-o", tmp_path / "taken.png"), "is a folder"),
        (("reference", "generate", "--model", missing, "x", "-o", unwritable_dir / "o.png"), "not writable"),
        (("profile", missing, "--json", tmp_path / "taken.png"), "is a folder"),
        (("profile", missing, "--trace", unwritable_dir / "t.json"), "not writable"),
        (("onnx", "--model", missing, "--out", unwritable_dir / "art"), "not writable"),
        (("onnx", "--model", missing, "--out", tmp_path / "afile" / "x" / "art"), "afile is a file, not a folder"),
        (("build", "--model", missing, "--out", unwritable_dir / "art", "--target", "onnxruntime"), "not writable"),
        (("tiny", unwritable_dir / "ckpt"), "not writable"),
    ]
    for args, message in cases:
        _refused(args, message)
    # nothing left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "c-2.png", "readonly", "taken.png"]
    assert list((tmp_path / "taken.png").iterdir()) == []


def test_a_failed_write_is_one_clear_line(tmp_path, monkeypatch):
    import errno

    from PIL import Image as PILImage

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(PILImage.Image, "save", disk_full)
    _refused(("reference", "generate", "--model", "tiny", "x", "--steps", 1, "-o", tmp_path / "o.png"),
             "No space left on device")
    assert list(tmp_path.iterdir()) == []  # no half-written or temporary file


def test_a_failed_write_during_tiny_is_one_clear_line(tmp_path, monkeypatch):
    import errno

    import jflow.modeling.checkpoint as checkpoint_module

    def disk_full(reference, folder, dtype, shard_bytes):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "model.safetensors"))
    monkeypatch.setattr(checkpoint_module, "_write_checkpoint", disk_full)
    _refused(("tiny", tmp_path / "ckpt"), "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_numeric_options_are_refused_by_the_parser(tmp_path):
    missing = tmp_path / "no-such-artifact"  # nothing may load: the parser refuses first
    cases = [
        (("generate", missing, "x", "--seed", -1), "--seed"),
        (("generate", missing, "x", "--seed", 2**64), "--seed"),
        (("reference", "generate", "--model", missing, "x", "--seed", -1), "--seed"),
        (("chat", missing, "--image", missing, "q", "--seed", -5), "--seed"),
        (("reference", "chat", "--model", missing, "--image", missing, "q", "--seed", -5), "--seed"),
        (("tiny", tmp_path / "t", "--seed", -1), "--seed"),
        (("generate", missing, "x", "--cfg", "1e300"), "--cfg"),
        (("generate", missing, "x", "--cfg", "nan"), "--cfg"),
        (("reference", "generate", "--model", missing, "x", "--cfg", "inf"), "--cfg"),
        (("generate", missing, "x", "--steps", 0), "--steps"),
        (("chat", missing, "--image", missing, "q", "--temperature", -1), "--temperature"),
        (("chat", missing, "--image", missing, "q", "--temperature", "nan"), "--temperature"),
        (("chat", missing, "--image", missing, "q", "--top-p", 0), "--top-p"),
        (("reference", "chat", "--model", missing, "--image", missing, "q", "--top-p", 1.5), "--top-p"),
        (("chat", missing, "--image", missing, "q", "--max-new-tokens", 0), "--max-new-tokens"),
        (("reference", "chat", "--model", missing, "--image", missing, "q", "--max-new-tokens", -3),
         "--max-new-tokens"),
    ]
    for args, message in cases:
        _refused(args, message)
    assert list(tmp_path.iterdir()) == []


def test_help_states_the_cfg_range():
    assert "0 to 100" in _run("generate", "--help").output
