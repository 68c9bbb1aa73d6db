"""jflow.runtime.token_sampling.choose_tokens: greedy, temperature sampling and HF-style top-p."""

import numpy as np
import pytest

from jflow.errors import InputError
from jflow.runtime.token_sampling import choose_tokens


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def nucleus(probs: np.ndarray, top_p: float) -> set[int]:
    """HF TopPLogitsWarper: the smallest set of most probable tokens whose cumulative mass reaches top_p."""
    order = np.argsort(-probs)
    kept, mass = set(), 0.0
    for token in order:
        kept.add(int(token))
        mass += probs[token]
        if mass >= top_p:
            break
    return kept


def draw(logits, n, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    batch = np.repeat(np.asarray(logits, dtype=np.float32)[None], n, axis=0)
    return choose_tokens(batch, rng=rng, **kwargs)


LOGITS = np.array([1.0, 2.5, -0.5, 0.3, 1.7, 0.9], dtype=np.float32)  # no ties


def test_greedy_is_argmax():
    logits = np.random.default_rng(0).standard_normal((5, 50)).astype(np.float32)
    out = choose_tokens(logits)
    assert out.dtype == np.int64 and out.shape == (5,)
    np.testing.assert_array_equal(out, logits.argmax(axis=-1))
    np.testing.assert_array_equal(choose_tokens(logits, temperature=0.0, top_p=0.5), logits.argmax(axis=-1))


@pytest.mark.parametrize("temperature, top_p", [(-0.1, 1.0), (float("nan"), 1.0), (1.0, 0.0), (1.0, -0.5),
                                                (1.0, 1.01), (1.0, float("nan")), (0.0, 2.0), (float("inf"), 1.0),
                                                ("hot", 1.0), (None, 1.0), (1.0, "all"), (True, 1.0)])
def test_bad_settings_raise(temperature, top_p):
    with pytest.raises(InputError, match="temperature" if top_p == 1.0 else "top_p"):
        choose_tokens(np.zeros((1, 4), dtype=np.float32), temperature=temperature, top_p=top_p)


@pytest.mark.parametrize("temperature", [1e-310, 1e-30])
def test_tiny_temperature_is_greedy_not_nan(temperature):
    # logits / 1e-310 overflow to inf (inf - inf = NaN probabilities); scaling after subtracting the max does not
    logits = np.array([[3.0, 7.5, -2.0, 7.0]], np.float32)
    assert choose_tokens(logits, temperature=temperature, rng=np.random.default_rng(0)).tolist() == [1]


def test_tiny_top_p_only_draws_the_top_token():
    out = draw(LOGITS, 2000, temperature=5.0, top_p=1e-6)
    assert set(out.tolist()) == {int(LOGITS.argmax())}


def test_seeded_rng_reproduces_and_seeds_differ():
    a = draw(LOGITS, 200, seed=3, temperature=1.0)
    np.testing.assert_array_equal(a, draw(LOGITS, 200, seed=3, temperature=1.0))
    assert not np.array_equal(a, draw(LOGITS, 200, seed=4, temperature=1.0))


@pytest.mark.parametrize("temperature", [0.7, 1.0, 2.0])
def test_frequencies_follow_softmax_over_temperature(temperature):
    n = 40000
    out = draw(LOGITS, n, seed=1, temperature=temperature, top_p=1.0)
    freq = np.bincount(out, minlength=len(LOGITS)) / n
    expected = softmax(LOGITS.astype(np.float64) / temperature)
    # 5 standard errors of a binomial proportion.
    tol = 5 * np.sqrt(expected * (1 - expected) / n) + 1e-3
    assert np.all(np.abs(freq - expected) < tol), (freq, expected)


@pytest.mark.parametrize("top_p", [0.3, 0.5, 0.7, 0.85, 0.95])
def test_top_p_draws_only_from_the_nucleus_with_renormalised_frequencies(top_p):
    temperature = 1.3
    probs = softmax(LOGITS.astype(np.float64) / temperature)
    allowed = nucleus(probs, top_p)
    n = 30000
    out = draw(LOGITS, n, seed=2, temperature=temperature, top_p=top_p)
    assert set(out.tolist()) == allowed
    idx = sorted(allowed)
    expected = probs[idx] / probs[idx].sum()
    freq = np.bincount(out, minlength=len(LOGITS))[idx] / n
    assert np.all(np.abs(freq - expected) < 5 * np.sqrt(expected * (1 - expected) / n) + 1e-3)


def test_top_p_per_row_and_token_just_inside_the_boundary_is_kept():
    # probs 0.5, 0.3, 0.2: top_p 0.8 is reached exactly by the first two; 0.81 needs the third.
    logits = np.log(np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]], dtype=np.float64)).astype(np.float32)
    rng = np.random.default_rng(0)
    rows = [choose_tokens(logits, temperature=1.0, top_p=0.79, rng=rng) for _ in range(3000)]
    rows = np.stack(rows)
    assert set(rows[:, 0].tolist()) == {0, 1} and set(rows[:, 1].tolist()) == {2, 1}
    rows = np.stack([choose_tokens(logits, temperature=1.0, top_p=0.81, rng=rng) for _ in range(3000)])
    assert set(rows[:, 0].tolist()) == {0, 1, 2}
