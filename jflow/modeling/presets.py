"""Model configs in the official config.json layout: the real JanusFlow-1.3B and the tiny test model."""

from __future__ import annotations

import copy


def _config(und: dict, enc: dict, dec: dict, language: dict) -> dict:
    return {
        "architectures": ["MultiModalityCausalLM"],
        "model_type": "multi_modality",
        "torch_dtype": "bfloat16",
        "vision_und_enc_config": {"cls": "CLIPVisionTower", "model_type": "vision_und_enc", "params": und},
        "vision_gen_enc_config": {"cls": "ShallowUViTEncoder", "model_type": "vision_gen_enc", "params": enc},
        "vision_gen_dec_config": {"cls": "ShallowUViTDecoder", "model_type": "vision_gen_dec", "params": dec},
        "language_config": language,
    }


def janusflow_1_3b_config() -> dict:
    """The expected config.json of deepseek-ai/JanusFlow-1.3B (spec §2.1; values inferred from shapes)."""
    return _config(
        und={"model_name": "siglip_large_patch16_384", "image_size": 384, "select_feature": "same",
             "select_layer": -1},
        enc={"input_channels": 4, "stride": 2, "kernel_size": 2, "block_out_channels": [768],
             "layers_in_middle": 2, "hidden_size": 2048, "use_bias": True, "norm_eps": 1e-6,
             "dropout": 0.0, "use_mid_block": True},
        dec={"in_channels": 768, "out_channels": 4, "block_out_channels": [768], "upsamples": 1,
             "layers_in_middle": 2, "hidden_size": 2048, "use_bias": True, "norm_eps": 1e-6,
             "dropout": 0.0, "use_mid_block": True},
        language={"model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632,
                  "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
                  "vocab_size": 102400, "max_position_embeddings": 16384, "rms_norm_eps": 1e-6,
                  "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
                  "bos_token_id": 100000, "eos_token_id": 100001, "torch_dtype": "bfloat16"},
    )


def tiny_config(vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int | None = None,
                tie_word_embeddings: bool = False, uvit_channels: int = 16, vision_width: int = 32) -> dict:
    """Same architecture and geometry as 1.3B (384px images, 576 tokens, 48x48 latents), small widths."""
    config = janusflow_1_3b_config()
    und = config["vision_und_enc_config"]["params"]
    und.update({"width": vision_width, "layers": 2, "heads": 2, "mlp_ratio": 4})
    enc = config["vision_gen_enc_config"]["params"]
    enc.update({"block_out_channels": [uvit_channels], "hidden_size": hidden})
    dec = config["vision_gen_dec_config"]["params"]
    dec.update({"in_channels": uvit_channels, "block_out_channels": [uvit_channels], "hidden_size": hidden})
    config["language_config"].update({
        "hidden_size": hidden, "intermediate_size": hidden * 2, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads or heads, "vocab_size": vocab_size,
        "max_position_embeddings": 4096, "tie_word_embeddings": tie_word_embeddings,
        "bos_token_id": None, "eos_token_id": None})
    return copy.deepcopy(config)


def tiny_vae_config() -> dict:
    """A 4-stage AutoencoderKL like the SDXL VAE (8x upscaling, 4 latent channels) with small widths."""
    from jflow.modeling.vae import SDXL_VAE_CONFIG
    return {**SDXL_VAE_CONFIG, "block_out_channels": [8, 16, 16, 16], "layers_per_block": 1,
            "norm_num_groups": 8, "sample_size": 384}


def bench_config(vocab_size: int = 102400, layers: int = 2, vision_layers: int = 2) -> dict:
    """The `bench` preset: the real widths and vocabulary (LLM 2048 x 5632, 16 heads, 102400 tokens;
    SigLIP 1024; UViT 768/1536) with few layers, so timings mean something on a 2-core CPU and a run
    takes minutes. Per-layer costs scale to the full model; the lm_head and embeddings are full size."""
    config = janusflow_1_3b_config()
    config["vision_und_enc_config"]["params"]["layers"] = vision_layers
    config["language_config"].update({"num_hidden_layers": layers, "vocab_size": vocab_size})
    return copy.deepcopy(config)
