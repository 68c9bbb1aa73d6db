"""Llama variants load and run: grouped-query attention with tied embeddings, other widths."""

import numpy as np
import pytest
from safetensors import safe_open

from jflow.modeling import build_tiny, load_janusflow, write_tiny_checkpoint


@pytest.fixture(scope="module")
def gqa_tied_dir(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("gqa") / "ckpt", seed=3, kv_heads=2,
                                 tie_word_embeddings=True, hidden=96, heads=6, uvit_channels=24)


def test_gqa_tied_checkpoint_loads_and_generates(gqa_tied_dir, photo):
    with safe_open(str(gqa_tied_dir / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        k_shape = f.get_slice("language_model.model.layers.0.self_attn.k_proj.weight").get_shape()
    assert "language_model.lm_head.weight" not in keys  # tied: stored once, as save_pretrained does
    assert k_shape == [2 * 16, 96]                       # 2 kv heads of head_dim 96/6

    ref = load_janusflow(gqa_tied_dir)
    lm = ref.model.language_model
    assert lm.lm_head.weight is lm.get_input_embeddings().weight
    cached = ref.generate("a cat", steps=2, seed=0)
    full = ref.generate("a cat", steps=2, seed=0, reuse_prompt_kv=False)
    assert np.abs(cached.latents - full.latents).max() <= 1e-5
    assert isinstance(ref.answer(photo, "what is this?", max_new_tokens=4), str)


def test_gqa_kv_cache_has_kv_heads(photo):
    ref = build_tiny(seed=0, with_vae=False, kv_heads=1)
    import torch
    embeds = ref.model.embed_tokens(torch.tensor([[1, 2, 3]]))
    with torch.no_grad():
        _, _, present = ref.model.llm_step(embeds, torch.ones(1, 3, dtype=torch.long), torch.arange(3)[None])
    assert len(present) == 2 and tuple(present[0][0].shape) == (1, 1, 3, 16)
