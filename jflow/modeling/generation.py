"""Reference text-to-image sampler (official algorithm, spec §5), the oracle for the exported graphs.

What jflow does in fp32 that the official demo does in bf16: the noise (numpy PCG64 from the seed, see
`jflow.runtime.ode`), the latent z and the Euler update. What it keeps exactly: t_k and dt rounded to
bf16, guidance v = w*v_cond - (w-1)*v_uncond, the masked unconditional rows, arange positions.
The prompt KV is computed once and reused by every step; `reuse_prompt_kv=False` recomputes the
whole sequence each step as the official demo does, and gives the same result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from jflow.errors import InputError
from jflow.modeling.vae import vae_decode
from jflow.runtime.batching import generation_batch
from jflow.runtime.image_io import to_uint8
from jflow.runtime.ode import LATENT_CHANNELS, initial_noise, time_grid
from jflow.runtime.requests import check_generation_args, check_noise, prompt_list


@dataclass
class GenerationResult:
    images: np.ndarray   # [N, H, W, 3] uint8
    latents: np.ndarray  # [N, 4, s, s] float32, the final z before the VAE
    noise: np.ndarray    # [N, 4, s, s] float32, the starting z


@torch.no_grad()
def generate(ref, prompts, steps: int = 30, cfg_weight: float = 2.0, seed: int | None = None,
             noise: np.ndarray | None = None, reuse_prompt_kv: bool = True,
             progress: Callable[[int, int], None] | None = None,
             on_step: Callable[[dict], None] | None = None) -> GenerationResult:
    """Generate one image per prompt. `noise` [N, 4, s, s] overrides `seed`; no seed means a random one.
    `on_step` receives every step's tensors (the inputs and outputs of each graph), for reference cases."""
    prompts = prompt_list(prompts)
    check_generation_args(steps, cfg_weight)
    if ref.vae is None:
        raise InputError("this reference was loaded without a VAE (load_vae=False); it cannot make images")
    model, n = ref.model, len(prompts)
    size = model.config.latent_size
    if noise is None:
        noise = initial_noise(seed, n, size)
    noise = check_noise(noise, (n, LATENT_CHANNELS, size, size))

    batch = generation_batch([ref.tokenizer.generation_ids(p) for p in prompts], ref.tokenizer.pad_id)
    dtype, new = ref.dtype, 1 + model.config.num_gen_tokens  # t_emb token + latent tokens
    prompt_embeds = model.embed_tokens(torch.from_numpy(batch.ids))
    prompt_mask = torch.from_numpy(batch.mask)
    prompt_pos = torch.from_numpy(batch.positions)
    step_mask = torch.cat([prompt_mask, torch.ones(2 * n, new, dtype=prompt_mask.dtype)], dim=1)
    step_pos = torch.from_numpy(batch.next_positions(new))
    prompt_kv = None
    if reuse_prompt_kv:
        _, _, prompt_kv = model.llm_step(prompt_embeds, prompt_mask, prompt_pos, with_logits=False)

    t_grid, dt = time_grid(steps)
    z = torch.from_numpy(noise).to(dtype)
    for k in range(steps):
        tokens, t_emb, skip = model.gen_encode(torch.cat([z, z]), torch.full((2 * n,), float(t_grid[k]), dtype=dtype))
        x = torch.cat([t_emb[:, None, :], tokens], dim=1)
        if reuse_prompt_kv:
            hidden, _, _ = model.llm_step(x, step_mask, step_pos, past=prompt_kv, with_logits=False)
        else:
            hidden, _, _ = model.llm_step(torch.cat([prompt_embeds, x], dim=1), step_mask,
                                          torch.cat([prompt_pos, step_pos], dim=1), with_logits=False)
        v_cond, v_uncond = model.gen_decode(hidden[:, -(new - 1):], skip, t_emb).chunk(2)
        z_next = z + float(dt) * (cfg_weight * v_cond - (cfg_weight - 1.0) * v_uncond)
        if on_step is not None:
            on_step({"k": k, "z": z, "t": float(t_grid[k]), "dt": float(dt), "cfg_weight": cfg_weight,
                     "step_embeds": x, "t_emb": t_emb, "skip": skip, "hidden": hidden[:, -new:],
                     "step_mask": step_mask, "step_pos": step_pos, "prompt_kv": prompt_kv, "z_next": z_next})
        z = z_next
        if progress is not None:
            progress(k + 1, steps)
    pixels = vae_decode(ref.vae, z)
    return GenerationResult(images=to_uint8(pixels.float().numpy()), latents=z.float().numpy(), noise=noise)
