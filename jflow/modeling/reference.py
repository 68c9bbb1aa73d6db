"""The loaded reference: model + tokenizer + processor settings + VAE, with the official pipelines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from jflow.errors import CheckpointError
from jflow.modeling.janusflow import JanusFlow
from jflow.runtime.processor_config import ProcessorSettings
from jflow.runtime.tokenizer import JanusFlowTokenizer


@dataclass
class JanusFlowReference:
    model: JanusFlow
    tokenizer: JanusFlowTokenizer
    processor: ProcessorSettings
    vae: object | None = None  # diffusers AutoencoderKL
    path: Path | None = None

    def __post_init__(self):
        cfg = self.model.config
        if self.processor.num_image_tokens != cfg.siglip.num_patches:
            raise CheckpointError(f"processor_config.json says {self.processor.num_image_tokens} image tokens but "
                                  f"the SigLIP tower makes {cfg.siglip.num_patches}")
        if self.processor.image_size != cfg.siglip.image_size:
            raise CheckpointError(f"preprocessor_config.json image_size {self.processor.image_size} != SigLIP "
                                  f"image_size {cfg.siglip.image_size}")
        vocab = int(cfg.language["vocab_size"])
        if self.tokenizer.vocab_size > vocab:
            raise CheckpointError(f"the tokenizer has {self.tokenizer.vocab_size} tokens but the LLM embeds only "
                                  f"{vocab}; tokenizer and weights do not belong together")

    @property
    def dtype(self) -> torch.dtype:
        return self.model.beg_of_und_embed.dtype

    def generate(self, prompts, **kwargs):
        """Text to image, see `jflow.modeling.generation.generate`."""
        from jflow.modeling.generation import generate
        return generate(self, prompts, **kwargs)

    def answer(self, images, questions, **kwargs):
        """Image + question to text, see `jflow.modeling.understanding.answer`."""
        from jflow.modeling.understanding import answer
        return answer(self, images, questions, **kwargs)
