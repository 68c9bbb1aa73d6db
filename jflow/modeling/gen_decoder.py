"""ShallowUViTDecoder (`vision_gen_dec_model`): LLM feature grid + encoder skip -> velocity."""

from __future__ import annotations

import torch
from torch import nn

from jflow.modeling.config import GenDecoderConfig
from jflow.modeling.uvit_blocks import ChannelLastRMSNorm, UVitBlock

PATCH = 2


class Unpatchify(nn.Module):
    """RMSNorm -> 1x1 conv to out*2*2 channels -> pixel shuffle (doubles the side)."""

    def __init__(self, in_channels: int, out_channels: int, use_bias: bool, eps: float):
        super().__init__()
        self.norm = ChannelLastRMSNorm(in_channels, eps=eps)
        self.unpatch_conv = nn.Conv2d(in_channels, out_channels * PATCH * PATCH, kernel_size=1, bias=use_bias)
        self.pixel_shuffle = nn.PixelShuffle(PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pixel_shuffle(self.unpatch_conv(self.norm(x)))


class GenDecoder(nn.Module):
    def __init__(self, cfg: GenDecoderConfig):
        super().__init__()
        skip = cfg.block_out_channels[-1]
        self.input_norm = ChannelLastRMSNorm(cfg.in_channels, eps=cfg.norm_eps)
        self.mid_block = (UVitBlock(cfg.in_channels + skip, cfg.layers_in_middle, cfg.hidden_size, cfg.norm_eps,
                                    cfg.use_bias) if cfg.use_mid_block else None)
        self.out_convs = nn.ModuleList()
        for rank in range(cfg.upsamples):
            in_ch = cfg.in_channels + skip if rank == 0 else skip
            out_ch = cfg.out_channels if rank == cfg.upsamples - 1 else skip
            self.out_convs.append(Unpatchify(in_ch, out_ch, cfg.use_bias, cfg.norm_eps))

    def forward(self, x: torch.Tensor, skip: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """x [B, in, G, G] (decoder input first), skip [B, skip, G, G] -> v [B, out, G*2^k, G*2^k]."""
        x = torch.cat([self.input_norm(x), skip], dim=1)
        if self.mid_block is not None:
            x = self.mid_block(x, t_emb)
        for unpatchify in self.out_convs:
            x = unpatchify(x)
        return x
