"""Triton Inference Server behind the runner seam: each graph is a model of the server this code runs in,
called through BLS (business logic scripting) from a Python-backend model.

    backend = TritonBackend(pb_utils)       # Triton's triton_python_backend_utils, inside the server only
    pipe = bls_pipeline(artifact_dir, pb_utils)  # jflow's own ODE loop and decoder, graphs run by Triton

Handles are host numpy arrays, as on ONNX Runtime's CPU path, so the loops run unchanged. What BLS
costs: every call copies its inputs into the request and its outputs back into the loop's buffers (the
portable LLM's KV cache travels both ways on every step), because a BLS response is a new tensor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from jflow.artifact.contract import ArtifactError
from jflow.artifact.manifest import Manifest, sha256_file
from jflow.errors import JFlowError
from jflow.runtime.backends import BaseRunner, HostTensors
from jflow.runtime.pipeline import Pipeline
from jflow.runtime.processor_config import PREPROCESSOR_FILE, PROCESSOR_FILE, ProcessorSettings
from jflow.runtime.tokenizer import SPECIAL_TOKENS_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, JanusFlowTokenizer

# What a BLS model reads itself (the graphs are other models): the embedding tables are named in the manifest.
HOST_FILES = (TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE, PROCESSOR_FILE, PREPROCESSOR_FILE)


class TritonRunner(BaseRunner):
    """One BLS request per call; `activate` has nothing to open (the server loads and owns the model)."""

    def __init__(self, backend: "TritonBackend", name: str, entry: dict):
        super().__init__(backend, name, entry)
        self.model = backend.models.get(name, name)

    def bind(self, feeds: dict[str, Any], given: dict[str, Any], wanted: list[str]) -> tuple:
        """The request, made when the call runs: the buffers are read then, so later writes are seen."""
        pb = self.backend.pb_utils
        tensors = [pb.Tensor(name, np.asarray(value, order="C")) for name, value in feeds.items()]  # 0-d stays 0-d
        request = pb.InferenceRequest(model_name=self.model, requested_output_names=[*given, *wanted], inputs=tensors)
        return request, given, wanted

    def execute(self, bound: tuple) -> dict[str, Any]:
        """Outputs given as buffers receive a copy of the response's tensors; wanted ones come back as new arrays."""
        request, given, wanted = bound
        pb = self.backend.pb_utils
        response = request.exec()
        if response.has_error():
            detail = (response.error().message().strip().splitlines() or [""])[0][:400]
            raise JFlowError(f"graph {self.name}: the Triton model {self.model!r} failed ({detail}); check that the "
                             "repository was exported from this artifact with `jflow-export triton`, and the server log")
        results = {}
        for name in [*given, *wanted]:
            tensor = pb.get_output_tensor_by_name(response, name)
            if tensor is None:
                raise JFlowError(f"graph {self.name}: the Triton model {self.model!r} returned no {name!r}")
            array = tensor.as_numpy()
            if name in given:
                if given[name].shape != array.shape:
                    raise JFlowError(f"graph {self.name}: {name} came back as {list(array.shape)}, the loop "
                                     f"expects {list(given[name].shape)}; the model's config.pbtxt does not match")
                np.copyto(given[name], array)
            else:
                results[name] = np.array(array)  # our own copy: the response's memory goes with it
        return results


class TritonBackend(HostTensors):
    name = "triton"
    device = "cpu"  # handles live on the host; Triton moves them to wherever each model runs

    def __init__(self, pb_utils, models: Mapping[str, str] | None = None):
        """models: Triton model name per graph name, where they differ (the export names them alike)."""
        super().__init__()
        self.pb_utils, self.models = pb_utils, dict(models or {})

    def runner(self, name: str, manifest: Manifest) -> TritonRunner:
        return TritonRunner(self, name, manifest.graph(name))


def host_files(manifest: Manifest) -> list[str]:
    """The artifact's files that a BLS model reads itself: embedding tables, tokenizer and processor settings."""
    names = [*manifest.data["embeddings"].values(), *HOST_FILES]
    return [rel for rel in dict.fromkeys(names) if rel in manifest.files]


def bls_pipeline(artifact: str | Path, pb_utils) -> Pipeline:
    """A Pipeline whose graphs are the server's models. `artifact` holds manifest.json and the host files
    only (see `host_files`), so those are checked by sha256 here instead of the whole artifact."""
    manifest = Manifest.load(artifact, check_files="none")
    bad = [rel for rel in host_files(manifest)
           if not manifest.path(rel).is_file() or sha256_file(manifest.path(rel)) != manifest.files[rel]]
    if bad:
        raise ArtifactError(f"{manifest.root}: {', '.join(bad)} missing or altered (sha256); export the model "
                            "repository again with `jflow-export triton`")
    processor = ProcessorSettings.from_dir(manifest.root)
    return Pipeline(manifest, TritonBackend(pb_utils), JanusFlowTokenizer.from_dir(manifest.root, processor),
                    processor)
