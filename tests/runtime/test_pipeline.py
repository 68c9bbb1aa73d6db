"""The torch-free Pipeline over the tiny fp32 artifact, checked against the PyTorch reference."""

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jflow.errors import InputError, JFlowError
from jflow.artifact.manifest import ArtifactError
from jflow.runtime.ode import initial_noise
from jflow.runtime.pipeline import Pipeline
from jflow.runtime.tokenizer import TextStream

QUESTION = "what is in this picture?"


@pytest.fixture(scope="module")
def pipe(tiny_artifact):
    return Pipeline.load(tiny_artifact)


def test_generate_equals_reference(pipe, tiny_ref):
    noise = initial_noise(3, 1, 48)
    latents = pipe.generate_latents("a red cube on a table", steps=4, noise=noise)
    expected = tiny_ref.generate("a red cube on a table", steps=4, noise=noise)
    assert np.abs(latents - expected.latents).max() <= 1e-4
    images = pipe.generate("a red cube on a table", steps=4, noise=noise)
    assert len(images) == 1 and isinstance(images[0], Image.Image) and images[0].size == (384, 384)
    assert np.abs(np.asarray(images[0]).astype(int) - expected.images[0]).max() <= 1


def test_seed_gives_the_reference_image(pipe, tiny_ref):
    latents = pipe.generate_latents("a cat", steps=2, seed=42)
    assert np.abs(latents - tiny_ref.generate("a cat", steps=2, seed=42).latents).max() <= 1e-4


def test_batch_and_num_images_equal_single_calls(pipe):
    prompts = ["a cat", "a robot arm picks up a blue ball in the sun"]
    noise = initial_noise(8, 4, 48)
    batch = pipe.generate_latents(prompts, steps=2, noise=noise, num_images=2)  # 4 rows > max_batch 3: chunks
    order = ["a cat", "a cat", prompts[1], prompts[1]]
    for i, prompt in enumerate(order):
        single = pipe.generate_latents(prompt, steps=2, noise=noise[i:i + 1])
        assert np.abs(batch[i] - single[0]).max() <= 1e-5


def test_pipeline_closes_and_refuses_use_after_close(tiny_artifact, photo):
    with Pipeline.load(tiny_artifact) as p:
        p.answer_tokens(photo, QUESTION, max_new_tokens=1)
        sessions = [*p.session.runners.values(), p.llm.graph]
        assert all(s.session is not None for s in sessions)
    assert all(s.session is None for s in sessions)  # every session released
    for call in (lambda: p.generate_latents("a cat", steps=1, seed=0), lambda: p.answer(photo, QUESTION),
                 lambda: p.runner("siglip")):
        with pytest.raises(JFlowError, match="this Pipeline was closed; load the artifact again"):
            call()
    p.close()  # closing twice is fine


def test_progress_reports_every_step(pipe):
    seen = []
    pipe.generate_latents("a cat", steps=3, seed=0, progress=lambda k, n: seen.append((k, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_answer_tokens_equal_reference(pipe, tiny_ref, photo):
    from jflow.modeling.understanding import answer_tokens
    ours = pipe.answer_tokens(photo, QUESTION, max_new_tokens=10)
    assert ours == answer_tokens(tiny_ref, photo, QUESTION, max_new_tokens=10)
    sampled = pipe.answer_tokens(photo, QUESTION, max_new_tokens=6, temperature=0.8, top_p=0.9, seed=3)
    assert sampled == answer_tokens(tiny_ref, photo, QUESTION, max_new_tokens=6, temperature=0.8, top_p=0.9, seed=3)


def test_answer_batch_equals_single_calls(pipe, photo):
    images = [photo, photo[:120, :90]]
    questions = [QUESTION, "how many objects are there in the image shown here?"]
    batch = pipe.answer_tokens(images, questions, max_new_tokens=8)
    assert batch == [pipe.answer_tokens(i, q, max_new_tokens=8)[0] for i, q in zip(images, questions)]


def test_stream_joins_to_the_answer(pipe, photo):
    pieces = list(pipe.answer_stream(photo, QUESTION, max_new_tokens=12))
    assert "".join(pieces) == pipe.answer(photo, QUESTION, max_new_tokens=12)


def test_text_stream_never_splits_a_character(pipe):
    tok = pipe.tokenizer
    text = "café ☕ naïve"
    ids = tok.tokenizer.encode(text, add_special_tokens=False).ids
    assert len(ids) > len(text) // 2  # byte-level pieces: some tokens end inside a character
    stream = TextStream(tok)
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text and all("\ufffd" not in p for p in pieces)


def test_e2e_reference_cases_pass_through_the_runtime(pipe, tiny_artifact):
    gen = np.load(tiny_artifact / "reference" / "e2e_generation.npz")
    latents = pipe.generate_latents([str(p) for p in gen["prompts"]], steps=int(gen["steps"]), noise=gen["noise"],
                                    cfg_weight=float(gen["cfg_weight"]))
    assert np.abs(latents - gen["latents"]).max() <= 1e-4
    assert np.abs(pipe.decode_latents(latents).astype(int) - gen["image"]).max() <= 1
    und = np.load(tiny_artifact / "reference" / "e2e_understanding.npz")
    assert pipe.answer_tokens(und["image"], str(und["question"]), max_new_tokens=int(und["max_new_tokens"]))[0] \
        == und["tokens"].tolist()


@pytest.mark.parametrize("call, message", [
    (lambda p, img: p.generate_latents("a cat " * 400, steps=1), "holds at most"),
    (lambda p, img: p.generate_latents("  ", steps=1), "prompt is empty"),
    (lambda p, img: p.generate_latents("a cat", steps=0), "steps must be"),
    (lambda p, img: p.generate_latents("a cat", steps=1, cfg_weight=-1.0), "cfg weight must be"),
    (lambda p, img: p.generate_latents("a cat", steps=1, noise=np.zeros((2, 4, 48, 48))), "noise must be"),
    (lambda p, img: p.answer("/nonexistent.png", QUESTION), "image file not found"),
    (lambda p, img: p.answer(img, ""), "question is empty"),
    (lambda p, img: p.answer(img, QUESTION, max_new_tokens=17), "1..16"),
    (lambda p, img: p.generate(123, steps=1), "prompt must be a str or a list of str, got int"),
    (lambda p, img: p.generate(b"abc", steps=1), "got bytes"),
    (lambda p, img: p.generate(["a cat", 7], steps=1), r"prompt\[1\] must be a str"),
    (lambda p, img: p.generate("a cat", steps=1, seed=-1), "seed must be"),
    (lambda p, img: p.generate("a cat", steps=1, cfg_weight=1e300), "from 0 to 100"),
    (lambda p, img: p.answer(img, None), "questions must be a str or a list of str, got NoneType"),
    (lambda p, img: p.answer(None, QUESTION), "image must be a file path"),
])
def test_bad_input_is_clear_and_pipeline_stays_usable(pipe, photo, call, message):
    with pytest.raises(InputError, match=message):
        call(pipe, photo)
    assert len(pipe.answer_tokens(photo, QUESTION, max_new_tokens=2)[0]) >= 1  # still works


def test_negative_temperature_and_non_image(pipe, photo, tmp_path):
    with pytest.raises(InputError, match="temperature"):
        pipe.answer(photo, QUESTION, temperature=-1.0)
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(InputError, match="not a readable image"):
        pipe.answer(str(tmp_path / "notes.png"), QUESTION)


def test_altered_or_missing_artifact_files(tiny_artifact, tmp_path):
    copy = tmp_path / "art"
    shutil.copytree(tiny_artifact, copy)
    table = copy / "embeddings" / "embed_tokens.npy"
    table.write_bytes(table.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ArtifactError, match="embeddings/embed_tokens.npy"):
        Pipeline.load(copy)
    (copy / "onnx" / "llm.onnx").unlink()
    with pytest.raises(ArtifactError, match="onnx/llm.onnx"):
        Pipeline.load(copy)
    with pytest.raises(ArtifactError, match="not a jflow artifact"):
        Pipeline.load(tmp_path / "nothing")
    with pytest.raises(JFlowError, match="unknown backend"):
        Pipeline.load(tiny_artifact, backend="tensorflow")


def test_using_the_runtime_imports_no_torch(tiny_artifact, photo, tmp_path):
    Image.fromarray(photo).save(tmp_path / "photo.png")
    code = f"""
import sys
from jflow.runtime.pipeline import Pipeline
p = Pipeline.load({str(tiny_artifact)!r})
p.generate("a cat", steps=1, seed=0)[0].save({str(tmp_path / 'out.png')!r})
print("".join(p.answer_stream({str(tmp_path / 'photo.png')!r}, "what is this?", max_new_tokens=3)) is not None)
print(",".join(m for m in ("torch", "transformers", "diffusers") if m in sys.modules) or "clean")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "clean"
    assert (tmp_path / "out.png").is_file()


@pytest.fixture
def replaceable(tiny_artifact, tmp_path):
    """(art, swap): a copy of the tiny artifact, and swap() that renames another artifact into its place
    (the same files but a VAE with halved weights: it decodes to a visibly different image)."""
    art, other = tmp_path / "art", tmp_path / "other"
    shutil.copytree(tiny_artifact, art)
    shutil.copytree(tiny_artifact, other)
    weights = other / "onnx" / "vae_decoder.onnx.data"  # float32 initializers only
    (np.fromfile(weights, np.float32) * 0.5).tofile(weights)

    def swap():
        art.rename(tmp_path / "art-before")
        other.rename(art)
    return art, swap


def test_a_folder_replaced_during_generate_is_not_used(pipe, replaceable):
    # Before: the VAE was opened after the ODE, from the replacement (never hashed), and the run succeeded.
    art, swap = replaceable
    expected = np.asarray(pipe.generate("a cat", steps=2, seed=5)[0])
    fresh = Pipeline.load(art)
    image = fresh.generate("a cat", steps=2, seed=5, progress=lambda k, n: swap() if k == n else None)[0]
    assert np.array_equal(np.asarray(image), expected)  # every graph came from the files that were checked
    unchecked = Pipeline.load(art, check_files="none")  # (the replacement would have shown: its VAE differs)
    assert not np.array_equal(np.asarray(unchecked.generate("a cat", steps=2, seed=5)[0]), expected)


def test_a_graph_opened_after_the_folder_changed_is_refused(replaceable, photo):
    art, swap = replaceable
    fresh = Pipeline.load(art)
    latents = fresh.generate_latents("a cat", steps=1, seed=0)  # the VAE and SigLIP are not opened yet
    swap()
    for late in (lambda: fresh.decode_latents(latents), lambda: fresh.answer(photo, QUESTION, max_new_tokens=2)):
        with pytest.raises(ArtifactError) as excinfo:
            late()
        # Files whose bytes the replacement shares (tokenizer, configs) still hash right and are re-pinned;
        # the graphs' and weights' do not.
        assert re.search(rf"artifact {re.escape(str(art))} changed after Pipeline.load checked it: \d+ of "
                         rf"{len(fresh.manifest.files)} file\(s\) are not the ones checked \(.*onnx",
                         str(excinfo.value))
        assert "the folder was moved, replaced or edited. Found while opening graph " in str(excinfo.value)
        assert "nothing was run from them: load the artifact again" in str(excinfo.value)
