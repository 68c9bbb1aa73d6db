"""Triton Inference Server behind the runner seam: each graph is a model of the server this code runs in,
called through BLS (business logic scripting) from a Python-backend model.

    backend = TritonBackend(pb_utils)       # Triton's triton_python_backend_utils, inside the server only
    pipe = bls_pipeline(artifact_dir, pb_utils)  # jflow's own sampler and decoder, graphs run by Triton

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
from jflow.errors import InputError, JFlowError
from jflow.runtime.backends import NUMPY_DTYPES, HostTensors, Outputs
from jflow.runtime.pipeline import Pipeline
from jflow.runtime.processor_config import PREPROCESSOR_FILE, PROCESSOR_FILE, ProcessorSettings
from jflow.runtime.tokenizer import SPECIAL_TOKENS_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, JanusFlowTokenizer

# What a BLS model reads itself (the graphs are other models): the embedding tables are named in the manifest.
HOST_FILES = (TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE, PROCESSOR_FILE, PREPROCESSOR_FILE)


class TritonRunner:
    def __init__(self, backend: "TritonBackend", name: str, entry: dict):
        self.backend, self.name, self.model = backend, name, backend.models.get(name, name)
        self.dtypes = {t["name"]: np.dtype(NUMPY_DTYPES[t["dtype"]]) for t in entry["inputs"]}
        self.output_names = [t["name"] for t in entry["outputs"]]

    def activate(self) -> None:  # the server loads and owns the model
        pass

    def deactivate(self) -> None:
        pass

    def infer(self, feeds: Mapping[str, Any], outputs: Outputs = None) -> dict[str, Any]:
        """One BLS request; `outputs` maps names to buffers that receive a copy of the response's tensors,
        or lists the names to return as new arrays (default: every output)."""
        pb = self.backend.pb_utils
        given = dict(outputs) if isinstance(outputs, Mapping) else {}
        wanted = list(given) if isinstance(outputs, Mapping) else list(outputs or self.output_names)
        tensors = []
        for name, value in feeds.items():
            if name not in self.dtypes:
                raise InputError(f"graph {self.name} has no input {name!r} (it takes {', '.join(self.dtypes)})")
            tensors.append(pb.Tensor(name, np.asarray(value, dtype=self.dtypes[name], order="C")))  # 0-d stays 0-d
        request = pb.InferenceRequest(model_name=self.model, requested_output_names=wanted, inputs=tensors)
        response = request.exec()
        if response.has_error():
            detail = (response.error().message().strip().splitlines() or [""])[0][:400]
            raise JFlowError(f"graph {self.name}: the Triton model {self.model!r} failed ({detail}); check that the "
                             "repository was exported from this artifact with `jflow-export triton`, and the server log")
        results = {}
        for name in wanted:
            tensor = pb.get_output_tensor_by_name(response, name)
            if tensor is None:
                raise JFlowError(f"graph {self.name}: the Triton model {self.model!r} returned no {name!r}")
            array = tensor.as_numpy()
            if name in given:
                if given[name].shape != array.shape:
                    raise JFlowError(f"graph {self.name}: {name} came back as {list(array.shape)}, the loop "
                                     f"expects {list(given[name].shape)}; the model's config.pbtxt does not match")
                np.copyto(given[name], array)
                results[name] = given[name]
            else:
                results[name] = np.array(array)  # our own copy: the response's memory goes with it
        return results

    def prepare(self, feeds: Mapping[str, Any], outputs: Mapping[str, Any]) -> Any:
        return dict(feeds), dict(outputs)

    def run(self, prepared) -> None:
        self.infer(*prepared)  # the buffers are read when the request is made, so later writes are seen


class TritonBackend(HostTensors):
    name = "triton"
    device = "cpu"  # handles live on the host; Triton moves them to wherever each model runs

    def __init__(self, pb_utils, models: Mapping[str, str] | None = None):
        """models: Triton model name per graph name, where they differ (the export names them alike)."""
        self.pb_utils, self.models = pb_utils, dict(models or {})

    def runner(self, name: str, path: Path, entry: dict) -> TritonRunner:
        return TritonRunner(self, name, entry)


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
