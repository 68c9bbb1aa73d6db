"""TensorRT engine identity, in one place: which TensorRT and GPU an engine was built for, and the cache key
that decides whether a stored engine may be reused. The build writes them and the runtime checks them
with the same code, so the two can never disagree about what makes an engine valid. Data only: which
TensorRT and GPU this machine has is found out by `jflow.engines.machine` (the contract runs no programs).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from jflow.errors import JFlowError


class StaleEngineError(JFlowError):
    """The artifact's engines were built for another TensorRT version or GPU."""


@dataclass(frozen=True)
class EngineIdentity:
    """What a TensorRT plan is bound to: it only deserializes on the same TensorRT and GPU architecture."""
    tensorrt_version: str
    gpu_name: str
    compute_capability: str

    @classmethod
    def from_section(cls, section: dict) -> "EngineIdentity":
        return cls(str(section.get("tensorrt_version")), str(section.get("gpu_name")),
                   str(section.get("compute_capability")))

    def as_dict(self) -> dict:
        return asdict(self)

    def check_built_for(self, built: "EngineIdentity") -> None:
        """StaleEngineError (with what to run) when engines built for `built` cannot run here (self)."""
        if built != self:
            raise StaleEngineError(
                f"the engines were built with TensorRT {built.tensorrt_version} for {built.gpu_name} "
                f"(sm {built.compute_capability}), but this machine has TensorRT {self.tensorrt_version} on "
                f"{self.gpu_name} (sm {self.compute_capability}); rebuild them here with "
                "`jflow-export build DIR --target tensorrt`")


@dataclass(frozen=True)
class EngineKey:
    """An engine is reused only when every field is unchanged."""
    graph: str
    graph_sha256: str      # of the .onnx and its external data, together
    precision: str
    profiles: str          # canonical JSON of the profiles
    tensorrt_version: str
    gpu_name: str
    compute_capability: str

    @classmethod
    def for_graph(cls, manifest_data: dict, graph: str, profiles: list[dict], identity: EngineIdentity) -> "EngineKey":
        onnx_file = manifest_data["graphs"][graph]["file"]
        parts = sorted((rel, digest) for rel, digest in manifest_data["files"].items()
                       if rel == onnx_file or rel.startswith(onnx_file + "."))
        graph_sha = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
        return cls(graph, graph_sha, manifest_data["graphs"][graph].get("precision", manifest_data["precision"]),
                   json.dumps(profiles, sort_keys=True), **identity.as_dict())

    @property
    def identity(self) -> EngineIdentity:
        return EngineIdentity(self.tensorrt_version, self.gpu_name, self.compute_capability)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def folder(self, root: Path) -> Path:
        return root / "engines" / f"{self.graph}-{self.digest}"
