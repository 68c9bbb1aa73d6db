"""`jflow-export serve` on the tiny artifact, spoken to with the official `openai` client: what it answers is
what `Pipeline` answers for the same request (text, streamed text, images byte for byte)."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("uvicorn", reason="needs the serve extra: pip install -e '.[serve]'")
openai = pytest.importorskip("openai", reason="needs the openai client (the dev extra)")
from http_server_process import ServeProcess, answer_artifact  # noqa: E402

from jflow.runtime.pipeline import Pipeline  # noqa: E402

QUESTION = "What is in this picture?"


@pytest.fixture(scope="module")
def artifact(tiny_artifact, tmp_path_factory):
    return answer_artifact(tiny_artifact, tmp_path_factory.mktemp("serve") / "tiny-serve")


@pytest.fixture(scope="module")
def server(artifact):
    proc = ServeProcess(artifact, "--threads", "1").start()
    yield proc
    assert proc.stop() == 0, proc.output()


@pytest.fixture(scope="module")
def pipe(artifact):
    with Pipeline.load(artifact) as p:
        yield p


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=60, max_retries=0)


@pytest.fixture(scope="module")
def picture(photo):
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return Image.open(io.BytesIO(buffer.getvalue())), url


def ask(url, question=QUESTION):
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": question}]}]


def test_chat_with_an_image_equals_pipeline_answer(client, pipe, picture, artifact):
    image, url = picture
    result = client.chat.completions.create(model=artifact.name, messages=ask(url))
    tokens = pipe.answer_tokens(image, QUESTION)[0]
    assert result.choices[0].message.content == pipe.answer(image, QUESTION)
    assert result.choices[0].message.role == "assistant"
    # "stop" when the model ended the answer, "length" when the artifact's 512 tokens ran out first
    assert result.choices[0].finish_reason == ("stop" if tokens[-1] == pipe.tokenizer.eos_id else "length")
    assert result.usage.completion_tokens == len(tokens) > 100  # a long answer
    assert result.usage.prompt_tokens == len(pipe.tokenizer.understanding_ids(QUESTION))
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.model == artifact.name and result.object == "chat.completion"


def test_max_tokens_stops_the_answer_with_finish_reason_length(client, pipe, picture, artifact):
    image, url = picture
    result = client.chat.completions.create(model=artifact.name, messages=ask(url), max_tokens=7)
    assert result.choices[0].message.content == pipe.answer(image, QUESTION, max_new_tokens=7)
    assert result.choices[0].finish_reason == "length" and result.usage.completion_tokens == 7


def test_sampling_with_a_seed_equals_pipeline_answer(client, pipe, picture, artifact):
    image, url = picture
    result = client.chat.completions.create(model=artifact.name, messages=ask(url, "Describe it."), max_tokens=24,
                                            temperature=0.8, top_p=0.9, seed=5)
    expected = pipe.answer(image, "Describe it.", max_new_tokens=24, temperature=0.8, top_p=0.9, seed=5)
    assert result.choices[0].message.content == expected
    assert expected != pipe.answer(image, "Describe it.", max_new_tokens=24)  # sampling did something


def test_streamed_chunks_concatenate_to_the_answer(client, pipe, picture, artifact):
    image, url = picture
    stream = client.chat.completions.create(model=artifact.name, messages=ask(url), stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == pipe.answer(image, QUESTION)
    assert len(pieces) > 20  # it really streamed, piece by piece
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].choices == []  # usage comes last, in a chunk of its own
    assert chunks[-1].usage.completion_tokens == len(pipe.answer_tokens(image, QUESTION)[0])
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"


def test_image_generation_equals_pipeline_generate_byte_for_byte(client, pipe, artifact):
    result = client.images.generate(model=artifact.name, prompt="a red cube on a wooden table", n=2, size="384x384",
                                    response_format="b64_json", extra_body={"steps": 3, "cfg": 3.5, "seed": 11})
    expected = pipe.generate("a red cube on a wooden table", steps=3, cfg_weight=3.5, seed=11, num_images=2)
    assert len(result.data) == 2
    for item, image in zip(result.data, expected):
        png = base64.b64decode(item.b64_json)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        assert png == buffer.getvalue()
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(image))
    assert not np.array_equal(np.asarray(expected[0]), np.asarray(expected[1]))  # two images, not one twice


def test_models_and_health_answer(client, server, artifact):
    models = client.models.list().data
    assert [(m.id, m.object) for m in models] == [(artifact.name, "model")]
    assert models[0].model_extra["precision"] == "fp32"
    assert client.models.retrieve(artifact.name).id == artifact.name
    health = server.health()
    assert health["status"] == "ready" and health["model"] == artifact.name and health["queue_capacity"] == 8
    assert health["running"] is None and health["waiting"] == 0 and health["error"] is None
