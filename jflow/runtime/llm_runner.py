"""`LlmRunner`: the one way the loops call the LLM, over a KV cache allocated once per request batch.

    cache = llm.new_cache(rows, capacity)
    logits = llm.prefill(cache, [embeds_row0, embeds_row1, ...])   # ragged rows [n_i, H]; fills the cache
    hidden = llm.step(cache, step_embeds)       # S new tokens per row after the prompt; the cache does not grow
    logits = llm.decode_one(cache, token_embeds)  # one token per row; the cache grows by one

A cache row holds that row's real tokens only, and positions are explicit: a guidance row whose prompt
is masked holds just BOS and continues at the prompt's length, so no padding is ever computed or stored.
Two forms of the LLM graph implement it, each named by its graph (the names `llm_form` takes):
- `llm_ort` (`FusedLlm`, ONNX Runtime): GroupQueryAttention writes the new K/V in place into one buffer
  per layer that is bound as both past and present. A step writes its tokens into the same slots every time.
- `llm` (`PortableLlm`, TensorRT, Triton): attention concatenates past and new K/V, so each call's present
  goes to a second pre-allocated buffer set and the two swap (decode) or the second is scratch (step).
Every input and output buffer is allocated before the first step and then only written: the loops do
no allocation and read back only the logits they must read. The cache state is typed per form
(`kv_cache.py`); a call shape bound once is a `Binding`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from jflow.errors import InputError
from jflow.runtime.backends import NUMPY_DTYPES
from jflow.runtime.kv_cache import Binding, FusedCache, KVCache, PortableCache


class LlmRunner(ABC):
    """Shared geometry and the form-independent half of prefill/step/decode_one; a form implements the
    four methods below."""

    graph_name = ""

    def __init__(self, backend, manifest):
        self.backend, self.manifest = backend, manifest
        inputs, outputs = manifest.io(self.graph_name), manifest.io(self.graph_name, "outputs")
        self.past = [n for n in inputs if n.startswith("past_")]
        self.present = ["present_" + n[len("past_"):] for n in self.past]
        _, self.kv_heads, _, self.head_dim = inputs[self.past[0]]["shape"]
        self.hidden_size = inputs["inputs_embeds"]["shape"][-1]
        self.vocab = outputs["logits"]["shape"][-1]
        self.dtype = NUMPY_DTYPES[inputs["inputs_embeds"]["dtype"]]
        self.graph = backend.runner(self.graph_name, manifest)
        self.stepper = self.graph  # the graph the ODE steps run (FusedLlm: llm_ort_step where the artifact has it)

    # ---- what a form implements ---------------------------------------------------------------------
    @abstractmethod
    def allocate(self, rows: int, capacity: int, max_position: int) -> KVCache:
        """An empty cache of this form, every buffer allocated."""

    @abstractmethod
    def fill(self, cache: KVCache, rows: list[np.ndarray], lengths: np.ndarray) -> Any:
        """Run the prefill of the (checked) prompt rows into the empty cache; the logits handle."""

    @abstractmethod
    def step_binding(self, cache: KVCache, seq: int) -> Binding:
        """The feeds and outputs of a step of `seq` tokens per row, all but inputs_embeds (made once per cache)."""

    @abstractmethod
    def advance(self, cache: KVCache, embeds: np.ndarray) -> Any:
        """Run one decode token per row through the graph (the cache's lengths move after); the logits handle."""

    # ---- the loops' API -----------------------------------------------------------------------------
    def deactivate(self) -> None:
        self.graph.deactivate()
        if self.stepper is not self.graph:
            self.stepper.deactivate()

    def new_cache(self, rows: int, capacity: int) -> KVCache:
        limit = int(self.manifest.limits["max_context"])
        if not 1 <= capacity <= limit:
            raise InputError(f"a KV cache of {capacity} tokens does not fit this artifact's max_context {limit}")
        return self.allocate(rows, capacity, limit)

    def outputs(self, rows: int, seq: int) -> dict[str, Any]:
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
        logits = self.fill(cache, rows, lengths)
        cache.lengths[:] = lengths
        cache.positions[:] = positions
        return logits

    def step(self, cache: KVCache, embeds: Any) -> Any:
        """S new tokens per row (a handle [rows, S, H], e.g. gen_encoder's step_embeds) at each row's next
        positions; their hidden states [rows, S, H]. The cache keeps its length: every ODE step rewrites
        the same slots after the prompt."""
        seq = int(embeds.shape[1])
        binding = cache.steps.get(seq)
        if binding is None:
            cache.room(seq)
            binding = cache.steps[seq] = self.step_binding(cache, seq)
        if binding.input is not embeds:  # bound again only when the input buffer changes (the ODE loop
            binding.input = embeds        # passes gen_encoder's same output buffer every step)
            binding.prepared = self.stepper.prepare({**binding.feeds, "inputs_embeds": embeds}, binding.outputs)
        self.stepper.run(binding.prepared)
        return binding.outputs["hidden_states"]

    def decode_one(self, cache: KVCache, embeds: np.ndarray) -> Any:
        """One token per row (host embeddings [rows, 1, H]) appended to the cache; its logits [rows, V]."""
        cache.room(1)
        logits = self.advance(cache, embeds)
        cache.grow(1)
        return logits

    def positions(self, cache: KVCache, seq: int) -> np.ndarray:
        return cache.positions[:, None] + np.arange(seq)[None, :]


class FusedLlm(LlmRunner):
    """`llm_ort`: GroupQueryAttention over one buffer per layer, bound as past and present (in place)."""

    graph_name = "llm_ort"
    step_graph = "llm_ort_step"  # an int8 artifact's static form for the ODE steps, over the same cache buffers

    def __init__(self, backend, manifest):
        super().__init__(backend, manifest)
        if self.step_graph in manifest.graphs:
            self.stepper = backend.runner(self.step_graph, manifest)

    def allocate(self, rows: int, capacity: int, max_position: int) -> FusedCache:
        shape = (rows, self.kv_heads, capacity, self.head_dim)
        return FusedCache.empty(rows, capacity, max_position, [self.backend.empty(shape, self.dtype) for _ in self.past])

    def cache_io(self, cache: FusedCache) -> tuple[dict, dict]:
        return dict(zip(self.past, cache.buffers)), dict(zip(self.present, cache.buffers))

    def fill(self, cache: FusedCache, rows: list[np.ndarray], lengths: np.ndarray) -> Any:
        seq = int(lengths.max())
        x = np.zeros((cache.rows, seq, self.hidden_size), self.dtype)
        positions = np.zeros((cache.rows, seq), np.int64)
        for r, row in enumerate(rows):  # right-padded: row r's tokens are its first n_r
            x[r, :len(row)] = row
            positions[r, :len(row)] = np.arange(len(row))
        past, present = self.cache_io(cache)
        outputs = {**self.outputs(cache.rows, seq), **present}
        self.graph.infer({"inputs_embeds": x, "position_ids": positions, **cache.counts(lengths), **past}, outputs)
        return outputs["logits"]

    def step_binding(self, cache: FusedCache, seq: int) -> Binding:
        up = self.backend.upload
        counts = cache.counts(np.full(cache.rows, seq))
        past, present = self.cache_io(cache)
        feeds = {"position_ids": up(self.positions(cache, seq)), **{k: up(v) for k, v in counts.items()}, **past}
        return Binding(feeds, {**self.outputs(cache.rows, seq), **present})

    def advance(self, cache: FusedCache, embeds: np.ndarray) -> Any:
        binding = cache.decode
        if binding is None:
            binding = cache.decode = self.decode_binding(cache)
        feeds, up = binding.feeds, self.backend.upload  # written in place: no allocation per token
        up(np.asarray(embeds, self.dtype), out=feeds["inputs_embeds"])
        up(cache.positions[:, None], out=feeds["position_ids"])
        counts = cache.counts(np.ones(cache.rows, np.int64))
        up(counts["seqlens_k"], out=feeds["seqlens_k"])
        up(counts["total_sequence_length"], out=feeds["total_sequence_length"])
        if binding.prepared is None:  # every buffer stays where it is: bind once, run every token
            binding.prepared = self.graph.prepare(feeds, binding.outputs)
        self.graph.run(binding.prepared)
        return binding.outputs["logits"]

    def decode_binding(self, cache: FusedCache) -> Binding:
        empty, rows = self.backend.empty, cache.rows
        past, present = self.cache_io(cache)
        feeds = {"inputs_embeds": empty((rows, 1, self.hidden_size), self.dtype),
                 "position_ids": empty((rows, 1), np.int64), "seqlens_k": empty((rows,), np.int32),
                 "query_seqlens": self.backend.upload(np.ones(rows, np.int32)),
                 "total_sequence_length": empty((), np.int32), **past}
        return Binding(feeds, {**self.outputs(rows, 1), **present})


class PortableLlm(LlmRunner):
    """`llm` (standard ops): attention_mask over a left-aligned cache, present = past + new tokens.

    Rows are left-padded to a common width W (the mask hides the padding). Two buffer sets of the full
    capacity hold the cache; a call reads a [rows, kv, W, hd] view of the current set and writes its
    present into a view of the other one, which becomes current after a decode (a step discards it)."""

    graph_name = "llm"

    def allocate(self, rows: int, capacity: int, max_position: int) -> PortableCache:
        size = rows * self.kv_heads * capacity * self.head_dim
        sets = [[self.backend.empty((size,), self.dtype) for _ in self.past] for _ in range(2)]
        return PortableCache.empty(rows, capacity, max_position, sets)

    def kv(self, cache: PortableCache, which: int, width: int) -> list:
        shape = (cache.rows, self.kv_heads, width, self.head_dim)
        return [self.backend.view(b, shape) for b in cache.sets[which]]

    def fill(self, cache: PortableCache, rows: list[np.ndarray], lengths: np.ndarray) -> Any:
        width = int(lengths.max())
        x = np.zeros((cache.rows, width, self.hidden_size), self.dtype)
        mask, positions = np.zeros((cache.rows, width), np.int64), np.zeros((cache.rows, width), np.int64)
        for r, row in enumerate(rows):  # left-padded: row r's tokens are its last n_r
            x[r, width - len(row):] = row
            mask[r, width - len(row):] = 1
            positions[r, width - len(row):] = np.arange(len(row))
        outputs = {**self.outputs(cache.rows, width), **dict(zip(self.present, self.kv(cache, cache.other, width)))}
        self.graph.infer({"inputs_embeds": x, "attention_mask": mask, "position_ids": positions,
                          **dict(zip(self.past, self.kv(cache, cache.current, 0)))}, outputs)
        cache.mask[:, :width] = mask
        cache.swap(width)
        return outputs["logits"]

    def step_binding(self, cache: PortableCache, seq: int) -> Binding:
        up, width = self.backend.upload, cache.width
        mask = np.concatenate([cache.mask[:, :width], np.ones((cache.rows, seq), np.int64)], axis=1)
        feeds = {"attention_mask": up(mask), "position_ids": up(self.positions(cache, seq)),
                 **dict(zip(self.past, self.kv(cache, cache.current, width)))}
        scratch = dict(zip(self.present, self.kv(cache, cache.other, width + seq)))
        return Binding(feeds, {**self.outputs(cache.rows, seq), **scratch})

    def advance(self, cache: PortableCache, embeds: np.ndarray) -> Any:
        if cache.decode is None:
            empty, rows = self.backend.empty, cache.rows
            cache.decode = Binding({"inputs_embeds": empty((rows, 1, self.hidden_size), self.dtype),
                                    "position_ids": empty((rows, 1), np.int64),
                                    "mask": empty((rows * cache.capacity,), np.int64)}, self.outputs(rows, 1))
        feeds, outputs = cache.decode.feeds, cache.decode.outputs
        up, width = self.backend.upload, cache.width
        cache.mask[:, width] = 1
        mask = self.backend.view(feeds["mask"], (cache.rows, width + 1))
        up(cache.mask[:, :width + 1], out=mask)
        up(np.asarray(embeds, self.dtype), out=feeds["inputs_embeds"])
        up(cache.positions[:, None], out=feeds["position_ids"])
        past = dict(zip(self.past, self.kv(cache, cache.current, width)))
        present = dict(zip(self.present, self.kv(cache, cache.other, width + 1)))
        self.graph.infer({"inputs_embeds": feeds["inputs_embeds"], "position_ids": feeds["position_ids"],
                          "attention_mask": mask, **past}, {**outputs, **present})
        cache.swap(width + 1)
        return outputs["logits"]


FORMS = {"llm_ort": FusedLlm, "llm": PortableLlm}  # the LLM forms, by the graph each runs


def llm_runner(backend, manifest, form: str | None = None) -> LlmRunner:
    """The runner of one LLM form ("llm_ort" or "llm"); by default the fused llm_ort on ONNX Runtime when the
    artifact has it, else the portable llm (TensorRT, Triton)."""
    if form is None:
        form = "llm_ort" if backend.name == "onnxruntime" and "llm_ort" in manifest.graphs else "llm"
    if form not in FORMS:
        raise InputError(f"unknown LLM form {form!r}; choose one of {', '.join(FORMS)}")
    return FORMS[form](backend, manifest)
