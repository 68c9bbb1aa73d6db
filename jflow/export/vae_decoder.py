"""`vae_decoder` graph: latent [batch, 4, s, s] -> RGB image [batch, 3, 8s, 8s] in about [-1, 1].

The 1/scaling_factor is inside the graph; the host only converts to uint8.
"""

from __future__ import annotations

import torch
from torch import nn

from jflow.artifact.spec import GraphSpec, Limits, TensorSpec
from jflow.modeling.vae import vae_decode
from jflow.runtime.ode import LATENT_CHANNELS

NAME = "vae_decoder"


class VaeDecoderGraph(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return vae_decode(self.vae, latent)


def spec(config, limits: Limits, act: str = "float32") -> GraphSpec:
    # The VAE is fp32 in every artifact (precision policy): `act` is ignored.
    s = config.latent_size
    return GraphSpec(NAME,
                     inputs=(TensorSpec("latent", "float32", ("batch", LATENT_CHANNELS, s, s)),),
                     outputs=(TensorSpec("image", "float32", ("batch", 3, 8 * s, 8 * s)),),
                     ranges={"batch": (1, 1, limits.max_batch)})


def example(config, generator: torch.Generator, batch: int = 2) -> dict:
    s = config.latent_size
    return {"latent": torch.randn(batch, LATENT_CHANNELS, s, s, generator=generator)}
