"""The `tiny` preset: a seeded random-weight JanusFlow with the real architecture and small widths.

It has its own small byte-level BPE tokenizer with the JanusFlow special tokens, and can be written
as a checkpoint folder in the official format, so tests and demos exercise the real loading code
without downloading anything.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from jflow.fsutil import check_new_dir
from jflow.modeling.checkpoint import save_checkpoint
from jflow.modeling.config import JanusFlowConfig
from jflow.modeling.janusflow import JanusFlow
from jflow.modeling.presets import tiny_config, tiny_vae_config
from jflow.modeling.reference import JanusFlowReference
from jflow.runtime.processor_config import ProcessorSettings
from jflow.runtime.tokenizer import DEFAULT_BOS, DEFAULT_EOS, PAD_TOKEN, JanusFlowTokenizer

BPE_VOCAB = 400
CORPUS = """
a photo of a red cube on a wooden table. a cat sitting on a sofa in the sun. a robot arm picks up a blue
ball. what is in this picture? describe the image in detail. the image shows a street with cars, trees,
people and a yellow bus. how many objects are there? there are three apples and two oranges on the plate.
a watercolor painting of a mountain lake at sunrise. a drawing of a small house with a green door.
""".split("\n")
# In the JanusFlow tokenizer.json: BOS/EOS/pad and these two; the start/end image tags are added at load.
SPECIALS = [DEFAULT_BOS, DEFAULT_EOS, PAD_TOKEN, "<image_placeholder>", "<｜begin▁of▁generation｜>"]
TINY_PROCESSOR = ProcessorSettings(image_end_tag="<image_end>")


def build_tiny_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    return tokenizer


def _perturb_(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.05) -> None:
    # Zero- or one-initialised parameters (GRN, norms, pos_embed, beg_of_und_embed) would hide bugs.
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)


def build_tiny(seed: int = 0, with_vae: bool = True, **overrides) -> JanusFlowReference:
    """A tiny JanusFlow in memory; `overrides` go to `tiny_config` (kv_heads, tie_word_embeddings, ...)."""
    tokenizer = JanusFlowTokenizer(build_tiny_tokenizer(), TINY_PROCESSOR)
    vocab = (tokenizer.vocab_size + 63) // 64 * 64  # padded like the real 102400-row table
    config = JanusFlowConfig.from_dict(tiny_config(vocab, **overrides), source="tiny preset")
    torch.manual_seed(seed)
    model = JanusFlow(config)
    generator = torch.Generator().manual_seed(seed)
    _perturb_(model, generator)
    if model.language_model.config.tie_word_embeddings:
        model.language_model.lm_head.weight = model.language_model.get_input_embeddings().weight
    vae = None
    if with_vae:
        from diffusers import AutoencoderKL
        vae = AutoencoderKL(**tiny_vae_config())
        _perturb_(vae, generator, scale=0.01)
        vae.eval()
    return JanusFlowReference(model=model.eval(), tokenizer=tokenizer, processor=TINY_PROCESSOR, vae=vae)


def write_tiny_checkpoint(out: str | Path, seed: int = 0, dtype: torch.dtype | None = None,
                          shard_bytes: int | None = None, overwrite: bool = False, **overrides) -> Path:
    """Write the tiny preset as an official-layout checkpoint folder (with vae/), marked as jflow's output
    (so `overwrite`, the CLI's --force, may later replace it, and only it)."""
    check_new_dir(out, "the checkpoint folder", replace=overwrite)  # before minutes of work
    return save_checkpoint(build_tiny(seed, **overrides), out, dtype=dtype, shard_bytes=shard_bytes,
                           overwrite=overwrite)
