"""Next-token choice from last-position logits (numpy), shared by the reference and the runtime."""

from __future__ import annotations

import numpy as np


def check_sampling(temperature: float, top_p: float) -> None:
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def choose_tokens(logits: np.ndarray, temperature: float = 0.0, top_p: float = 1.0,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Pick one token per row of logits [B, V]: greedy when temperature is 0, else nucleus sampling.

    Sampling follows the transformers processors: scale by 1/temperature, keep the smallest set of
    tokens whose probability reaches top_p (at least one), renormalise, draw.
    """
    check_sampling(temperature, top_p)
    logits = np.asarray(logits, dtype=np.float32)
    if temperature == 0:
        return logits.argmax(axis=-1).astype(np.int64)
    if rng is None:
        rng = np.random.default_rng()
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    out = np.empty(logits.shape[0], dtype=np.int64)
    for row, p in enumerate(probs):
        order = np.argsort(-p, kind="stable")
        sorted_p = p[order]
        # Drop a token when the mass before it already reaches top_p; the first is always kept.
        keep = (np.cumsum(sorted_p) - sorted_p) < top_p
        kept = sorted_p * keep
        out[row] = order[rng.choice(len(kept), p=kept / kept.sum())]
    return out
