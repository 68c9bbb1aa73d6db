"""`gen_decoder` graph: one ODE step's LLM output -> the next latent.

Inputs: the step's hidden_states [2*batch, 1+G*G, H] (the graph drops the t_emb position), skip and
t_emb from gen_encoder, the current z [batch, 4, s, s], dt [1] and cfg_weight [1]. It decodes the
velocity of both row halves, applies guidance v = w*v_cond - (w-1)*v_uncond and the Euler update, and
returns z_next (and the guided velocity), so the ODE loop has no host arithmetic.
"""

from __future__ import annotations

import torch
from torch import nn

from jflow.artifact.spec import GraphSpec, Limits, TensorSpec
from jflow.runtime.ode import LATENT_CHANNELS

NAME = "gen_decoder"


class GenDecoderGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, hidden_states, skip, t_emb, z, dt, cfg_weight):
        # The velocity leaves the model's dtype here: guidance and the Euler update run in fp32.
        v = self.model.gen_decode(hidden_states[:, 1:], skip, t_emb).float()
        n = z.shape[0]
        velocity = cfg_weight * v[:n] - (cfg_weight - 1.0) * v[n:]
        return z + dt * velocity, velocity


def spec(config, limits: Limits, act: str = "float32") -> GraphSpec:
    s, g, hidden = config.latent_size, config.gen_grid, config.hidden_size
    latent = ("batch", LATENT_CHANNELS, s, s)
    return GraphSpec(
        NAME,
        inputs=(TensorSpec("hidden_states", act, ("cfg_batch", 1 + g * g, hidden)),
                TensorSpec("skip", act, ("cfg_batch", config.gen_encoder.channels, g, g)),
                TensorSpec("t_emb", act, ("cfg_batch", hidden)),
                TensorSpec("z", "float32", latent),
                TensorSpec("dt", "float32", (1,)),
                TensorSpec("cfg_weight", "float32", (1,))),
        outputs=(TensorSpec("z_next", "float32", latent), TensorSpec("velocity", "float32", latent)),
        ranges={"batch": (1, 1, limits.max_batch), "cfg_batch": (2, 2, 2 * limits.max_batch)})


def example(config, generator: torch.Generator, batch: int = 2) -> dict:
    s, g, hidden = config.latent_size, config.gen_grid, config.hidden_size
    return {"hidden_states": torch.randn(2 * batch, 1 + g * g, hidden, generator=generator),
            "skip": torch.randn(2 * batch, config.gen_encoder.channels, g, g, generator=generator),
            "t_emb": torch.randn(2 * batch, hidden, generator=generator),
            "z": torch.randn(batch, LATENT_CHANNELS, s, s, generator=generator),
            "dt": torch.tensor([0.033447265625]), "cfg_weight": torch.tensor([2.0])}
