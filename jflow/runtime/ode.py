"""Rectified-flow ODE schedule shared by the reference and the runtime (numpy only).

The official sampler keeps t and dt as bf16 tensors, so t_k = bf16(k/S*1000) (33.25, not 33.33) and
dt = bf16(1/S) (0.033447 for S=30, so 30*dt = 1.0034). jflow keeps those exact values, because they
change the result, and does the rest (noise, z, Euler update) in fp32.
"""

from __future__ import annotations

import numpy as np

from jflow.runtime.requests import check_seed

LATENT_CHANNELS = 4


def bf16_round(x) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even), returned as float32."""
    a = np.array(x, dtype=np.float32)  # a copy, C-contiguous, any rank (0-d included)
    bits = a.view(np.uint32).astype(np.uint64)
    # uint64 constants: NumPy 1.x promotes uint64 with a Python int to float64, which has no >>.
    one, half, shift, high = (np.uint64(v) for v in (1, 0x7FFF, 16, 0xFFFF0000))
    rounded = ((bits + half + ((bits >> shift) & one)) & high).astype(np.uint32)
    return np.where(np.isnan(a), a, rounded.view(np.float32)).astype(np.float32)


def time_grid(steps: int) -> tuple[np.ndarray, np.float32]:
    """(t for each step, dt) as the official sampler computes them: fp32 first, then bf16."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = bf16_round(np.array([k / steps * 1000.0 for k in range(steps)], dtype=np.float32))
    dt = bf16_round(np.float32(1.0 / steps))
    return t, np.float32(dt.item())


def initial_noise(seed: int | None, count: int, latent_size: int) -> np.ndarray:
    """Starting latents z0 ~ N(0, 1), [count, 4, size, size] float32, from a numpy PCG64 stream
    (a fresh random seed when `seed` is None).

    Numpy rather than torch RNG so that a seed gives the same image on the host reference and on a
    device running only the runtime.
    """
    return draw_noise(noise_stream(seed), count, latent_size)


def noise_stream(seed: int | None) -> np.random.Generator:
    """The PCG64 stream initial_noise draws from: drawing it in several chunks gives the same latents as one
    call (so -n N images can be made chunk by chunk, each seed giving the images it always gave)."""
    check_seed(seed)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence().entropy if seed is None else seed))


def draw_noise(rng: np.random.Generator, count: int, latent_size: int) -> np.ndarray:
    return rng.standard_normal((count, LATENT_CHANNELS, latent_size, latent_size), dtype=np.float32)
