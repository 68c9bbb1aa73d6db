"""jflow.runtime.ode: bf16 rounding, the bf16 time grid of spec §5.5 and the seeded initial noise."""

import numpy as np
import pytest
import torch

from jflow.runtime.ode import bf16_round, initial_noise, time_grid


def torch_bf16(values: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.asarray(values, dtype=np.float32)).to(torch.bfloat16).float().numpy()


def test_bf16_round_matches_torch_on_random_values_of_many_magnitudes():
    rng = np.random.default_rng(0)
    for scale in (1e-40, 1e-30, 1e-6, 1e-2, 1.0, 33.0, 1e3, 1e10, 1e30, 3e38):
        with np.errstate(over="ignore"):  # the largest scale overflows to +-inf on purpose
            x = (rng.standard_normal(20000) * scale).astype(np.float32)
        np.testing.assert_array_equal(bf16_round(x), torch_bf16(x), err_msg=f"scale {scale}")


def test_bf16_round_matches_torch_on_ties_halfway_and_special_values():
    base = np.array([1.0, 1.5, 2.0, 33.3333, 0.0333333, 1000.0, 3.0e38], dtype=np.float32)
    bits = base.view(np.uint32)
    # Exactly halfway between two bf16 values (low 16 bits = 0x8000), with even and odd kept LSB,
    # and one ulp either side of halfway.
    halfway = np.concatenate([(bits & 0xFFFF0000) | low for low in (0x8000, 0x7FFF, 0x8001, 0x18000)])
    specials = np.array([1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-9, -(1 + 2**-8), 0.0, -0.0, np.inf, -np.inf, np.nan,
                         np.finfo(np.float32).max, -np.finfo(np.float32).max, np.finfo(np.float32).tiny,
                         1e-45, -1.5, -33.33], dtype=np.float32)
    x = np.concatenate([halfway.view(np.float32), -halfway.view(np.float32), specials])
    got = bf16_round(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, torch_bf16(x))
    # Ties go to even: 1 + 2**-8 sits halfway between 1 and 1 + 2**-7 and rounds down to 1.
    assert bf16_round(np.float32(1 + 2**-8)) == 1.0
    assert bf16_round(np.float32(1 + 3 * 2**-8)) == np.float32(1 + 2**-6)
    assert np.isnan(bf16_round(np.float32(np.nan)))


def test_bf16_round_keeps_shape_for_0d_and_2d_input_and_does_not_modify_it():
    scalar = bf16_round(np.float32(33.333332))
    assert np.shape(scalar) == () and scalar == 33.25
    assert bf16_round(1 / 3) == torch_bf16(np.float32(1 / 3))
    m = np.random.default_rng(1).standard_normal((7, 5)).astype(np.float32)
    original = m.copy()
    out = bf16_round(m)
    assert out.shape == (7, 5) and out.dtype == np.float32
    np.testing.assert_array_equal(out, torch_bf16(m))
    np.testing.assert_array_equal(m, original)


def test_time_grid_30_steps_is_the_bf16_grid_of_the_official_sampler():
    t, dt = time_grid(30)
    assert t.shape == (30,) and t.dtype == np.float32
    assert t[0] == 0.0 and t[1] == 33.25 and t[2] == 66.5 and t[3] == 100.0 and t[-1] == 968.0
    assert dt == torch.tensor(1 / 30).to(torch.bfloat16).item()
    assert dt != np.float32(1 / 30)  # bf16, not fp32
    for k in range(30):
        assert t[k] == torch.tensor(k / 30 * 1000).to(torch.bfloat16).item(), k


@pytest.mark.parametrize("steps", [1, 2, 7, 50])
def test_time_grid_other_step_counts(steps):
    t, dt = time_grid(steps)
    expected = [torch.tensor(k / steps * 1000).to(torch.bfloat16).item() for k in range(steps)]
    np.testing.assert_array_equal(t, np.array(expected, dtype=np.float32))
    assert dt == torch.tensor(1 / steps).to(torch.bfloat16).item()
    assert t.max() < 1000.0  # the endpoint is never evaluated


@pytest.mark.parametrize("steps", [0, -1])
def test_time_grid_rejects_fewer_than_one_step(steps):
    with pytest.raises(ValueError):
        time_grid(steps)


def test_initial_noise_is_deterministic_per_seed_and_shaped():
    a = initial_noise(7, 2, 12)
    assert a.shape == (2, 4, 12, 12) and a.dtype == np.float32
    np.testing.assert_array_equal(a, initial_noise(7, 2, 12))
    assert not np.array_equal(a, initial_noise(8, 2, 12))
    assert not np.array_equal(a[0], a[1])  # images in one batch get different noise
    big = initial_noise(0, 4, 48)
    assert abs(float(big.mean())) < 0.02 and abs(float(big.std()) - 1.0) < 0.02


def test_initial_noise_first_image_does_not_depend_on_count():
    # The stream is filled in order, so a batch's first image is the single-image noise of the seed.
    np.testing.assert_array_equal(initial_noise(5, 1, 16)[0], initial_noise(5, 3, 16)[0])
    np.testing.assert_array_equal(initial_noise(5, 3, 16)[:2], initial_noise(5, 2, 16))
