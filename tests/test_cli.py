"""The jflow-export command line on the tiny model: outputs, and one clear line for each bad input."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from jflow.cli import main
from jflow.terminal import terminal_safe


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_tiny_then_reference_generate(tmp_path):
    ckpt = tmp_path / "ckpt"
    assert _run("tiny", "--out", ckpt).exit_code == 0
    assert (ckpt / "config.json").is_file() and (ckpt / "vae" / "config.json").is_file()
    out = tmp_path / "img.png"
    result = _run("reference", "generate", ckpt, "a red cube", "-o", out, "--steps", 2, "--seed", 1)
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(out))
    assert image.shape == (384, 384, 3) and image.std() > 0

    from jflow.modeling import load_janusflow
    expected = load_janusflow(ckpt).generate("a red cube", steps=2, seed=1).images[0]
    assert np.array_equal(image, expected)


def test_reference_generate_several(tmp_path):
    result = _run("reference", "generate", "tiny", "a cat", "-o", tmp_path / "cat.png",
                  "--steps", 1, "-n", 2, "--seed", 0)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cat-1.png").is_file() and (tmp_path / "cat-2.png").is_file()


def test_reference_chat(tmp_path, tiny_ref, photo):
    Image.fromarray(photo).save(tmp_path / "photo.png")
    result = _run("reference", "chat", "tiny", "--image", tmp_path / "photo.png", "what is this?",
                  "--max-new-tokens", 5)
    assert result.exit_code == 0, result.output
    assert result.output.rstrip("\n") == terminal_safe(tiny_ref.answer(photo, "what is this?", max_new_tokens=5))


def test_bad_inputs_give_one_clear_line(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    cases = [
        (("reference", "generate", tmp_path / "missing", "x"), "checkpoint folder not found"),
        (("reference", "generate", "tiny", "x", "--steps", 0), "Invalid value for '--steps'"),
        (("reference", "generate", "tiny", "x", "--cfg", -2), "Invalid value for '--cfg'"),
        (("reference", "generate", "tiny", "x", "-o", tmp_path / "a.jpg"), "must end in .png"),
        (("reference", "chat", "tiny", "--image", tmp_path / "notes.png", "q"), "not a readable image"),
        (("reference", "chat", "tiny", "--image", tmp_path / "none.png", "q"), "image file not found"),
    ]
    for args, message in cases:
        result = _run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output


def test_tiny_refuses_existing_folder(tmp_path):
    assert _run("tiny", "--out", tmp_path / "t").exit_code == 0
    result = _run("tiny", "--out", tmp_path / "t")
    assert result.exit_code == 1 and "already exists" in result.output
    assert _run("tiny", "--out", tmp_path / "t", "--force").exit_code == 0


def test_onnx_then_verify(tmp_path):
    art = tmp_path / "art"
    result = _run("onnx", "tiny", "--out", art, "--max-batch", 2, "--max-context", 800)
    assert result.exit_code == 0, result.output
    assert "jflow-export verify" in result.output
    result = _run("verify", art)
    assert result.exit_code == 0 and "0 failed" in result.output

    (art / "reference" / "llm.npz").write_bytes(b"tampered")
    result = CliRunner().invoke(main, ["verify", str(art)])
    assert result.exit_code == 1 and "reference/llm.npz" in result.output and "FAIL" in result.output

    result = _run("onnx", "tiny", "--out", art)
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
    assert result.stdout.rstrip("\n") == terminal_safe(tiny_ref.answer(photo, "what is this?", max_new_tokens=5))


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
        (("reference", "generate", missing, "x", "-o", tmp_path / "taken.png"), "is a folder"),
        (("reference", "generate", missing, "x", "-o", unwritable_dir / "o.png"), "not writable"),
        (("profile", missing, "--json", tmp_path / "taken.png"), "is a folder"),
        (("profile", missing, "--trace", unwritable_dir / "t.json"), "not writable"),
        (("onnx", missing, "--out", unwritable_dir / "art"), "not writable"),
        (("onnx", missing, "--out", tmp_path / "afile" / "x" / "art"), "afile is a file, not a folder"),
        (("build", unwritable_dir / "art", "--model", missing, "--target", "onnxruntime"), "not writable"),
        (("tiny", "--out", unwritable_dir / "ckpt"), "not writable"),
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
    _refused(("reference", "generate", "tiny", "x", "--steps", 1, "-o", tmp_path / "o.png"),
             "No space left on device")
    assert list(tmp_path.iterdir()) == []  # no half-written or temporary file


def test_a_failed_write_during_tiny_is_one_clear_line(tmp_path, monkeypatch):
    import errno

    import jflow.modeling.checkpoint as checkpoint_module

    def disk_full(reference, folder, dtype, shard_bytes):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "model.safetensors"))
    monkeypatch.setattr(checkpoint_module, "_write_checkpoint", disk_full)
    _refused(("tiny", "--out", tmp_path / "ckpt"), "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_numeric_options_are_refused_by_the_parser(tmp_path):
    missing = tmp_path / "no-such-artifact"  # nothing may load: the parser refuses first
    cases = [
        (("generate", missing, "x", "--seed", -1), "--seed"),
        (("generate", missing, "x", "--seed", 2**64), "--seed"),
        (("reference", "generate", missing, "x", "--seed", -1), "--seed"),
        (("chat", missing, "--image", missing, "q", "--seed", -5), "--seed"),
        (("reference", "chat", missing, "--image", missing, "q", "--seed", -5), "--seed"),
        (("tiny", "--out", tmp_path / "t", "--seed", -1), "--seed"),
        (("generate", missing, "x", "--cfg", "1e300"), "--cfg"),
        (("generate", missing, "x", "--cfg", "nan"), "--cfg"),
        (("reference", "generate", missing, "x", "--cfg", "inf"), "--cfg"),
        (("generate", missing, "x", "--steps", 0), "--steps"),
        (("chat", missing, "--image", missing, "q", "--temperature", -1), "--temperature"),
        (("chat", missing, "--image", missing, "q", "--temperature", "nan"), "--temperature"),
        (("chat", missing, "--image", missing, "q", "--top-p", 0), "--top-p"),
        (("reference", "chat", missing, "--image", missing, "q", "--top-p", 1.5), "--top-p"),
        (("chat", missing, "--image", missing, "q", "--max-new-tokens", 0), "--max-new-tokens"),
        (("reference", "chat", missing, "--image", missing, "q", "--max-new-tokens", -3),
         "--max-new-tokens"),
    ]
    for args, message in cases:
        _refused(args, message)
    assert list(tmp_path.iterdir()) == []


def test_help_states_the_cfg_range():
    assert "0 to 100" in _run("generate", "--help").output


def _name_of_bytes(size: int, tail: str = ".png") -> str:
    return "n" * (size - len(tail)) + tail


def test_output_names_too_long_or_too_many_are_refused_before_any_work(tmp_path):
    """Issue 18, point 11: a 300-byte -o name and a huge -n are one line each, before anything loads."""
    import os

    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    missing = tmp_path / "no-such-artifact"  # would fail loading: the name check must come first
    _refused(("generate", missing, "x", "-o", tmp_path / _name_of_bytes(limit + 45)), f"at most {limit}")
    # out-1.png fits, out-10.png does not: the longest of the -n names is checked with the others
    _refused(("generate", missing, "x", "-o", tmp_path / _name_of_bytes(limit - 2), "-n", 10), f"at most {limit}")
    _refused(("reference", "generate", missing, "x", "-o", tmp_path / _name_of_bytes(limit + 1)), "bytes")
    _refused(("onnx", missing, "--out", tmp_path / ("a" * (limit + 1))), f"at most {limit}")
    _refused(("profile", missing, "--json", tmp_path / _name_of_bytes(limit + 1, ".json")), f"at most {limit}")
    for count in (10**6, 1001):
        _refused(("generate", missing, "x", "-n", count), "Invalid value for '-n'")
    _refused(("generate", missing, "x", "-n", 1000, "-o", tmp_path / "o.png"), "not a jflow artifact")  # accepted
    assert "1 to 1000" in _run("generate", "--help").output
    assert list(tmp_path.iterdir()) == []


def test_the_longest_legal_names_are_written(tiny_artifact, tmp_path):
    """Issue 18, point 13: names at the file system's limit work; the temporary names never exceed it."""
    import os

    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    single = tmp_path / _name_of_bytes(limit - 4)  # 251 bytes on most file systems
    assert _run("generate", tiny_artifact, "x", "-o", single, "--steps", 1, "--seed", 0).exit_code == 0
    several = tmp_path / _name_of_bytes(limit - 2)  # NAME-1.png and NAME-2.png are exactly at the limit
    result = _run("generate", tiny_artifact, "x", "-o", several, "--steps", 1, "--seed", 0, "-n", 2)
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in tmp_path.iterdir())
    assert [len(n.encode()) for n in written] == [limit - 4, limit, limit]
    assert all(Image.open(tmp_path / n).size == (384, 384) for n in written)


def test_generate_writes_each_chunk_before_making_the_next(tiny_artifact, tmp_path, monkeypatch):
    """Issue 18, point 14: -n N never holds N images. Chunks of the artifact's max_batch (3 here) are decoded
    and written one after another; the images equal one seeded call of the API."""
    from jflow.runtime.pipeline import Pipeline

    decoded = []
    real = Pipeline.decode_latents

    def watched(self, latents):
        decoded.append((len(latents), sorted(p.name for p in tmp_path.glob("o-*.png"))))
        return real(self, latents)
    monkeypatch.setattr(Pipeline, "decode_latents", watched)
    result = _run("generate", tiny_artifact, "a cat", "-o", tmp_path / "o.png", "-n", 7, "--steps", 1, "--seed", 3)
    assert result.exit_code == 0, result.output
    assert decoded == [(3, []), (3, ["o-1.png", "o-2.png", "o-3.png"]), (1, [f"o-{i}.png" for i in range(1, 7)])]
    monkeypatch.setattr(Pipeline, "decode_latents", real)
    with Pipeline.load(tiny_artifact) as pipe:
        expected = pipe.generate("a cat", steps=1, seed=3, num_images=7)
    for i, image in enumerate(expected, 1):
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"o-{i}.png")), np.asarray(image))


def test_threads_are_bounded(tmp_path, tiny_artifact):
    """Issue 18, point 15: --threads 300 on a small machine is refused while parsing, and by Pipeline.load."""
    from jflow.errors import InputError
    from jflow.runtime.pipeline import Pipeline
    from jflow.runtime.requests import max_threads

    missing = tmp_path / "no-such-artifact"
    limit = max_threads()
    for command in (("generate", missing, "x"), ("chat", missing, "--image", missing, "q"), ("profile", missing)):
        _refused((*command, "--threads", limit + 1), f"Invalid value for '--threads': threads must be a whole "
                                                     f"number from 1 to {limit}")
    _refused(("generate", missing, "x", "--threads", limit), "not a jflow artifact")  # the bound itself is fine
    with pytest.raises(InputError, match=f"threads must be a whole number from 1 to {limit}"):
        Pipeline.load(tiny_artifact, threads=10**6)


def test_a_folder_given_as_a_file_gets_a_name_with_the_options_own_extension(tmp_path):
    """Issue 18, point 20."""
    folder = tmp_path / "img"
    folder.mkdir()
    missing = tmp_path / "no-such-artifact"
    _refused(("profile", missing, "--json", folder), f"e.g. {folder / 'profile.json'}")
    _refused(("profile", missing, "--trace", folder), f"e.g. {folder / 'trace.json'}")
    _refused(("build", tmp_path / "art", "--model", missing, "--timing-cache", folder), f"e.g. {folder / 'timing.cache'}")
    _refused(("generate", missing, "x", "-o", folder), f"e.g. {folder / 'out.png'}")


def test_commands_take_inputs_as_arguments_and_outputs_as_out(tmp_path, photo):
    """Issue 18, point 24: one shape for every command; each old spelling still works, with one line on stderr."""
    for command, usage in ((("tiny",), "tiny [OPTIONS]"), (("onnx",), "onnx [OPTIONS] MODEL"),
                           (("build",), "build [OPTIONS] ARTIFACT"), (("quantize",), "quantize [OPTIONS] SRC"),
                           (("triton",), "triton [OPTIONS] ARTIFACT"),
                           (("reference", "generate"), "generate [OPTIONS] MODEL PROMPT"),
                           (("reference", "chat"), "chat [OPTIONS] MODEL QUESTION")):
        help_text = _run(*command, "--help").output
        assert usage in help_text and "legacy" not in help_text.lower(), help_text
    assert "--out" in _run("tiny", "--help").output

    missing = tmp_path / "no-such-ckpt"
    Image.fromarray(photo).save(tmp_path / "photo.png")
    old_and_new = [  # (old spelling, its notice, what shows that it reached the command as the new one does)
        (("tiny", tmp_path / "t"), "use `tiny --out OUT`", "wrote tiny JanusFlow checkpoint"),
        (("onnx", "--model", missing, "--out", tmp_path / "a"), "use `onnx MODEL`", "checkpoint folder not found"),
        (("build", "--out", tmp_path / "b", "--model", missing, "--target", "onnxruntime"), "use `build DIR`",
         "checkpoint folder not found"),
        (("reference", "generate", "--model", "tiny", "a cat", "-o", tmp_path / "c.png", "--steps", 1),
         "use `reference generate MODEL PROMPT`", "wrote"),
        (("reference", "chat", "--model", missing, "--image", tmp_path / "photo.png", "q"),
         "use `reference chat MODEL --image IMG QUESTION`", "checkpoint folder not found"),
    ]
    for args, notice, reached in old_and_new:
        result = _run(*args)
        notices = [line for line in result.stderr.splitlines() if "deprecated" in line]
        assert len(notices) == 1 and notice in notices[0], (args, result.output)
        assert reached in result.output, (args, result.output)
    assert (tmp_path / "t" / "config.json").is_file() and (tmp_path / "c.png").is_file()
    result = _run("reference", "generate", "tiny", "x", "--model", "tiny", "-o", tmp_path / "d.png")
    assert result.exit_code == 2 and "give it once" in result.output  # both spellings at once
    result = _run("onnx", "--out", tmp_path / "e")
    assert result.exit_code == 2 and "Missing argument 'MODEL'" in result.output
