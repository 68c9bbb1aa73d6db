"""`gen_encoder` graph: latent z [batch, 4, s, s] and time t [batch] -> the LLM input of one ODE step.

The graph duplicates the rows for guidance (conditional rows, then unconditional) and emits the step's
LLM input directly: step_embeds = [t_emb token, G*G latent tokens] [2*batch, 1+G*G, H]; plus t_emb and
the skip tensor for gen_decoder. So an ODE step needs no host arithmetic between graphs.
"""

from __future__ import annotations

import torch
from torch import nn

from jflow.artifact.spec import GraphSpec, Limits, TensorSpec
from jflow.runtime.ode import LATENT_CHANNELS

NAME = "gen_encoder"


class GenEncoderGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, z, t):
        # z (the fp32 ODE state) is cast to the model dtype here; t stays fp32 for the sinusoids.
        zz = torch.cat([z, z]).to(self.model.beg_of_und_embed.dtype)
        tokens, t_emb, skip = self.model.gen_encode(zz, torch.cat([t, t]))
        return torch.cat([t_emb[:, None, :], tokens], dim=1), t_emb, skip


def spec(config, limits: Limits, act: str = "float32") -> GraphSpec:
    s, g, hidden = config.latent_size, config.gen_grid, config.hidden_size
    return GraphSpec(
        NAME,
        inputs=(TensorSpec("z", "float32", ("batch", LATENT_CHANNELS, s, s)),
                TensorSpec("t", "float32", ("batch",))),
        outputs=(TensorSpec("step_embeds", act, ("cfg_batch", 1 + g * g, hidden)),
                 TensorSpec("t_emb", act, ("cfg_batch", hidden)),
                 TensorSpec("skip", act, ("cfg_batch", config.gen_encoder.channels, g, g))),
        ranges={"batch": (1, 1, limits.max_batch)})


def example(config, generator: torch.Generator, batch: int = 2) -> dict:
    s = config.latent_size
    return {"z": torch.randn(batch, LATENT_CHANNELS, s, s, generator=generator),
            "t": torch.full((batch,), 333.0)}
