"""The Triton runner seam (BLS) and the Python models, in process, over a FAKE pb_utils (fake_pb_utils.py:
the real one exists only inside a running server; test_triton_server.py runs the real one where it can).
The same end-to-end cases as ONNX Runtime: latents within 1e-4, identical greedy tokens."""

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tritonclient.grpc", reason="needs the triton extra: pip install -e '.[triton]'")
import fake_pb_utils  # noqa: E402
from fake_pb_utils import FakeServer, request  # noqa: E402

from jflow.runtime.pipeline import Pipeline  # noqa: E402
from jflow.serving.triton.bls_backend import bls_pipeline  # noqa: E402
from jflow.serving.triton.repository import export_repository  # noqa: E402

PROMPT, QUESTION = "a red cube on a wooden table", "what is in this picture?"


@pytest.fixture(scope="module")
def bls_repo(tiny_artifact, tmp_path_factory):
    return export_repository(tiny_artifact, tmp_path_factory.mktemp("bls") / "repo", log=lambda _: None)


@pytest.fixture(scope="module")
def ort(tiny_artifact):
    with Pipeline.load(tiny_artifact) as pipe:
        yield pipe


def _case(artifact, name):
    return dict(np.load(Path(artifact) / "reference" / f"e2e_{name}.npz"))


def test_the_real_pb_utils_needs_the_server():
    spec = importlib.util.find_spec("pytriton")
    if spec is None:
        pytest.skip("nvidia-pytriton (which ships Triton's triton_python_backend_utils.py) is not installed")
    path = Path(spec.origin).parent / "tritonserver" / "backends" / "python" / "triton_python_backend_utils.py"
    module_spec = importlib.util.spec_from_file_location("real_pb_utils", path)
    real = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(real)
    assert hasattr(real, "get_input_tensor_by_name")  # the pure-Python helpers load ...
    assert not any(hasattr(real, n) for n in ("Tensor", "InferenceRequest", "InferenceResponse"))  # ... BLS does not


def test_the_triton_seam_passes_the_end_to_end_cases(bls_repo, tiny_artifact, ort):
    server = FakeServer(bls_repo)
    pipe = bls_pipeline(bls_repo / "janusflow_generate" / "1" / "artifact", fake_pb_utils)
    assert pipe.backend.name == "triton" and pipe.llm.graph_name == "llm"  # the portable form, explicit KV

    case = _case(tiny_artifact, "generation")
    args = dict(steps=int(case["steps"]), cfg_weight=float(case["cfg_weight"]), noise=case["noise"])
    latents = pipe.generate_latents([str(p) for p in case["prompts"]], **args)
    assert np.abs(latents - case["latents"]).max() <= 1e-4
    assert np.abs(latents - ort.generate_latents([str(p) for p in case["prompts"]], **args)).max() <= 1e-4
    steps = int(case["steps"])  # every graph call went through the server: a prefill, then one llm call per step
    assert dict(server.calls) == {"llm": 1 + steps, "gen_encoder": steps, "gen_decoder": steps}
    image = pipe.decode_latents(latents)
    assert np.abs(image.astype(int) - case["image"]).max() <= 1 and server.calls["vae_decoder"] == 1

    server.calls.clear()
    case = _case(tiny_artifact, "understanding")
    tokens = pipe.answer_tokens(case["image"], str(case["question"]), max_new_tokens=int(case["max_new_tokens"]))[0]
    assert tokens == case["tokens"].tolist()
    assert tokens == ort.answer_tokens(case["image"], str(case["question"]),
                                       max_new_tokens=int(case["max_new_tokens"]))[0]
    assert dict(server.calls) == {"siglip": 1, "llm": len(tokens)}  # prefill, then one decode per token


def test_a_request_the_config_refuses_is_a_clear_error(bls_repo):
    FakeServer(bls_repo)
    pipe = bls_pipeline(bls_repo / "janusflow_generate" / "1" / "artifact", fake_pb_utils)
    pixels = np.zeros((4, 3, 384, 384), np.float32)  # a batch of 4 > max_batch_size 3
    with pytest.raises(Exception, match="graph siglip: the Triton model 'siglip' failed .*max_batch_size is 3"):
        pipe.runner("siglip").infer({"pixel_values": pixels}, ["image_embeds"])


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.mark.parametrize("variant", ["bls", "local"])
def test_python_models_generate_and_stream_answers(tiny_artifact, tmp_path, ort, photo, variant):
    repo = export_repository(tiny_artifact, tmp_path / "repo", variant=variant, log=lambda _: None)
    server = FakeServer(repo)
    generate = server.python_model("janusflow_generate")
    responses = server.execute(generate, "janusflow_generate",
                               request(prompt=PROMPT, seed=np.int64(7), steps=np.int32(2)))
    image = _png(responses[0].output_tensors()[0].as_numpy()[0])
    expected = np.asarray(ort.generate(PROMPT, steps=2, seed=7)[0])
    assert image.shape == (384, 384, 3) and np.abs(image.astype(int) - expected).max() <= 1
    assert server.calls["llm"] == (3 if variant == "bls" else 0)  # local: no graph models, nothing through BLS

    answer = server.python_model("janusflow_answer")
    photo_png = io.BytesIO()
    Image.fromarray(photo).save(photo_png, format="PNG")
    responses = server.execute(answer, "janusflow_answer", request(image=photo_png.getvalue(), question=QUESTION,
                                                                   max_new_tokens=np.int32(6)))
    pieces = [r.output_tensors()[0].as_numpy()[0].decode() for r in responses]
    assert len(pieces) > 1 and pieces == list(ort.answer_stream(photo, QUESTION, max_new_tokens=6))

    # Bad requests: one error response each, and the model keeps serving.
    errors = [
        (generate, "janusflow_generate", request(prompt="", steps=np.int32(1)), "prompt"),
        (generate, "janusflow_generate", request(prompt=PROMPT, steps=np.int32(0)), "steps must be"),
        (generate, "janusflow_generate", request(prompt=PROMPT, steps=np.int64(2)), "data type int64"),
        (answer, "janusflow_answer", request(image=b"not a picture", question=QUESTION),
         "the 'image' input is not a readable image"),
        (answer, "janusflow_answer", request(question=QUESTION), "expected inputs ['image'] are missing"),
    ]
    for model, name, bad, message in errors:
        responses = server.execute(model, name, bad)
        assert len(responses) == 1 and responses[0].has_error() and message in responses[0].error().message(), \
            (message, responses[0].error() and responses[0].error().message())
    responses = server.execute(generate, "janusflow_generate", request(prompt=PROMPT, seed=np.int64(7),
                                                                       steps=np.int32(2)))
    assert np.array_equal(_png(responses[0].output_tensors()[0].as_numpy()[0]), image)
    generate.finalize()
    answer.finalize()
