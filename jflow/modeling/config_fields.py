"""Types and ranges of the config.json fields jflow reads, checked on read.

A wrong value ("hidden_size": "64") must be one ConfigError naming the field and the file, not a
TypeError deep inside torch. JSON true/false are not numbers here (Python's bool is an int).
"""

from __future__ import annotations

import math

from jflow.errors import ConfigError


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def positive_int(x):
    return None if _int(x) and x > 0 else "must be a whole number > 0"


def non_negative_int(x):
    return None if _int(x) and x >= 0 else "must be a whole number >= 0"


def any_int(x):
    return None if _int(x) else "must be a whole number"


def positive_real(x):
    return None if _real(x) and x > 0 else "must be a finite number > 0"


def flag(x):
    return None if isinstance(x, bool) else "must be true or false"


def text(x):
    return None if isinstance(x, str) else "must be a string"


def channel_list(x):
    if not isinstance(x, list) or not x:
        return "must be a non-empty list of whole numbers > 0"
    return next((f"[{i}] {positive_int(c)}" for i, c in enumerate(x) if positive_int(c)), None)


def three_reals(x):
    if not isinstance(x, list) or len(x) != 3 or not all(_real(v) for v in x):
        return "must be a list of 3 finite numbers (one per colour channel)"
    return None


# Absent fields take their defaults; null is "not set" only where the official code allows it.
NULLABLE = {"num_key_value_heads", "head_dim", "padding", "pixel_mean", "pixel_std"}
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


def check_fields(values: dict, fields: dict, where: str, source: str) -> None:
    for key, check in fields.items():
        value = values.get(key)
        if key not in values or (value is None and key in NULLABLE):
            continue
        problem = check(value)
        if problem:
            raise ConfigError(f"{source}: {where}.{key} {problem}, got {value!r} ({type(value).__name__})")


def check_language(language: dict, source: str) -> None:
    """Types, then the head arithmetic that LlamaConfig would otherwise trip over."""
    check_fields(language, LANGUAGE, "language_config", source)
    heads, hidden = language["num_attention_heads"], language["hidden_size"]
    kv = language.get("num_key_value_heads") or heads
    if heads % kv:
        raise ConfigError(f"{source}: language_config.num_key_value_heads {kv} must divide num_attention_heads "
                          f"{heads} (grouped-query attention)")
    if language.get("head_dim") is None and hidden % heads:
        raise ConfigError(f"{source}: language_config.num_attention_heads {heads} must divide hidden_size "
                          f"{hidden} (or give head_dim)")
