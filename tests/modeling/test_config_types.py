"""config.json fields of the wrong type or out of range: one ConfigError naming the field and the file."""

import json

import pytest

from jflow.errors import ConfigError
from jflow.modeling.config import JanusFlowConfig, read_config
from jflow.modeling.presets import tiny_config

LANG, UND, ENC, DEC = "language_config", "vision_und_enc_config", "vision_gen_enc_config", "vision_gen_dec_config"
WHOLE, REAL, FLAG = "must be a whole number", "must be a finite number", "must be true or false"


def _set(section, key, value):
    def edit(config):
        target = config[section] if section == LANG else config[section]["params"]
        target[key] = value
    return edit


@pytest.mark.parametrize("edit, field, message", [
    (_set(LANG, "hidden_size", "64"), "language_config.hidden_size", WHOLE + " > 0, got '64' (str)"),
    (_set(LANG, "hidden_size", True), "language_config.hidden_size", WHOLE + " > 0, got True (bool)"),
    (_set(LANG, "hidden_size", 64.0), "language_config.hidden_size", WHOLE),
    (_set(LANG, "num_hidden_layers", 0), "language_config.num_hidden_layers", WHOLE + " > 0, got 0"),
    (_set(LANG, "vocab_size", -5), "language_config.vocab_size", WHOLE),
    (_set(LANG, "num_key_value_heads", None), None, None),  # optional: LlamaConfig then uses the head count
    (_set(LANG, "num_key_value_heads", "4"), "language_config.num_key_value_heads", WHOLE),
    (_set(LANG, "max_position_embeddings", [4096]), "language_config.max_position_embeddings", WHOLE),
    (_set(LANG, "rms_norm_eps", 0), "language_config.rms_norm_eps", REAL + " > 0"),
    (_set(LANG, "rms_norm_eps", float("nan")), "language_config.rms_norm_eps", REAL),
    (_set(LANG, "rms_norm_eps", "1e-6"), "language_config.rms_norm_eps", REAL),
    (_set(LANG, "rope_theta", float("inf")), "language_config.rope_theta", REAL),
    (_set(LANG, "tie_word_embeddings", "false"), "language_config.tie_word_embeddings", FLAG),
    (_set(LANG, "tie_word_embeddings", 0), "language_config.tie_word_embeddings", FLAG),
    (_set(LANG, "num_key_value_heads", 3), "language_config.num_key_value_heads", "divide"),
    (_set(LANG, "hidden_size", 66), "language_config.num_attention_heads", "divide"),
    (_set(UND, "image_size", "384"), "vision_und_enc_config.params.image_size", WHOLE),
    (_set(UND, "width", 0), "vision_und_enc_config.params.width", WHOLE),
    (_set(UND, "mlp_ratio", "4"), "vision_und_enc_config.params.mlp_ratio", REAL),
    (_set(UND, "select_layer", 1.5), "vision_und_enc_config.params.select_layer", WHOLE),
    (_set(UND, "pixel_mean", [0.5, 0.5]), "vision_und_enc_config.params.pixel_mean", "list of 3"),
    (_set(UND, "model_name", 7), "vision_und_enc_config.params.model_name", "must be a string"),
    (_set(ENC, "block_out_channels", "16"), "vision_gen_enc_config.params.block_out_channels", "non-empty list"),
    (_set(ENC, "block_out_channels", []), "vision_gen_enc_config.params.block_out_channels", "non-empty list"),
    (_set(ENC, "block_out_channels", [16, "x"]), "vision_gen_enc_config.params.block_out_channels", WHOLE),
    (_set(ENC, "stride", True), "vision_gen_enc_config.params.stride", WHOLE),
    (_set(ENC, "padding", -1), "vision_gen_enc_config.params.padding", WHOLE + " >= 0"),
    (_set(ENC, "use_bias", "yes"), "vision_gen_enc_config.params.use_bias", FLAG),
    (_set(ENC, "norm_eps", -1e-6), "vision_gen_enc_config.params.norm_eps", REAL + " > 0"),
    (_set(DEC, "upsamples", "1"), "vision_gen_dec_config.params.upsamples", WHOLE),
    (_set(DEC, "use_mid_block", None), "vision_gen_dec_config.params.use_mid_block", FLAG),
    (_set(DEC, "out_channels", 4.0), "vision_gen_dec_config.params.out_channels", WHOLE),
])
def test_wrong_types_and_ranges_name_field_and_file(edit, field, message):
    config = tiny_config(400)
    edit(config)
    if field is None:
        JanusFlowConfig.from_dict(config, source="x/config.json")
        return
    with pytest.raises(ConfigError) as err:
        JanusFlowConfig.from_dict(config, source="x/config.json")
    text = str(err.value)
    assert text.startswith("x/config.json: ") and field in text and message in text, text
    assert "\n" not in text


def test_the_file_is_named_when_read_from_disk(tmp_path):
    config = tiny_config(400)
    config[LANG]["hidden_size"] = "64"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=f"{tmp_path / 'config.json'}: language_config.hidden_size must be"):
        read_config(tmp_path)


def test_valid_configs_still_load():
    from jflow.modeling.presets import bench_config, janusflow_1_3b_config
    for raw in (tiny_config(400), tiny_config(400, kv_heads=2, tie_word_embeddings=True), janusflow_1_3b_config(),
                bench_config()):
        JanusFlowConfig.from_dict(raw)
