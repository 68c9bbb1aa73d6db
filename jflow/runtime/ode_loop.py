"""The rectified-flow ODE loop (spec §5) over the runner seam, after diffusers' scheduler `step`.

    loop = OdeLoop(session, id_lists, noise, steps, cfg_weight)   # prefill + every buffer, once
    for k in range(steps):
        loop.step(k)
    latents = loop.result()

The prompt is prefilled once into the KV cache: N conditional rows, then N unconditional rows that
keep only BOS (the official sampler masks the rest of the prompt) and continue at the prompt's length.
A step is gen_encoder -> llm (577 tokens written into the same cache slots after the prompt every
time) -> gen_decoder, which applies guidance and the Euler update. All buffers exist before the first
step; z lives in two of them that swap roles, and nothing comes back to the host until the end. The
pipeline, `profile` (which times the three parts of a step apart) and calibration all drive this loop.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from jflow.runtime.ode import time_grid


class OdeLoop:
    def __init__(self, session, id_lists: list[list[int]], noise: np.ndarray, steps: int, cfg_weight: float):
        """Prefill the prompts (token ids without the dropped generation tag) and allocate every buffer."""
        self.session, self.id_lists = session, id_lists
        backend, n = session.backend, len(id_lists)
        self.encoder, self.decoder = session.runner("gen_encoder"), session.runner("gen_decoder")
        self.cache = self.prefill()
        axes = {"batch": n, "cfg_batch": 2 * n}
        self.encoded = session.output_buffers("gen_encoder", axes)
        self.decoded = session.output_buffers("gen_decoder", axes)
        self.z, self.z_next = backend.upload(np.ascontiguousarray(noise, np.float32)), self.decoded["z_next"]
        t_grid, dt = time_grid(steps)
        self.times = [backend.upload(np.full(n, t, np.float32)) for t in t_grid]
        self.dt = backend.upload(np.array([dt], np.float32))
        self.cfg = backend.upload(np.array([cfg_weight], np.float32))
        self.hidden = None

    def prefill(self):
        """A new KV cache holding each prompt (conditional rows) and its BOS (unconditional rows)."""
        llm, embed, ids = self.session.llm, self.session.embed, self.id_lists
        rows = [embed(i) for i in ids] + [embed(i[:1]) for i in ids]
        cache = llm.new_cache(2 * len(ids), capacity=max(map(len, ids)) + 1 + self.session.num_gen_tokens)
        llm.prefill(cache, rows, next_positions=[len(i) for i in ids] * 2)
        return cache

    # ---- one step, in its three parts -------------------------------------------------------------
    def encode(self, k: int) -> None:
        self.encoder.infer({"z": self.z, "t": self.times[k]}, self.encoded)

    def attend(self) -> None:
        self.hidden = self.session.llm.step(self.cache, self.encoded["step_embeds"])

    def update(self) -> None:
        """Guidance and the Euler update into z_next (inside gen_decoder)."""
        e = self.encoded
        self.decoder.infer({"hidden_states": self.hidden, "skip": e["skip"], "t_emb": e["t_emb"], "z": self.z,
                            "dt": self.dt, "cfg_weight": self.cfg}, {**self.decoded, "z_next": self.z_next})

    def step(self, k: int) -> None:
        self.encode(k)
        self.attend()
        self.update()
        self.z, self.z_next = self.z_next, self.z

    def result(self) -> np.ndarray:
        """The latents [N, 4, s, s] on the host."""
        return self.session.backend.download(self.z)


def sample_latents(session, id_lists: list[list[int]], noise: np.ndarray, steps: int, cfg_weight: float,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Final latents [N, 4, s, s] for N prompts (token ids without the dropped generation tag)."""
    loop = OdeLoop(session, id_lists, noise, steps, cfg_weight)
    for k in range(steps):
        loop.step(k)
        if progress is not None:
            progress(k + 1, steps)
    return loop.result()
