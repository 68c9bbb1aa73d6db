"""SigLIP ViT understanding tower (timm VisionTransformer layout, as vendored by the official code).

State-dict names follow `vision_und_enc_model.vision_tower.*`. Pre-norm blocks, exact GELU, no class
token, full bidirectional attention; the final LayerNorm is applied (global_pool "map" disables
fc_norm). The attention-pool head exists only so the official checkpoint loads strictly: it never runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jflow.modeling.config import SiglipConfig

LAYER_NORM_EPS = 1e-6


class PatchEmbed(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.proj(pixels).flatten(2).transpose(1, 2)  # [B, N, C], row-major patches


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        if q.dtype in (torch.float16, torch.bfloat16):
            # Half precision: the softmax stays fp32 (an fp32 island in the exported fp16 graph).
            scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
            out = torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_dim), no mask
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()  # exact erf GELU
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS)
        self.attn = Attention(cfg.width, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(cfg.width, cfg.mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AttentionPoolHead(nn.Module):
    """timm AttentionPoolLatent parameters (latent, q, kv, proj, norm, mlp). Loaded, never run."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.latent = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.q = nn.Linear(cfg.width, cfg.width)
        self.kv = nn.Linear(cfg.width, 2 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.norm = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(cfg.width, cfg.mlp_dim)


class VisionTransformer(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.patch_embed = PatchEmbed(cfg)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS)
        self.attn_pool = AttentionPoolHead(cfg)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class SiglipVisionTower(nn.Module):
    """`vision_und_enc_model`: pixels [B, 3, S, S] -> features [B, (S/patch)^2, width]."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.config = cfg
        self.vision_tower = VisionTransformer(cfg)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if tuple(pixels.shape[1:]) != (3, size, size):
            raise ValueError(f"SigLIP takes [B, 3, {size}, {size}] pixels, got {list(pixels.shape)}")
        if self.config.pixel_mean is not None:  # the official optional in-tower normalisation
            mean = pixels.new_tensor(self.config.pixel_mean)[None, :, None, None]
            std = pixels.new_tensor(self.config.pixel_std)[None, :, None, None]
            pixels = (pixels - mean) / std
        return self.vision_tower(pixels)
