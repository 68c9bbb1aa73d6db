"""Building blocks shared by the ShallowUViT generation encoder and decoder (ConvNeXt-V2 style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm


class ChannelLastRMSNorm(LlamaRMSNorm):
    """Llama RMSNorm over the channels of an NCHW tensor (the UViT always normalises channel-last)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2 GRN on NHWC input: x * (1 + weight * n) + bias, n = per-channel spatial L2 / its mean."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.bias = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The spatial sum of squares over 576 positions overflows fp16: the statistics stay fp32.
        gx = torch.linalg.vector_norm(x.float(), ord=2, dim=(1, 2), keepdim=True)
        nx = (gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)).to(x.dtype)
        return self.bias + (self.weight * nx + 1) * x


class ConvNextBlock(nn.Module):
    """Depthwise 7x7 -> RMSNorm -> MLP with GRN, residual, then time modulation of the whole stream."""

    def __init__(self, channels: int, cond_dim: int, norm_eps: float, use_bias: bool, ffn_factor: int = 4):
        super().__init__()
        hidden = channels * ffn_factor
        self.depthwise = nn.Conv2d(channels, channels, kernel_size=7, padding=3, groups=channels, bias=use_bias)
        self.norm = LlamaRMSNorm(channels, eps=norm_eps)
        self.channelwise_linear_1 = nn.Linear(channels, hidden, bias=use_bias)
        self.channelwise_act = nn.GELU()  # exact erf GELU
        self.channelwise_norm = GlobalResponseNorm(hidden)
        self.channelwise_linear_2 = nn.Linear(hidden, channels, bias=use_bias)
        self.cond_embeds_mapper = nn.Linear(cond_dim, channels * 2, bias=use_bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.depthwise(x).permute(0, 2, 3, 1)
        x = self.channelwise_linear_1(self.norm(x))
        x = self.channelwise_linear_2(self.channelwise_norm(self.channelwise_act(x)))
        x = x.permute(0, 3, 1, 2) + residual
        # The modulation comes after the residual add, so it scales the whole stream.
        scale, shift = self.cond_embeds_mapper(F.silu(cond)).chunk(2, dim=1)
        return x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


class UVitBlock(nn.Module):
    """A stack of ConvNeXt blocks (`mid_block.res_blocks`); JanusFlow uses no down/upsampling here."""

    def __init__(self, channels: int, num_blocks: int, cond_dim: int, norm_eps: float, use_bias: bool):
        super().__init__()
        self.res_blocks = nn.ModuleList(
            ConvNextBlock(channels, cond_dim, norm_eps, use_bias) for _ in range(num_blocks))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for block in self.res_blocks:
            x = block(x, cond)
        return x
