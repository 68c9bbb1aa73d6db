"""FAKE, for tests only: an in-process stand-in for Triton's `triton_python_backend_utils` (pb_utils).

Why a fake: the real module's Tensor, InferenceRequest (BLS), InferenceResponse and response senders are
made by the C++ module of the server's Python stub process; outside a running server they do not exist
(`test_the_real_pb_utils_needs_the_server` shows it). Results that need the real thing come from
tests/serving/with_triton/test_triton_server.py, which runs a real tritonserver where one can start.

What the fake does as the server does: a BLS request to a graph model is checked against that model's
config.pbtxt, parsed with tritonclient's ModelConfig (unknown input, missing input, wrong data type,
wrong rank or dims, batch above max_batch_size: refused), then its model file in the repository is run
with ONNX Runtime, and the outputs are checked against the config's dims too. Python models are loaded
from their generated model.py with this module installed as `triton_python_backend_utils`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
NUMPY = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_INT64": np.int64, "TYPE_INT32": np.int32,
         "TYPE_STRING": np.object_}
SERVER = None  # the FakeServer that BLS requests go to (set by FakeServer)


class TritonError:
    def __init__(self, message: str):
        self._message = message

    def message(self) -> str:
        return self._message


class Tensor:
    def __init__(self, name: str, array: np.ndarray):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"pb_utils.Tensor takes a numpy array, got {type(array).__name__}")
        self._name, self._array = name, array.copy()  # the server copies it into shared memory too

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class InferenceResponse:
    def __init__(self, output_tensors=(), error: TritonError | None = None):
        self._tensors, self._error = list(output_tensors), error

    def output_tensors(self) -> list[Tensor]:
        return self._tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


class InferenceRequest:
    """A BLS request (made by a Python model) or, with `sender`, a request to a Python model."""

    def __init__(self, model_name: str = "", requested_output_names=(), inputs=(), sender=None):
        self.model_name, self.requested, self._inputs, self._sender = model_name, list(requested_output_names), \
            list(inputs), sender

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def exec(self) -> InferenceResponse:
        return SERVER.infer(self.model_name, self._inputs, self.requested)

    def get_response_sender(self) -> "ResponseSender":
        return self._sender


class ResponseSender:
    """Records what a decoupled model sends; closed by the final flag, as in the server."""

    def __init__(self):
        self.responses: list[InferenceResponse] = []
        self.closed = False

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        assert not self.closed, "a response was sent after the final flag"
        if response is not None:
            self.responses.append(response)
        self.closed = bool(flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL)


def get_input_tensor_by_name(request, name):
    return next((t for t in request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(response, name):
    return next((t for t in response.output_tensors() if t.name() == name), None)


def using_decoupled_model_transaction_policy(model_config: dict) -> bool:
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))


def read_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


class FakeServer:
    """Serves the onnxruntime_onnx models of a repository to BLS requests; counts the requests per model."""

    def __init__(self, repo: Path):
        import onnxruntime as ort
        global SERVER
        self.repo, self.calls, self.configs, self.sessions = Path(repo), Counter(), {}, {}
        for path in sorted(self.repo.glob("*/config.pbtxt")):
            config = read_config(path)
            self.configs[config.name] = config
            if config.platform == "onnxruntime_onnx":
                self.sessions[config.name] = ort.InferenceSession(str(path.parent / "1" / "model.onnx"),
                                                                  providers=["CPUExecutionProvider"])
        SERVER = self

    def infer(self, model: str, inputs: list[Tensor], requested: list[str]) -> InferenceResponse:
        self.calls[model] += 1
        if model not in self.sessions:
            return InferenceResponse(error=TritonError(f"Request for unknown model: '{model}' is not found"))
        config, feeds = self.configs[model], {t.name(): t.as_numpy() for t in inputs}
        problem = self._check(config, config.input, feeds, "input") or \
            next((f"unexpected output '{n}'" for n in requested if n not in {o.name for o in config.output}), None)
        if problem:
            return InferenceResponse(error=TritonError(f"model '{model}': {problem}"))
        values = self.sessions[model].run(requested, feeds)
        outputs = dict(zip(requested, values))
        problem = self._check(config, [o for o in config.output if o.name in outputs], outputs, "output")
        if problem:
            return InferenceResponse(error=TritonError(f"model '{model}': {problem}"))
        return InferenceResponse([Tensor(n, v) for n, v in outputs.items()])

    @staticmethod
    def _check(config, declared, tensors: dict, side: str) -> str | None:
        from tritonclient.grpc import model_config_pb2 as pb
        known = {d.name: d for d in declared}
        for name, array in tensors.items():
            if name not in known:
                return f"unexpected inference {side} '{name}'"
            d = known[name]
            if array.dtype != np.dtype(NUMPY[pb.DataType.Name(d.data_type)]):
                return f"{side} '{name}' has data type {array.dtype}, the config says {pb.DataType.Name(d.data_type)}"
            shape = list(array.shape)
            if config.max_batch_size > 0:
                if not shape or not 1 <= shape[0] <= config.max_batch_size:
                    return f"{side} '{name}' has batch {shape[:1]}, max_batch_size is {config.max_batch_size}"
                shape = shape[1:]
            if len(shape) != len(d.dims) or any(c != -1 and c != s for c, s in zip(d.dims, shape)):
                return f"unexpected shape for {side} '{name}': {list(array.shape)}, the config says {list(d.dims)}"
        missing = [d.name for d in declared if d.name not in tensors and not getattr(d, "optional", False)]
        return f"expected {side}s {missing} are missing" if missing and side == "input" else None

    def execute(self, model, name: str, request: InferenceRequest):
        """Send one request to a Python model (checked against its config first, as the server does); the
        responses: the list `execute` returned, or what a decoupled model sent."""
        problem = self._check(self.configs[name], self.configs[name].input,
                              {t.name(): t.as_numpy() for t in request.inputs()}, "input")
        if problem:
            return [InferenceResponse(error=TritonError(problem))]
        returned = model.execute([request])
        if returned is None:
            assert request.get_response_sender().closed, "a decoupled model must end with the final flag"
            return request.get_response_sender().responses
        return returned

    def python_model(self, name: str):
        """The repository's Python model `name`, loaded from its model.py and initialized as the server would."""
        from google.protobuf import json_format
        folder = self.repo / name
        sys.modules["triton_python_backend_utils"] = sys.modules[__name__]
        try:
            spec = importlib.util.spec_from_file_location(f"fake_triton_{name}", folder / "1" / "model.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        finally:
            del sys.modules["triton_python_backend_utils"]
        model = module.TritonPythonModel()
        config = json_format.MessageToDict(self.configs[name], preserving_proto_field_name=True)
        model.initialize({"model_config": json.dumps(config), "model_repository": str(folder), "model_version": "1",
                          "model_name": name, "model_instance_kind": "CPU"})
        return model


def request(**values) -> InferenceRequest:
    """A client request to a Python model: one value per input, strings as UTF-8 bytes."""
    tensors = []
    for name, value in values.items():
        if isinstance(value, (str, bytes)):
            array = np.array([value.encode() if isinstance(value, str) else value], dtype=np.object_)
        else:
            array = np.array([value])
        tensors.append(Tensor(name, array))
    return InferenceRequest(inputs=tensors, sender=ResponseSender())
