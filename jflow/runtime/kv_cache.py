"""The LLM's loop state, typed (after gpt-fast's `KVCache`): one dataclass per LLM form, and `Binding`,
a call shape whose buffers are made once and re-run.

The buffers are backend handles the runner allocated (`LlmRunner.allocate`); the cache keeps what each
row holds and where it continues, and the form's own bookkeeping, so a runner holds no per-request state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jflow.errors import InputError


@dataclass
class Binding:
    """One call shape of a cache (an ODE step of S tokens, a decode token): its feeds and outputs,
    allocated once; `prepared` is the runner's binding, made again only when `input` (the step's
    inputs_embeds buffer) changes."""
    feeds: dict[str, Any]
    outputs: dict[str, Any]
    input: Any = None
    prepared: Any = None


@dataclass
class KVCache:
    rows: int
    capacity: int          # tokens each row can hold
    max_position: int      # positions must stay below this (the artifact's max_context)
    lengths: np.ndarray    # [rows] tokens held per row
    positions: np.ndarray  # [rows] position id of each row's next token
    steps: dict[int, Binding] = field(default_factory=dict)  # ODE steps, by tokens per row
    decode: Binding | None = None

    def room(self, new: int) -> None:
        if int(self.lengths.max(initial=0)) + new > self.capacity:
            raise InputError(f"the KV cache holds {self.capacity} tokens per row; {new} more do not fit after "
                             f"{int(self.lengths.max())}: ask for fewer new tokens, or re-export with a larger "
                             "--max-context")
        if int(self.positions.max(initial=0)) + new > self.max_position:
            raise InputError(f"positions up to {int(self.positions.max()) + new - 1} do not fit this artifact's "
                             f"max_context {self.max_position}; re-export with a larger --max-context")

    def grow(self, new: int) -> None:
        """`new` more tokens written in every row."""
        self.lengths += new
        self.positions += new

    def claim(self, length: int) -> None:
        """Make an empty cache hold `length` tokens per row without computing them (their values stay zero):
        a decode step costs what it attends to, not what the tokens are, so `profile` times it this way."""
        if int(self.lengths.max(initial=0)) != 0:
            raise InputError("only an empty cache can claim a context length")
        self.room(length)
        self.lengths[:] = self.positions[:] = length


@dataclass
class FusedCache(KVCache):
    """`llm_ort`: one buffer per past input, bound as both past and present (written in place)."""
    buffers: list = field(default_factory=list)

    @classmethod
    def empty(cls, rows: int, capacity: int, max_position: int, buffers: list) -> "FusedCache":
        return cls(rows, capacity, max_position, np.zeros(rows, np.int64), np.zeros(rows, np.int64), buffers=buffers)

    def counts(self, new: np.ndarray) -> dict[str, np.ndarray]:
        """GroupQueryAttention's length inputs for a call that writes `new` tokens per row."""
        total = self.lengths + new  # tokens in each row after the call
        return {"seqlens_k": (total - 1).astype(np.int32), "query_seqlens": new.astype(np.int32),
                "total_sequence_length": np.array(total.max(), np.int32)}


@dataclass
class PortableCache(KVCache):
    """`llm`: two buffer sets of the whole capacity; `current` holds the cache, left-aligned to `width`
    columns of which `mask` says which are real; a call writes its present into the other set."""
    sets: list = field(default_factory=list)
    current: int = 0
    width: int = 0
    mask: np.ndarray = None

    @classmethod
    def empty(cls, rows: int, capacity: int, max_position: int, sets: list) -> "PortableCache":
        return cls(rows, capacity, max_position, np.zeros(rows, np.int64), np.zeros(rows, np.int64), sets=sets,
                   mask=np.zeros((rows, capacity), np.int64))

    @property
    def other(self) -> int:
        return 1 - self.current

    def swap(self, width: int) -> None:
        """The other set, now `width` columns wide, holds the cache (after a prefill or a decode)."""
        self.current, self.width = self.other, width

    def claim(self, length: int) -> None:
        super().claim(length)
        self.width = length
        self.mask[:, :length] = 1
