"""Types and ranges of the config.json fields jflow reads, checked on read (checkers: jflow.fields).

A wrong value ("hidden_size": "64") must be one ConfigError naming the field and the file, not a
TypeError deep inside torch.
"""

from __future__ import annotations

from jflow.errors import ConfigError
from jflow.fields import any_int, channel_list, check_fields, flag, non_negative_int, positive_int, positive_real, \
    text, three_reals

# Absent fields take their defaults; null is "not set" only where the official code allows it.
NULLABLE = frozenset({"num_key_value_heads", "head_dim", "padding", "pixel_mean", "pixel_std"})
LANGUAGE = {"hidden_size": positive_int, "intermediate_size": positive_int, "num_hidden_layers": positive_int,
            "num_attention_heads": positive_int, "num_key_value_heads": positive_int, "vocab_size": positive_int,
            "head_dim": positive_int, "max_position_embeddings": positive_int, "rms_norm_eps": positive_real,
            "rope_theta": positive_real, "tie_word_embeddings": flag, "attention_bias": flag, "mlp_bias": flag,
            "hidden_act": text}
SIGLIP = {"model_name": text, "image_size": positive_int, "patch_size": positive_int, "width": positive_int,
          "layers": positive_int, "heads": positive_int, "mlp_ratio": positive_real, "select_layer": any_int,
          "pixel_mean": three_reals, "pixel_std": three_reals}
GEN_ENCODER = {"input_channels": positive_int, "stride": positive_int, "kernel_size": positive_int,
               "padding": non_negative_int, "block_out_channels": channel_list, "layers_in_middle": positive_int,
               "hidden_size": positive_int, "use_bias": flag, "norm_eps": positive_real, "use_mid_block": flag}
GEN_DECODER = {"in_channels": positive_int, "out_channels": positive_int, "block_out_channels": channel_list,
               "upsamples": non_negative_int, "layers_in_middle": positive_int, "hidden_size": positive_int,
               "use_bias": flag, "norm_eps": positive_real, "use_mid_block": flag}
REQUIRED = {"language_config": ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                                "intermediate_size")}


def check_section(values: dict, table: dict, where: str, source: str) -> None:
    check_fields(values, table, source, prefix=f"{where}.", nullable=NULLABLE)


def check_language(language: dict, source: str) -> None:
    """Types, then the head arithmetic that LlamaConfig would otherwise trip over."""
    check_section(language, LANGUAGE, "language_config", source)
    heads, hidden = language["num_attention_heads"], language["hidden_size"]
    kv = language.get("num_key_value_heads") or heads
    if heads % kv:
        raise ConfigError(f"{source}: language_config.num_key_value_heads {kv} must divide num_attention_heads "
                          f"{heads} (grouped-query attention)")
    if language.get("head_dim") is None and hidden % heads:
        raise ConfigError(f"{source}: language_config.num_attention_heads {heads} must divide hidden_size "
                          f"{hidden} (or give head_dim)")
