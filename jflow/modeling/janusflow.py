"""`MultiModalityCausalLM` of JanusFlow: the official submodules, names and state-dict layout.

The methods below are the pieces the exported graphs wrap (siglip, llm, gen_encoder, gen_decoder);
the VAE is separate, as in the official code.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from jflow.modeling.config import JanusFlowConfig
from jflow.modeling.gen_decoder import GenDecoder
from jflow.modeling.gen_encoder import GenEncoder
from jflow.modeling.llm import PastKV, build_language_model, llm_step
from jflow.modeling.siglip import SiglipVisionTower


class JanusFlow(nn.Module):
    def __init__(self, config: JanusFlowConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        self.vision_und_enc_model = SiglipVisionTower(config.siglip)
        self.vision_und_enc_aligner = nn.Linear(config.siglip.width, hidden)
        self.beg_of_und_embed = nn.Parameter(torch.zeros(1, hidden))
        self.vision_gen_enc_model = GenEncoder(config.gen_encoder)
        self.vision_gen_enc_aligner = nn.Linear(config.gen_encoder.channels, hidden)
        self.vision_gen_dec_model = GenDecoder(config.gen_decoder)
        self.language_model = build_language_model(config.language)
        self.vision_gen_dec_aligner_norm = LlamaRMSNorm(hidden, eps=config.rms_norm_eps)
        self.vision_gen_dec_aligner = nn.Linear(hidden, config.gen_decoder.in_channels)

    # --- understanding -------------------------------------------------------------------------
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [B, 3, S, S] -> image embeddings [B, N, H] (tower + aligner)."""
        return self.vision_und_enc_aligner(self.vision_und_enc_model(pixels))

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.get_input_embeddings()(ids)

    # --- LLM -----------------------------------------------------------------------------------
    def llm_step(self, embeds, attention_mask, position_ids, past: PastKV | None = None, with_logits=True):
        return llm_step(self.language_model, embeds, attention_mask, position_ids, past, with_logits)

    # --- generation ----------------------------------------------------------------------------
    def gen_encode(self, z: torch.Tensor, t: torch.Tensor):
        """z [B, 4, s, s], t [B] -> (LLM-ready tokens [B, G*G, H], t_emb [B, H], skip [B, C, G, G])."""
        h, t_emb = self.vision_gen_enc_model(z, t)
        tokens = self.vision_gen_enc_aligner(h.flatten(2).transpose(1, 2))  # token n = row * G + col
        return tokens, t_emb, h

    def gen_decode(self, hidden: torch.Tensor, skip: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """The last G*G LLM hidden states [B, G*G, H] + skip + t_emb -> velocity [B, 4, s, s]."""
        b, n, _ = hidden.shape
        grid = skip.shape[-1]
        x = self.vision_gen_dec_aligner(self.vision_gen_dec_aligner_norm(hidden))
        x = x.reshape(b, grid, grid, -1).permute(0, 3, 1, 2)
        return self.vision_gen_dec_model(x, skip, t_emb)
