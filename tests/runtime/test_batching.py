"""jflow.runtime.batching: left padding, masks and positions (spec §5.3 CFG batch, §6.3 padding)."""

import numpy as np
import pytest

from jflow.runtime.batching import generation_batch, understanding_batch

PAD = 99
BOS = 1
ROWS = [[BOS, 10, 11, 12, 13], [BOS, 20, 21], [BOS, 30, 31, 32]]


def test_understanding_batch_left_pads_and_counts_positions_on_real_tokens():
    b = understanding_batch(ROWS, PAD)
    assert b.ids.shape == b.mask.shape == b.positions.shape == (3, 5)
    assert b.ids.dtype == b.mask.dtype == b.positions.dtype == np.int64
    np.testing.assert_array_equal(b.ids, [[1, 10, 11, 12, 13], [PAD, PAD, 1, 20, 21], [PAD, 1, 30, 31, 32]])
    np.testing.assert_array_equal(b.mask, [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    np.testing.assert_array_equal(b.lengths, [5, 3, 4])
    for row, tokens in enumerate(ROWS):
        real = b.mask[row] == 1
        np.testing.assert_array_equal(b.positions[row][real], np.arange(len(tokens)))
        np.testing.assert_array_equal(b.ids[row][real], tokens)
        assert np.all(b.ids[row][~real] == PAD)


def test_next_positions_continue_each_row():
    b = understanding_batch(ROWS, PAD)
    np.testing.assert_array_equal(b.next_positions(1), [[5], [3], [4]])
    np.testing.assert_array_equal(b.next_positions(3, offset=2), [[7, 8, 9], [5, 6, 7], [6, 7, 8]])
    assert b.next_positions(2).dtype == np.int64


def test_single_row_has_no_padding():
    b = understanding_batch([[BOS, 5, 6]], PAD)
    np.testing.assert_array_equal(b.mask, [[1, 1, 1]])
    np.testing.assert_array_equal(b.positions, [[0, 1, 2]])


def test_generation_batch_has_cond_rows_then_uncond_rows():
    n = len(ROWS)
    b = generation_batch(ROWS, PAD)
    width = max(map(len, ROWS))
    assert b.ids.shape == b.mask.shape == b.positions.shape == (2 * n, width)
    np.testing.assert_array_equal(b.lengths, [5, 3, 4, 5, 3, 4])
    cond = understanding_batch(ROWS, PAD)
    np.testing.assert_array_equal(b.ids[:n], cond.ids)  # conditional rows unchanged
    np.testing.assert_array_equal(b.mask[:n], cond.mask)
    for row, tokens in enumerate(ROWS):
        first = width - len(tokens)
        u = n + row
        expected_ids = [PAD] * first + [BOS] + [PAD] * (len(tokens) - 1)
        np.testing.assert_array_equal(b.ids[u], expected_ids)
        expected_mask = np.zeros(width, dtype=np.int64)
        expected_mask[first] = 1  # only BOS is visible
        np.testing.assert_array_equal(b.mask[u], expected_mask)
        # Positions run from the first real token in both branches; masked ones are not compacted.
        for r in (row, u):
            np.testing.assert_array_equal(b.positions[r, first:], np.arange(len(tokens)))
    np.testing.assert_array_equal(b.next_positions(1)[:, 0], [5, 3, 4, 5, 3, 4])


def test_generation_batch_without_padding_matches_the_official_mask():
    # Spec §5.3 with equal lengths: mask ones, then mask[N:, 1:L] = 0.
    rows = [[BOS, 7, 8, 9], [BOS, 4, 5, 6]]
    b = generation_batch(rows, PAD)
    expected = np.ones((4, 4), dtype=np.int64)
    expected[2:, 1:] = 0
    np.testing.assert_array_equal(b.mask, expected)
    np.testing.assert_array_equal(b.positions, np.tile(np.arange(4), (4, 1)))


@pytest.mark.parametrize("build", [understanding_batch, generation_batch])
def test_no_rows_raises(build):
    with pytest.raises(ValueError):
        build([], PAD)


def test_understanding_batch_empty_row_raises():
    with pytest.raises(ValueError, match="at least one token"):
        understanding_batch([[BOS, 2], []], PAD)


def test_generation_batch_empty_row_raises_value_error():
    with pytest.raises(ValueError, match="at least one token"):
        generation_batch([[BOS, 2], []], PAD)
