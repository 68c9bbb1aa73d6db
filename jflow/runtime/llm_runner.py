"""`LlmRunner`: the one way the loops call the LLM, over a `KVCache` allocated once per request batch.

    cache = llm.new_cache(rows, capacity)
    logits = llm.prefill(cache, [embeds_row0, embeds_row1, ...])   # ragged rows [n_i, H]; fills the cache
    hidden = llm.step(cache, step_embeds)       # S new tokens per row after the prompt; the cache does not grow
    logits = llm.decode_one(cache, token_embeds)  # one token per row; the cache grows by one

A cache row holds that row's real tokens only, and positions are explicit: a guidance row whose prompt
is masked holds just BOS and continues at the prompt's length, so no padding is ever computed or stored.
Two forms of the LLM graph implement it:
- `llm_ort` (ONNX Runtime): GroupQueryAttention writes the new K/V in place into one buffer per layer
  that is bound as both past and present. A step writes its tokens into the same slots every time.
- `llm` (portable, TensorRT): attention concatenates past and new K/V, so each call's present goes to
  a second pre-allocated buffer set and the two swap (decode) or the second is scratch (step).
Every input and output buffer is allocated before the first step and then only written: the loops do
no allocation and read back only the logits they must read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jflow.errors import InputError
from jflow.runtime.backends import NUMPY_DTYPES


@dataclass
class KVCache:
    rows: int
    capacity: int          # tokens each row can hold
    max_position: int      # positions must stay below this (the artifact's max_context)
    lengths: np.ndarray    # [rows] tokens held per row
    positions: np.ndarray  # [rows] position id of each row's next token
    buffers: list = field(default_factory=list)     # per past input: the form's device buffers
    phases: dict = field(default_factory=dict)      # bound feeds/outputs per call shape, made on first use
    state: dict = field(default_factory=dict)       # form-specific bookkeeping

    def room(self, new: int) -> None:
        if int(self.lengths.max(initial=0)) + new > self.capacity:
            raise InputError(f"the KV cache holds {self.capacity} tokens per row; {new} more do not fit after "
                             f"{int(self.lengths.max())}: ask for fewer new tokens, or re-export with a larger "
                             "--max-context")
        if int(self.positions.max(initial=0)) + new > self.max_position:
            raise InputError(f"positions up to {int(self.positions.max()) + new - 1} do not fit this artifact's "
                             f"max_context {self.max_position}; re-export with a larger --max-context")


class LlmRunner:
    """Shared geometry and the form-independent half of prefill/step/decode_one."""

    graph_name = ""

    def __init__(self, backend, manifest):
        self.backend, self.manifest = backend, manifest
        entry = manifest.graph(self.graph_name)
        inputs, outputs = manifest.io(self.graph_name), manifest.io(self.graph_name, "outputs")
        self.past = [n for n in inputs if n.startswith("past_")]
        self.present = ["present_" + n[len("past_"):] for n in self.past]
        _, self.kv_heads, _, self.head_dim = inputs[self.past[0]]["shape"]
        self.hidden_size = inputs["inputs_embeds"]["shape"][-1]
        self.vocab = outputs["logits"]["shape"][-1]
        self.dtype = NUMPY_DTYPES[inputs["inputs_embeds"]["dtype"]]
        self.graph = backend.runner(self.graph_name, manifest.graph_path(self.graph_name), entry)

    def deactivate(self) -> None:
        self.graph.deactivate()

    def new_cache(self, rows: int, capacity: int) -> KVCache:
        limit = int(self.manifest.limits["max_context"])
        if not 1 <= capacity <= limit:
            raise InputError(f"a KV cache of {capacity} tokens does not fit this artifact's max_context {limit}")
        cache = KVCache(rows, capacity, limit, np.zeros(rows, np.int64), np.zeros(rows, np.int64))
        self._allocate(cache)
        return cache

    def _outputs(self, rows: int, seq: int) -> dict[str, Any]:
        empty = self.backend.empty
        return {"hidden_states": empty((rows, seq, self.hidden_size), self.dtype),
                "logits": empty((rows, self.vocab), self.dtype)}

    def prefill(self, cache: KVCache, rows: list[np.ndarray], next_positions: list[int] | None = None) -> Any:
        """Fill an empty cache with one prompt per row (embeddings [n_i, H]); the logits [rows, V] of each row's
        last token. `next_positions`: where each row continues (default n_i: right after its prompt)."""
        if len(rows) != cache.rows or int(cache.lengths.max(initial=0)) != 0:
            raise InputError(f"prefill needs an empty cache of {len(rows)} rows")
        lengths = np.array([len(r) for r in rows], np.int64)
        if lengths.min(initial=1) < 1:
            raise InputError("every row of a prefill needs at least one token")
        cache.room(int(lengths.max()))
        positions = lengths if next_positions is None else np.asarray(next_positions, np.int64)
        if positions.shape != lengths.shape or (positions < lengths).any() or positions.max() > cache.max_position:
            raise InputError(f"next_positions must give each row a position from its length up to "
                             f"{cache.max_position}, got {positions.tolist()}")
        logits = self._prefill(cache, rows, lengths)
        cache.lengths[:] = lengths
        cache.positions[:] = positions
        return logits

    def step(self, cache: KVCache, embeds: Any) -> Any:
        """S new tokens per row (a handle [rows, S, H], e.g. gen_encoder's step_embeds) at each row's next
        positions; their hidden states [rows, S, H]. The cache keeps its length: every ODE step rewrites
        the same slots after the prompt."""
        seq = int(embeds.shape[1])
        phase = cache.phases.get(("step", seq))
        if phase is None:
            cache.room(seq)
            phase = cache.phases[("step", seq)] = {"io": self._step_phase(cache, seq), "input": None}
        if phase["input"] is not embeds:  # bound again only when the input buffer changes (the ODE loop
            feeds, outputs = phase["io"]    # passes gen_encoder's same output buffer every step)
            phase.update(input=embeds, bound=self.graph.prepare({**feeds, "inputs_embeds": embeds}, outputs))
        self.graph.run(phase["bound"])
        return phase["io"][1]["hidden_states"]

    def decode_one(self, cache: KVCache, embeds: np.ndarray) -> Any:
        """One token per row (host embeddings [rows, 1, H]) appended to the cache; its logits [rows, V]."""
        cache.room(1)
        phase = cache.phases.get("decode")
        if phase is None:
            phase = cache.phases["decode"] = self._decode_phase(cache)
        feeds, outputs = phase
        self._decode(cache, embeds, feeds, outputs)
        cache.lengths += 1
        cache.positions += 1
        return outputs["logits"]

    def _positions(self, cache: KVCache, seq: int) -> np.ndarray:
        return cache.positions[:, None] + np.arange(seq)[None, :]


class FusedLlm(LlmRunner):
    """`llm_ort`: GroupQueryAttention over one buffer per layer, bound as past and present (in place)."""

    graph_name = "llm_ort"

    def _allocate(self, cache: KVCache) -> None:
        shape = (cache.rows, self.kv_heads, cache.capacity, self.head_dim)
        cache.buffers = [self.backend.empty(shape, self.dtype) for _ in self.past]

    def _cache_io(self, cache: KVCache) -> tuple[dict, dict]:
        return dict(zip(self.past, cache.buffers)), dict(zip(self.present, cache.buffers))

    @staticmethod
    def _counts(lengths: np.ndarray, new: np.ndarray) -> dict[str, np.ndarray]:
        total = lengths + new  # tokens in each row after the call
        return {"seqlens_k": (total - 1).astype(np.int32), "query_seqlens": new.astype(np.int32),
                "total_sequence_length": np.array(total.max(), np.int32)}

    def _prefill(self, cache: KVCache, rows: list[np.ndarray], lengths: np.ndarray) -> Any:
        seq = int(lengths.max())
        x = np.zeros((cache.rows, seq, self.hidden_size), self.dtype)
        positions = np.zeros((cache.rows, seq), np.int64)
        for r, row in enumerate(rows):  # right-padded: row r's tokens are its first n_r
            x[r, :len(row)] = row
            positions[r, :len(row)] = np.arange(len(row))
        past, present = self._cache_io(cache)
        outputs = {**self._outputs(cache.rows, seq), **present}
        self.graph.infer({"inputs_embeds": x, "position_ids": positions, **self._counts(cache.lengths, lengths),
                          **past}, outputs)
        return outputs["logits"]

    def _step_phase(self, cache: KVCache, seq: int) -> tuple[dict, dict]:
        up = self.backend.upload
        counts = self._counts(cache.lengths, np.full(cache.rows, seq))
        past, present = self._cache_io(cache)
        feeds = {"position_ids": up(self._positions(cache, seq)), **{k: up(v) for k, v in counts.items()}, **past}
        return feeds, {**self._outputs(cache.rows, seq), **present}

    def _decode_phase(self, cache: KVCache) -> tuple[dict, dict]:
        empty, rows = self.backend.empty, cache.rows
        past, present = self._cache_io(cache)
        feeds = {"inputs_embeds": empty((rows, 1, self.hidden_size), self.dtype),
                 "position_ids": empty((rows, 1), np.int64), "seqlens_k": empty((rows,), np.int32),
                 "query_seqlens": self.backend.upload(np.ones(rows, np.int32)),
                 "total_sequence_length": empty((), np.int32), **past}
        return feeds, {**self._outputs(rows, 1), **present}

    def _decode(self, cache: KVCache, embeds: np.ndarray, feeds: dict, outputs: dict) -> None:
        up = self.backend.upload  # writes into the phase's buffers: no allocation per token
        up(np.asarray(embeds, self.dtype), out=feeds["inputs_embeds"])
        up(cache.positions[:, None], out=feeds["position_ids"])
        counts = self._counts(cache.lengths, np.ones(cache.rows, np.int64))
        up(counts["seqlens_k"], out=feeds["seqlens_k"])
        up(counts["total_sequence_length"], out=feeds["total_sequence_length"])
        if "bound" not in cache.state:  # every buffer stays where it is: bind once, run every token
            cache.state["bound"] = self.graph.prepare(feeds, outputs)
        self.graph.run(cache.state["bound"])


class PortableLlm(LlmRunner):
    """`llm` (standard ops): attention_mask over a left-aligned cache, present = past + new tokens.

    Rows are left-padded to a common width W (the mask hides the padding). Two buffer sets of the full
    capacity hold the cache; a call reads a [rows, kv, W, hd] view of the current set and writes its
    present into a view of the other one, which becomes current after a decode (a step discards it)."""

    graph_name = "llm"

    def _allocate(self, cache: KVCache) -> None:
        size = cache.rows * self.kv_heads * cache.capacity * self.head_dim
        cache.buffers = [[self.backend.empty((size,), self.dtype) for _ in self.past] for _ in range(2)]
        cache.state.update(current=0, width=0, mask=np.zeros((cache.rows, cache.capacity), np.int64))

    def _kv(self, cache: KVCache, which: int, width: int) -> list:
        shape = (cache.rows, self.kv_heads, width, self.head_dim)
        return [self.backend.view(b, shape) for b in cache.buffers[which]]

    def _prefill(self, cache: KVCache, rows: list[np.ndarray], lengths: np.ndarray) -> Any:
        width = int(lengths.max())
        x = np.zeros((cache.rows, width, self.hidden_size), self.dtype)
        mask, positions = np.zeros((cache.rows, width), np.int64), np.zeros((cache.rows, width), np.int64)
        for r, row in enumerate(rows):  # left-padded: row r's tokens are its last n_r
            x[r, width - len(row):] = row
            mask[r, width - len(row):] = 1
            positions[r, width - len(row):] = np.arange(len(row))
        state = cache.state
        outputs = {**self._outputs(cache.rows, width),
                   **dict(zip(self.present, self._kv(cache, 1 - state["current"], width)))}
        self.graph.infer({"inputs_embeds": x, "attention_mask": mask, "position_ids": positions,
                          **dict(zip(self.past, self._kv(cache, state["current"], 0)))}, outputs)
        state.update(current=1 - state["current"], width=width)
        state["mask"][:, :width] = mask
        return outputs["logits"]

    def _step_phase(self, cache: KVCache, seq: int) -> tuple[dict, dict]:
        state, up = cache.state, self.backend.upload
        width = state["width"]
        mask = np.concatenate([state["mask"][:, :width], np.ones((cache.rows, seq), np.int64)], axis=1)
        feeds = {"attention_mask": up(mask), "position_ids": up(self._positions(cache, seq)),
                 **dict(zip(self.past, self._kv(cache, state["current"], width)))}
        scratch = dict(zip(self.present, self._kv(cache, 1 - state["current"], width + seq)))
        return feeds, {**self._outputs(cache.rows, seq), **scratch}

    def _decode_phase(self, cache: KVCache) -> tuple[dict, dict]:
        empty, rows = self.backend.empty, cache.rows
        feeds = {"inputs_embeds": empty((rows, 1, self.hidden_size), self.dtype),
                 "position_ids": empty((rows, 1), np.int64), "mask": empty((rows * cache.capacity,), np.int64)}
        return feeds, self._outputs(rows, 1)

    def _decode(self, cache: KVCache, embeds: np.ndarray, feeds: dict, outputs: dict) -> None:
        state, up, view = cache.state, self.backend.upload, self.backend.view
        width, current = state["width"], state["current"]
        state["mask"][:, width] = 1
        mask = view(feeds["mask"], (cache.rows, width + 1))
        up(state["mask"][:, :width + 1], out=mask)
        up(np.asarray(embeds, self.dtype), out=feeds["inputs_embeds"])
        up(cache.positions[:, None], out=feeds["position_ids"])
        past = dict(zip(self.past, self._kv(cache, current, width)))
        present = dict(zip(self.present, self._kv(cache, 1 - current, width + 1)))
        self.graph.infer({"inputs_embeds": feeds["inputs_embeds"], "position_ids": feeds["position_ids"],
                          "attention_mask": mask, **past}, {**outputs, **present})
        state.update(current=1 - current, width=width + 1)


def llm_runner(backend, manifest, form: str | None = None) -> LlmRunner:
    """The fused form on ONNX Runtime when the artifact has it, else the portable one (TensorRT)."""
    forms = {"onnxruntime": FusedLlm, "portable": PortableLlm}
    if form is None:
        form = "onnxruntime" if backend.name == "onnxruntime" and "llm_ort" in manifest.graphs else "portable"
    if form not in forms:
        raise InputError(f"unknown LLM form {form!r}; choose one of {', '.join(forms)}")
    return forms[form](backend, manifest)
