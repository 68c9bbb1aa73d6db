"""The jflow-export command line on the tiny model: outputs, and one clear line for each bad input."""

import numpy as np
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
        (("reference", "generate", "--model", "tiny", "x", "--steps", 0), "steps must be"),
        (("reference", "generate", "--model", "tiny", "x", "--cfg", -2), "cfg weight must be"),
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
        (("generate", tiny_artifact, "x", "--steps", 0), "steps must be"),
        (("generate", tmp_path / "none", "x"), "not a jflow artifact"),
        (("chat", tiny_artifact, "--image", tmp_path / "none.png", "q"), "image file not found"),
    ]
    for args, message in cases:
        result = _run(*args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
    # An unknown backend is refused by the option parser, before anything loads.
    result = _run("chat", tiny_artifact, "--image", tmp_path / "none.png", "q", "--backend", "tf")
    assert result.exit_code == 2 and "Invalid value for '--backend'" in result.output
