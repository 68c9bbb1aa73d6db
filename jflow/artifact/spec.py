"""Graph contracts: names, dtypes, symbolic shapes and dynamic ranges of every exported graph.

These are part of the artifact (written to the manifest, read by the runtime and by the TensorRT profile
builder), so they are declared once here and tested: export writes them with `to_manifest` / `to_dict`, and
a reader gets the same dataclasses back with `from_manifest` / `from_dict` (`Manifest.spec`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    """Build options that bound the dynamic axes."""
    max_batch: int = 4          # images or questions per call (generation runs 2x rows for guidance)
    max_context: int = 1024     # prompt + generated tokens the LLM must hold (>= prompt + 577 for generation)
    max_new_tokens: int = 512   # answer length

    def check(self, num_gen_tokens: int, max_positions: int) -> None:
        if min(self.max_batch, self.max_context, self.max_new_tokens) < 1:
            raise ValueError(f"limits must be >= 1, got {self}")
        if self.max_context <= num_gen_tokens + 1:
            raise ValueError(f"max_context {self.max_context} leaves no room for a prompt: generation needs "
                             f"prompt + {num_gen_tokens + 1} tokens")
        if self.max_context > max_positions:
            raise ValueError(f"max_context {self.max_context} exceeds the LLM's max_position_embeddings {max_positions}")

    def to_dict(self) -> dict:
        return {"max_batch": self.max_batch, "max_context": self.max_context, "max_new_tokens": self.max_new_tokens}

    @classmethod
    def from_dict(cls, limits: dict) -> "Limits":
        """A manifest's limits (the contract has checked they are whole numbers)."""
        return cls(limits["max_batch"], limits["max_context"], limits["max_new_tokens"])


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str               # numpy dtype name: float32, float16, int64
    shape: tuple             # ints and axis names

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, entry: dict) -> "TensorSpec":
        return cls(entry["name"], entry["dtype"], tuple(entry["shape"]))


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    ranges: dict = field(default_factory=dict)  # axis -> (min, opt, max)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def to_manifest(self, file: str) -> dict:
        return {"file": file, "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs],
                "ranges": {axis: {"min": lo, "opt": opt, "max": hi} for axis, (lo, opt, hi) in self.ranges.items()}}

    @classmethod
    def from_manifest(cls, name: str, entry: dict) -> "GraphSpec":
        """The spec a manifest's graph entry was written from (its file and precision are the entry's own)."""
        return cls(name, tuple(TensorSpec.from_dict(t) for t in entry["inputs"]),
                   tuple(TensorSpec.from_dict(t) for t in entry["outputs"]),
                   {axis: (r["min"], r["opt"], r["max"]) for axis, r in entry.get("ranges", {}).items()})
