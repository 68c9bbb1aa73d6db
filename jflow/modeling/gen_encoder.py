"""ShallowUViTEncoder (`vision_gen_enc_model`): latent z and time t -> feature grid and time embedding."""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from jflow.modeling.config import GenEncoderConfig
from jflow.modeling.uvit_blocks import UVitBlock


class GenEncoder(nn.Module):
    def __init__(self, cfg: GenEncoderConfig):
        super().__init__()
        width = cfg.block_out_channels[0]
        # Sinusoidal features [cos, sin] of t in [0, 1000) (flip_sin_to_cos), then a 2-layer MLP.
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(width, cfg.hidden_size, sample_proj_bias=cfg.use_bias)
        self.in_conv = nn.Conv2d(cfg.input_channels, width, kernel_size=cfg.kernel_size, stride=cfg.stride,
                                 padding=cfg.conv_padding)
        self.mid_block = (UVitBlock(cfg.channels, cfg.layers_in_middle, cfg.hidden_size, cfg.norm_eps, cfg.use_bias)
                          if cfg.use_mid_block else None)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [B, C, S, S], t [B] -> (h [B, width, G, G], t_emb [B, hidden]). h is also the skip tensor."""
        t_emb = self.time_embed(self.time_proj(t.flatten()).view(z.shape[0], -1).to(z.dtype))
        h = self.in_conv(z)
        if self.mid_block is not None:
            h = self.mid_block(h, t_emb)
        return h, t_emb
