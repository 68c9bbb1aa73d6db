"""The rectified-flow ODE loop (spec §5) over the runner seam.

The prompt is prefilled once into the KV cache: N conditional rows, then N unconditional rows that
keep only BOS (the official sampler masks the rest of the prompt) and continue at the prompt's length.
A step is gen_encoder -> llm (577 tokens written into the same cache slots after the prompt every
time) -> gen_decoder, which applies guidance and the Euler update. All buffers exist before the first
step; z lives in two of them that swap roles, and nothing comes back to the host until the end.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from jflow.runtime.ode import time_grid


def sample_latents(pipe, id_lists: list[list[int]], noise: np.ndarray, steps: int, cfg_weight: float,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Final latents [N, 4, s, s] for N prompts (token ids without the dropped generation tag)."""
    backend, llm = pipe.backend, pipe.llm
    encoder, decoder = pipe.runner("gen_encoder"), pipe.runner("gen_decoder")
    n, new = len(id_lists), 1 + pipe.num_gen_tokens
    rows = [pipe.embed(ids) for ids in id_lists] + [pipe.embed(ids[:1]) for ids in id_lists]
    cache = llm.new_cache(2 * n, capacity=max(map(len, id_lists)) + new)
    llm.prefill(cache, rows, next_positions=[len(ids) for ids in id_lists] * 2)

    axes = {"batch": n, "cfg_batch": 2 * n}
    encoded = pipe.output_buffers("gen_encoder", axes)
    decoded = pipe.output_buffers("gen_decoder", axes)
    z, z_next = backend.upload(np.ascontiguousarray(noise, np.float32)), decoded["z_next"]
    t_grid, dt = time_grid(steps)
    times = [backend.upload(np.full(n, t, np.float32)) for t in t_grid]
    dt = backend.upload(np.array([dt], np.float32))
    cfg = backend.upload(np.array([cfg_weight], np.float32))
    for k in range(steps):
        encoder.infer({"z": z, "t": times[k]}, encoded)
        hidden = llm.step(cache, encoded["step_embeds"])
        decoder.infer({"hidden_states": hidden, "skip": encoded["skip"], "t_emb": encoded["t_emb"], "z": z,
                       "dt": dt, "cfg_weight": cfg}, {**decoded, "z_next": z_next})
        z, z_next = z_next, z
        if progress is not None:
            progress(k + 1, steps)
    return backend.download(z)
