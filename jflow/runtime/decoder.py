"""Autoregressive decoding over the exported `llm` graph: prefill, then one token per step on a growing
KV cache that stays in backend handles. Greedy when temperature is 0, else seeded nucleus sampling."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from jflow.runtime.batching import TokenBatch
from jflow.runtime.sampling import choose_tokens


def decode_steps(pipe, embeds: np.ndarray, batch: TokenBatch, max_new_tokens: int, temperature: float,
                 top_p: float, seed: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (next token per row, rows already finished before it) until every row hit EOS or the limit."""
    backend, llm, eos = pipe.backend, pipe.graph("llm"), pipe.tokenizer.eos_id
    rows = embeds.shape[0]
    out = llm.run({"inputs_embeds": embeds, "attention_mask": batch.mask, "position_ids": batch.positions,
                   **pipe.empty_past(rows)}, ["logits", *pipe.present_names])
    rng = np.random.default_rng(seed)
    mask = batch.mask
    done = np.zeros(rows, dtype=bool)
    for step in range(max_new_tokens):
        ids = choose_tokens(backend.to_host(out["logits"]).astype(np.float32), temperature, top_p, rng)
        ids[done] = eos  # finished rows keep feeding EOS, as the official pad id
        yield ids, done.copy()
        done |= ids == eos
        if done.all() or step == max_new_tokens - 1:
            return
        mask = np.concatenate([mask, np.ones((rows, 1), np.int64)], axis=1)
        past = dict(zip(pipe.past_names, (out[name] for name in pipe.present_names)))
        out = llm.run({"inputs_embeds": pipe.embed(ids[:, None]), "attention_mask": mask,
                       "position_ids": batch.next_positions(1, offset=step), **past},
                      ["logits", *pipe.present_names])
