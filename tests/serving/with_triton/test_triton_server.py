"""A real tritonserver on 127.0.0.1 (the one nvidia-pytriton bundles: Python backend only), sent requests with
tritonclient and checked against the runtime's own results. Skipped, with the reason, where it cannot run.

- The CPU variant (`--variant local`) exactly as exported.
- The BLS variant with the graph models' configs as exported but run by a Python-backend STAND-IN for
  Triton's onnxruntime backend (which this server lacks): the server checks every BLS request of our
  loops against the generated configs, and the real pb_utils carries them.
"""

import io
import queue
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tritonclient.grpc", reason="needs the triton extra: pip install -e '.[triton]'")
import tritonclient.grpc as grpcclient  # noqa: E402
from fake_pb_utils import read_config  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402
from tritonserver_process import TritonServer, unavailable  # noqa: E402

from jflow.artifact.contract import GRAPH_NAMES  # noqa: E402
from jflow.runtime.pipeline import Pipeline  # noqa: E402
from jflow.serving.triton.configs import to_pbtxt  # noqa: E402
from jflow.serving.triton.repository import export_repository  # noqa: E402

PROMPT, QUESTION = "a red cube on a wooden table", "what is in this picture?"
REASON = unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"tritonserver cannot run here: {REASON}")

STAND_IN = '''"""TEST STAND-IN for Triton's onnxruntime backend (absent from nvidia-pytriton's server): runs model.onnx."""
import json
import os

import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            wanted = request.requested_output_names()
            values = self.session.run(wanted, {t.name(): t.as_numpy() for t in request.inputs()})
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, v) for n, v in zip(wanted, values)]))
        return responses
'''


@pytest.fixture(scope="module")
def ort(tiny_artifact):
    with Pipeline.load(tiny_artifact) as pipe:
        yield pipe


def _client(server):
    return grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")


def _input(name, value):
    if isinstance(value, (str, bytes)):
        array = np.array([value.encode() if isinstance(value, str) else value], dtype=np.object_)
        kind = "BYTES"
    else:
        array = np.array([value])
        kind = {np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32"}[array.dtype]
    tensor = grpcclient.InferInput(name, [1], kind)
    tensor.set_data_from_numpy(array)
    return tensor


def generate(server, **values) -> np.ndarray:
    result = _client(server).infer("janusflow_generate", [_input(k, v) for k, v in values.items()],
                                   client_timeout=300)
    return np.asarray(Image.open(io.BytesIO(result.as_numpy("image")[0])))


def answer_pieces(server, **values) -> list[str]:
    """The streamed answer (a decoupled model: one response per piece, then an empty final one)."""
    responses, client = queue.Queue(), _client(server)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        client.async_stream_infer("janusflow_answer", [_input(k, v) for k, v in values.items()],
                                  enable_empty_final_response=True)
        pieces = []
        while True:
            result, error = responses.get(timeout=300)
            if error is not None:
                raise error
            if result.get_response().parameters["triton_final_response"].bool_param:
                return pieces
            pieces.append(result.as_numpy("text")[0].decode())
    finally:
        client.stop_stream()


def _photo_png(photo) -> bytes:
    out = io.BytesIO()
    Image.fromarray(photo).save(out, format="PNG")
    return out.getvalue()


def _check_requests(server, ort, photo, report):
    started = time.perf_counter()
    image = generate(server, prompt=PROMPT, seed=np.int64(7), steps=np.int32(2))
    report(f"generate (2 steps): {time.perf_counter() - started:.2f}s")
    expected = np.asarray(ort.generate(PROMPT, steps=2, seed=7)[0])
    assert image.shape == (384, 384, 3) and np.abs(image.astype(int) - expected).max() <= 1

    started = time.perf_counter()
    pieces = answer_pieces(server, image=_photo_png(photo), question=QUESTION, max_new_tokens=np.int32(6))
    report(f"answer (6 tokens, streamed): {time.perf_counter() - started:.2f}s, {len(pieces)} pieces")
    assert len(pieces) > 1 and pieces == list(ort.answer_stream(photo, QUESTION, max_new_tokens=6))

    with pytest.raises(InferenceServerException, match="prompt"):
        generate(server, prompt="", steps=np.int32(1))
    with pytest.raises(InferenceServerException, match="is not a readable image"):
        answer_pieces(server, image=b"not a picture", question=QUESTION)
    assert np.array_equal(generate(server, prompt=PROMPT, seed=np.int64(7), steps=np.int32(2)), image)  # still serving


def test_the_cpu_variant_serves_generate_and_streamed_answers(tiny_artifact, tmp_path, ort, photo):
    repo = export_repository(tiny_artifact, tmp_path / "repo", variant="local", log=lambda _: None)
    with TritonServer(repo, tmp_path) as server:
        print(f"\n[local] tritonserver ready in {server.ready_s:.1f}s")
        _check_requests(server, ort, photo, lambda line: print(f"[local] {line}"))
    assert server.proc.returncode is not None  # stopped


def test_the_bls_variant_with_stand_in_graph_models(tiny_artifact, tmp_path, ort, photo):
    repo = export_repository(tiny_artifact, tmp_path / "repo", log=lambda _: None)
    for name in GRAPH_NAMES:  # the generated config, served by the Python backend instead of onnxruntime
        config = read_config(repo / name / "config.pbtxt")
        config.platform, config.backend = "", "python"
        config.instance_group[0].kind = config.instance_group[0].KIND_CPU
        (repo / name / "config.pbtxt").write_text(to_pbtxt(config))
        (repo / name / "1" / "model.py").write_text(STAND_IN)
    with TritonServer(repo, tmp_path) as server:
        print(f"\n[bls] tritonserver ready in {server.ready_s:.1f}s")
        _check_requests(server, ort, photo, lambda line: print(f"[bls] {line}"))
        stats = _client(server).get_inference_statistics("llm", as_json=True)["model_stats"][0]
        tokens = ort.answer_tokens(photo, QUESTION, max_new_tokens=6)[0]
        # Every llm call of the loops was a request to the server: two generations (a prefill and 2 steps
        # each) and one answer (a prefill, then one decode per further token).
        assert int(stats["inference_stats"]["success"]["count"]) == 2 * 3 + len(tokens)
        with pytest.raises(InferenceServerException, match="batch-size must be <= 3"):  # max_batch_size holds
            _client(server).infer("siglip", [_pixels(4)], client_timeout=60)


def _pixels(batch):
    tensor = grpcclient.InferInput("pixel_values", [batch, 3, 384, 384], "FP32")
    tensor.set_data_from_numpy(np.zeros((batch, 3, 384, 384), np.float32))
    return tensor
