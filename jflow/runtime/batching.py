"""Token batches for the LLM (numpy): left padding, attention masks and position ids.

Shared by the reference and the runtime so both feed the LLM exactly the same tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenBatch:
    ids: np.ndarray        # [B, L] int64, left-padded
    mask: np.ndarray       # [B, L] int64, 1 = real token
    positions: np.ndarray  # [B, L] int64
    lengths: np.ndarray    # [B] real tokens per row (the next position of each row)

    def next_positions(self, count: int, offset: int = 0) -> np.ndarray:
        """Positions of `count` tokens appended to every row, `offset` tokens after the prompt."""
        return (self.lengths[:, None] + offset + np.arange(count)[None, :]).astype(np.int64)


def _check_rows(id_lists: list[list[int]]) -> None:
    if not id_lists or any(len(ids) == 0 for ids in id_lists):
        raise ValueError("every row of a token batch needs at least one token")


def _left_pad(id_lists: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _check_rows(id_lists)
    width = max(len(ids) for ids in id_lists)
    ids = np.full((len(id_lists), width), pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, tokens in enumerate(id_lists):
        ids[row, width - len(tokens):] = tokens
        mask[row, width - len(tokens):] = 1
    return ids, mask, np.array([len(t) for t in id_lists], dtype=np.int64)


def understanding_batch(id_lists: list[list[int]], pad_id: int) -> TokenBatch:
    """Left-padded prompts; positions count real tokens only, so padding does not shift a row."""
    ids, mask, lengths = _left_pad(id_lists, pad_id)
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    return TokenBatch(ids, mask, positions, lengths)


def generation_batch(id_lists: list[list[int]], pad_id: int) -> TokenBatch:
    """Classifier-free-guidance batch: N conditional rows, then N unconditional rows.

    As the official sampler: an unconditional row is the same prompt with every id after BOS replaced
    by pad and masked out, so it sees only BOS, then the time and latent tokens; positions run
    0..L-1 in both rows (masked positions are not compacted).
    """
    _check_rows(id_lists)
    uncond = [[ids[0]] + [pad_id] * (len(ids) - 1) for ids in id_lists]
    ids, mask, lengths = _left_pad(list(id_lists) + uncond, pad_id)
    n = len(id_lists)
    for row in range(n, 2 * n):
        first = ids.shape[1] - lengths[row]
        mask[row, first + 1:] = 0
    positions = np.clip(np.arange(ids.shape[1])[None, :] - (ids.shape[1] - lengths[:, None]), 0, None)
    return TokenBatch(ids, mask, positions.astype(np.int64), lengths)
