"""The Triton Python-backend models that `jflow-export triton` writes, over jflow's own loops:

- janusflow_generate: prompt (+ seed, steps, cfg_weight) -> one PNG, as bytes.
- janusflow_answer: image bytes (PNG, JPEG, ...) + question -> the answer, streamed: decoupled, one
  response per text piece, then an empty final one (gRPC streaming clients; see README "Triton").

Each model's config says how its Pipeline runs (parameter `runner`): "bls", the graphs are the
repository's other models, called through BLS (`jflow.serving.triton.bls_backend`); "local", the Pipeline
holds the artifact on ONNX Runtime in this process, for servers without GPU backends. The generated
model.py sets `pb_utils` (Triton's triton_python_backend_utils, which exists only inside the server).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from jflow.errors import InputError, JFlowError
from jflow.runtime.image_io import load_image
from jflow.runtime.pipeline import Pipeline
from jflow.serving.triton.bls_backend import bls_pipeline

ARTIFACT_DIR = "artifact"  # in the model's version folder
RUNNERS = ("bls", "local")
# Per task: inputs {name: (Triton type, required)} and outputs {name: Triton type}. Every tensor holds one
# value (dims [1]); strings are UTF-8, images are encoded files.
TASKS = {
    "generate": ({"prompt": ("TYPE_STRING", True), "seed": ("TYPE_INT64", False), "steps": ("TYPE_INT32", False),
                  "cfg_weight": ("TYPE_FP32", False)}, {"image": "TYPE_STRING"}),
    "answer": ({"image": ("TYPE_STRING", True), "question": ("TYPE_STRING", True),
                "max_new_tokens": ("TYPE_INT32", False), "temperature": ("TYPE_FP32", False),
                "top_p": ("TYPE_FP32", False), "seed": ("TYPE_INT64", False)}, {"text": "TYPE_STRING"}),
}
MODEL_NAMES = {"generate": "janusflow_generate", "answer": "janusflow_answer"}
DECOUPLED = ("answer",)


class JanusFlowModel:
    pb_utils = None  # set by the generated model.py

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.task, runner = params.get("task"), params.get("runner")
        if self.task not in TASKS or runner not in RUNNERS:
            raise JFlowError(f"model {config.get('name')}: parameters task={self.task!r} runner={runner!r}; expected "
                             f"task in {sorted(TASKS)} and runner in {RUNNERS} (export it with `jflow-export triton`)")
        artifact = Path(args["model_repository"]) / str(args["model_version"]) / ARTIFACT_DIR
        if runner == "local":
            self.pipe = Pipeline.load(artifact, backend="onnxruntime")
        else:
            self.pipe = bls_pipeline(artifact, self.pb_utils)

    def execute(self, requests):
        if self.task in DECOUPLED:
            for request in requests:
                self._stream_answer(request)
            return None
        return [self._generate(request) for request in requests]

    def finalize(self) -> None:
        self.pipe.close()

    # --- tasks -------------------------------------------------------------------------------------
    def _generate(self, request):
        pb = self.pb_utils
        try:
            args = self._inputs(request)
            image = self.pipe.generate(args["prompt"], steps=args.get("steps", 30), seed=args.get("seed"),
                                       cfg_weight=args.get("cfg_weight", 2.0))[0]
        except JFlowError as exc:
            return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(exc)))
        png = io.BytesIO()
        image.save(png, format="PNG")
        return pb.InferenceResponse(output_tensors=[pb.Tensor("image", _bytes_tensor(png.getvalue()))])

    def _stream_answer(self, request) -> None:
        pb = self.pb_utils
        sender = request.get_response_sender()
        try:
            args = self._inputs(request)
            options = {k: args[k] for k in ("max_new_tokens", "temperature", "top_p", "seed") if k in args}
            for piece in self.pipe.answer_stream(_decode_image(args["image"]), args["question"], **options):
                sender.send(pb.InferenceResponse(output_tensors=[pb.Tensor("text", _bytes_tensor(piece.encode()))]))
        except JFlowError as exc:
            sender.send(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(exc))))
        sender.send(flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _inputs(self, request) -> dict:
        """The request's values by name: one each (Triton checked names, types and dims against the config)."""
        values = {}
        for name, (kind, required) in TASKS[self.task][0].items():
            tensor = self.pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                if required:
                    raise InputError(f"the request has no {name!r} input; {MODEL_NAMES[self.task]} needs "
                                     f"{', '.join(n for n, (_, r) in TASKS[self.task][0].items() if r)}")
                continue
            array = tensor.as_numpy().reshape(-1)
            if array.size != 1:
                raise InputError(f"input {name!r} takes one value, got {array.size}")
            value = array[0]
            if kind != "TYPE_STRING":
                values[name] = value.item()
            elif name == "image":
                values[name] = bytes(value)
            else:
                values[name] = _text(name, value)
        return values


def _bytes_tensor(data: bytes) -> np.ndarray:
    return np.array([data], dtype=np.object_)


def _text(name: str, value) -> str:
    try:
        return bytes(value).decode("utf-8") if not isinstance(value, str) else value
    except UnicodeDecodeError:
        raise InputError(f"input {name!r} is not UTF-8 text") from None


def _decode_image(data: bytes):
    """The image through jflow's own reader (its size limits and clear errors), from a private temporary file."""
    with tempfile.TemporaryDirectory(prefix="jflow-image-") as folder:
        path = os.path.join(folder, "image")
        with open(path, "wb") as f:
            f.write(data)
        try:
            return load_image(path)
        except InputError as exc:
            raise InputError(str(exc).replace(path, "the 'image' input")) from None

