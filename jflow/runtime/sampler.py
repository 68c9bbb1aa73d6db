"""The rectified-flow ODE loop over the exported graphs (spec §5), written against the backend seam.

The prompt (conditional + masked unconditional rows) is prefilled once; its KV is the past of every
step. A step is gen_encoder -> llm (577 new tokens) -> gen_decoder, which returns the next z, so the
state stays in backend handles from the first step to the last: no host arithmetic in the loop.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from jflow.runtime.batching import generation_batch
from jflow.runtime.ode import time_grid


def sample_latents(pipe, id_lists: list[list[int]], noise: np.ndarray, steps: int, cfg_weight: float,
                   progress: Callable[[int, int], None] | None = None, reuse_prompt_kv: bool = True) -> np.ndarray:
    """Final latents [N, 4, s, s] for N prompts (token ids without the dropped generation tag)."""
    backend, llm = pipe.backend, pipe.graph("llm")
    encoder, decoder = pipe.graph("gen_encoder"), pipe.graph("gen_decoder")
    n, new = len(id_lists), 1 + pipe.num_gen_tokens
    batch = generation_batch(id_lists, pipe.tokenizer.pad_id)
    prompt_embeds = pipe.embed(batch.ids)
    step_mask = np.concatenate([batch.mask, np.ones((2 * n, new), np.int64)], axis=1)
    step_pos = batch.next_positions(new)
    if reuse_prompt_kv:
        prefill = llm.run({"inputs_embeds": prompt_embeds, "attention_mask": batch.mask,
                           "position_ids": batch.positions, **pipe.empty_past(2 * n)}, pipe.present_names)
        past = dict(zip(pipe.past_names, (prefill[name] for name in pipe.present_names)))
        step_mask, step_pos = backend.to_device(step_mask), backend.to_device(step_pos)
    t_grid, dt = time_grid(steps)
    times = [backend.to_device(np.full(n, t, np.float32)) for t in t_grid]  # uploaded once, not per step
    dt = backend.to_device(np.array([dt], np.float32))
    cfg = backend.to_device(np.array([cfg_weight], np.float32))
    z = backend.to_device(np.ascontiguousarray(noise, np.float32))
    for k in range(steps):
        enc = encoder.run({"z": z, "t": times[k]})
        if reuse_prompt_kv:
            hidden = llm.run({"inputs_embeds": enc["step_embeds"], "attention_mask": step_mask,
                              "position_ids": step_pos, **past}, ["hidden_states"])["hidden_states"]
        else:  # the official demo's full recompute, kept to prove the reuse exact
            embeds = np.concatenate([prompt_embeds, backend.to_host(enc["step_embeds"])], axis=1)
            hidden = llm.run({"inputs_embeds": embeds, "attention_mask": step_mask,
                              "position_ids": np.concatenate([batch.positions, step_pos], axis=1),
                              **pipe.empty_past(2 * n)}, ["hidden_states"])["hidden_states"]
            hidden = backend.to_host(hidden)[:, -new:]
        z = decoder.run({"hidden_states": hidden, "skip": enc["skip"], "t_emb": enc["t_emb"], "z": z,
                         "dt": dt, "cfg_weight": cfg}, ["z_next"])["z_next"]
        if progress is not None:
            progress(k + 1, steps)
    return backend.to_host(z)
