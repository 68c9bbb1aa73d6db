"""Next-token choice from last-position logits (numpy), shared by the reference and the runtime."""

from __future__ import annotations

import numpy as np

from jflow.errors import InputError


def _real(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and bool(np.isfinite(x))


def check_sampling(temperature: float, top_p: float) -> None:
    if not _real(temperature) or temperature < 0:
        raise InputError(f"temperature must be a finite number >= 0 (0 means greedy), got {temperature!r}")
    if not _real(top_p) or not 0 < top_p <= 1:
        raise InputError(f"top_p must be a number in (0, 1], got {top_p!r}")


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
    # Shift before scaling: logits / 1e-310 would overflow to inf and give NaN probabilities.
    x = logits.astype(np.float64)
    with np.errstate(over="ignore"):
        scaled = (x - x.max(axis=-1, keepdims=True)) / temperature
    probs = np.exp(scaled)
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
