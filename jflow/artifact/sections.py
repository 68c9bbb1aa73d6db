"""The manifest's optional sections as types: what `build` recorded (engines), what `verify` must hold a
graph to (tolerances) and how a quantized artifact was made (quantization). Stdlib only.

`jflow.artifact.contract` builds these from the manifest's JSON and refuses what does not fit, so a
reader asks `manifest.engines.onnxruntime` or `manifest.tolerances.for_graph(name, precision)` and never
digs through dicts with defaults. A writer that derives a new section from an old one (a build adding a
target) goes back to JSON with `to_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jflow.artifact.engines import EngineIdentity
from jflow.artifact.precision import TOLERANCES


@dataclass(frozen=True)
class Bound:
    """A pass bound for floating-point outputs: rel_l2 at most, cosine at least."""
    rel_l2: float
    cosine: float

    def as_dict(self) -> dict[str, float]:
        return {"rel_l2": self.rel_l2, "cosine": self.cosine}


@dataclass(frozen=True)
class Tolerances:
    """`verify`'s bounds: one per precision as the manifest states it (the built-in table where it states
    none), and a graph's (or an end-to-end case's) own measured bound where `quantize` found it worse."""
    stated: dict[str, Bound] = field(default_factory=dict)
    overrides: dict[str, Bound] = field(default_factory=dict)

    def for_graph(self, name: str, precision: str) -> Bound:
        """The bound for graph (or case, "e2e:generation") `name`, whose outputs are in `precision`."""
        if name in self.overrides:
            return self.overrides[name]
        return self.stated.get(precision) or Bound(**TOLERANCES[precision])


@dataclass(frozen=True)
class OrtGraphs:
    """engines.onnxruntime: graphs saved after ONNX Runtime's offline optimization, by the version that
    saved them (another version re-optimizes from the exported graph instead)."""
    onnxruntime_version: str
    level: str
    graphs: dict[str, str]  # graph -> file

    def to_dict(self) -> dict[str, Any]:
        return {"onnxruntime_version": self.onnxruntime_version, "level": self.level, "graphs": dict(self.graphs)}


@dataclass(frozen=True)
class TensorRTPlan:
    """One graph's engine: the plan file, its cache key and the optimization profiles it was built with."""
    plan: str
    key: str
    profiles: list[dict]  # [{"name", "shapes": {input: [min, opt, max]}}], as engine_profiles reads them

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "key": self.key, "profiles": self.profiles}


@dataclass(frozen=True)
class TensorRTEngines:
    """engines.tensorrt: plans that run only on the TensorRT and GPU they were built for."""
    identity: EngineIdentity
    graphs: dict[str, TensorRTPlan]

    def to_dict(self) -> dict[str, Any]:
        return {**self.identity.as_dict(), "graphs": {n: p.to_dict() for n, p in self.graphs.items()}}


@dataclass(frozen=True)
class Engines:
    """What `jflow-export build` added to the artifact, per target (None: not built)."""
    onnxruntime: OrtGraphs | None = None
    tensorrt: TensorRTEngines | None = None

    def optimized_graph(self, name: str, onnxruntime_version: str) -> str | None:
        """The ORT-optimized file of graph `name` when this onnxruntime version saved it, else None."""
        ort = self.onnxruntime
        if ort is None or ort.onnxruntime_version != onnxruntime_version:
            return None
        return ort.graphs.get(name)

    def with_target(self, target: str, section: OrtGraphs | TensorRTEngines) -> "Engines":
        """These engines with `target`'s section replaced."""
        return Engines(**{**{"onnxruntime": self.onnxruntime, "tensorrt": self.tensorrt}, target: section})

    def to_dict(self) -> dict[str, Any]:
        built = {"onnxruntime": self.onnxruntime, "tensorrt": self.tensorrt}
        return {target: section.to_dict() for target, section in built.items() if section is not None}


@dataclass(frozen=True)
class Quantization:
    """How `jflow-export quantize` made this artifact: from which one, each graph's new precision, and the
    errors it measured against fp32 (group -> worst rel_l2 / cosine). `provenance` holds the rest (method,
    calibration set, kept-float parts, tool versions): for people, so it is kept as written."""
    source_precision: str
    source_manifest_sha256: str
    graphs: dict[str, str]
    measured: dict[str, Bound]
    provenance: dict[str, Any]
