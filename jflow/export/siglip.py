"""`siglip` graph: normalised pixels [batch, 3, S, S] -> image embeddings [batch, N, H] (tower + aligner)."""

from __future__ import annotations

import torch
from torch import nn

from jflow.artifact.spec import GraphSpec, Limits, TensorSpec

NAME = "siglip"


class SiglipGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        # Pixels come in fp32 from the host; the tower runs in the model's dtype.
        return self.model.encode_images(pixel_values.to(self.model.beg_of_und_embed.dtype))


def spec(config, limits: Limits, act: str = "float32") -> GraphSpec:
    size, n, hidden = config.siglip.image_size, config.siglip.num_patches, config.hidden_size
    return GraphSpec(NAME,
                     inputs=(TensorSpec("pixel_values", "float32", ("batch", 3, size, size)),),
                     outputs=(TensorSpec("image_embeds", act, ("batch", n, hidden)),),
                     ranges={"batch": (1, 1, limits.max_batch)})


def example(config, generator: torch.Generator) -> dict[str, torch.Tensor]:
    size = config.siglip.image_size
    return {"pixel_values": torch.rand(2, 3, size, size, generator=generator) * 2 - 1}
