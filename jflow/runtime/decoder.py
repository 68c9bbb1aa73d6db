"""Autoregressive decoding over the LLM runner: prefill, then one token per step into the KV cache.
Greedy when temperature is 0, else seeded nucleus sampling. Per token the host reads the logits and
writes back the chosen tokens' embeddings; everything else stays where the backend computed it."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from jflow.runtime.token_sampling import choose_tokens


def decode_steps(session, rows: list[np.ndarray], eos: int, max_new_tokens: int, temperature: float, top_p: float,
                 seed: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (next token per row, rows already finished before it) until every row hit EOS or the limit.
    `rows`: each prompt's embeddings [n_i, H]; `session`: the backend, LLM runner and embeddings."""
    llm, backend = session.llm, session.backend
    cache = llm.new_cache(len(rows), capacity=max(map(len, rows)) + max_new_tokens)
    logits = llm.prefill(cache, rows)
    rng = np.random.default_rng(seed)
    done = np.zeros(len(rows), dtype=bool)
    for step in range(max_new_tokens):
        ids = choose_tokens(backend.download(logits).astype(np.float32), temperature, top_p, rng)
        ids[done] = eos  # finished rows keep feeding EOS, as the official pad id
        yield ids, done.copy()
        done |= ids == eos
        if done.all() or step == max_new_tokens - 1:
            return
        logits = llm.decode_one(cache, session.embed(ids[:, None]))
