"""The 1.3B config, built on the meta device, has exactly the names and shapes of spec §1-§4 and §7."""

import torch

from jflow.modeling import JanusFlow, JanusFlowConfig
from jflow.modeling.presets import janusflow_1_3b_config


def _linear(prefix, out_f, in_f, bias=True):
    d = {f"{prefix}.weight": [out_f, in_f]}
    if bias:
        d[f"{prefix}.bias"] = [out_f]
    return d


def _convnext(prefix, c, cond=2048):
    d = {f"{prefix}.depthwise.weight": [c, 1, 7, 7], f"{prefix}.depthwise.bias": [c], f"{prefix}.norm.weight": [c],
         f"{prefix}.channelwise_norm.weight": [1, 1, 1, 4 * c], f"{prefix}.channelwise_norm.bias": [1, 1, 1, 4 * c]}
    d.update(_linear(f"{prefix}.channelwise_linear_1", 4 * c, c))
    d.update(_linear(f"{prefix}.channelwise_linear_2", c, 4 * c))
    d.update(_linear(f"{prefix}.cond_embeds_mapper", 2 * c, cond))
    return d


def expected_1_3b_shapes():
    """Written from the spec's tables, independently of the modeling code."""
    e = {"beg_of_und_embed": [1, 2048]}
    vt = "vision_und_enc_model.vision_tower"
    e.update({f"{vt}.patch_embed.proj.weight": [1024, 3, 16, 16], f"{vt}.patch_embed.proj.bias": [1024],
              f"{vt}.pos_embed": [1, 576, 1024], f"{vt}.norm.weight": [1024], f"{vt}.norm.bias": [1024]})
    for i in range(24):
        b = f"{vt}.blocks.{i}"
        for norm in ("norm1", "norm2"):
            e.update({f"{b}.{norm}.weight": [1024], f"{b}.{norm}.bias": [1024]})
        e.update(_linear(f"{b}.attn.qkv", 3072, 1024))
        e.update(_linear(f"{b}.attn.proj", 1024, 1024))
        e.update(_linear(f"{b}.mlp.fc1", 4096, 1024))
        e.update(_linear(f"{b}.mlp.fc2", 1024, 4096))
    ap = f"{vt}.attn_pool"
    e.update({f"{ap}.latent": [1, 1, 1024], f"{ap}.norm.weight": [1024], f"{ap}.norm.bias": [1024]})
    for name, out_f, in_f in (("q", 1024, 1024), ("kv", 2048, 1024), ("proj", 1024, 1024),
                              ("mlp.fc1", 4096, 1024), ("mlp.fc2", 1024, 4096)):
        e.update(_linear(f"{ap}.{name}", out_f, in_f))
    e.update(_linear("vision_und_enc_aligner", 2048, 1024))
    enc = "vision_gen_enc_model"
    e.update(_linear(f"{enc}.time_embed.linear_1", 2048, 768))
    e.update(_linear(f"{enc}.time_embed.linear_2", 2048, 2048))
    e.update({f"{enc}.in_conv.weight": [768, 4, 2, 2], f"{enc}.in_conv.bias": [768]})
    for i in range(2):
        e.update(_convnext(f"{enc}.mid_block.res_blocks.{i}", 768))
    e.update(_linear("vision_gen_enc_aligner", 2048, 768))
    dec = "vision_gen_dec_model"
    e[f"{dec}.input_norm.weight"] = [768]
    for i in range(2):
        e.update(_convnext(f"{dec}.mid_block.res_blocks.{i}", 1536))
    e.update({f"{dec}.out_convs.0.norm.weight": [1536], f"{dec}.out_convs.0.unpatch_conv.weight": [16, 1536, 1, 1],
              f"{dec}.out_convs.0.unpatch_conv.bias": [16]})
    lm = "language_model"
    e.update({f"{lm}.model.embed_tokens.weight": [102400, 2048], f"{lm}.model.norm.weight": [2048],
              f"{lm}.lm_head.weight": [102400, 2048]})
    for i in range(24):
        layer = f"{lm}.model.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            e[f"{layer}.self_attn.{proj}.weight"] = [2048, 2048]
        e.update({f"{layer}.mlp.gate_proj.weight": [5632, 2048], f"{layer}.mlp.up_proj.weight": [5632, 2048],
                  f"{layer}.mlp.down_proj.weight": [2048, 5632], f"{layer}.input_layernorm.weight": [2048],
                  f"{layer}.post_attention_layernorm.weight": [2048]})
    e["vision_gen_dec_aligner_norm.weight"] = [2048]
    e.update(_linear("vision_gen_dec_aligner", 768, 2048))
    return e


def test_full_size_names_shapes_and_count():
    config = JanusFlowConfig.from_dict(janusflow_1_3b_config())
    with torch.device("meta"):
        model = JanusFlow(config)
    actual = {k: list(v.shape) for k, v in model.state_dict().items()}
    expected = expected_1_3b_shapes()
    assert sorted(set(expected) - set(actual)) == []
    assert sorted(set(actual) - set(expected)) == []
    assert {k: v for k, v in actual.items() if v != expected[k]} == {}
    total = sum(p.numel() for p in model.parameters())
    assert abs(total - 2.046e9) < 0.002e9, total  # spec: 2.046 B, i.e. 4.09 GB in bf16
    assert all(p.is_meta for p in model.parameters())  # nothing was allocated


def test_full_size_geometry():
    config = JanusFlowConfig.from_dict(janusflow_1_3b_config())
    assert config.siglip.num_patches == 576
    assert config.gen_grid == 24 and config.num_gen_tokens == 576
    assert config.siglip.layers == 24 and config.siglip.mlp_dim == 4096


def test_bench_preset_has_real_widths_and_vocabulary():
    from jflow.modeling.presets import bench_config
    config = JanusFlowConfig.from_dict(bench_config(layers=2))
    assert config.hidden_size == 2048 and config.language["vocab_size"] == 102400
    assert config.language["num_hidden_layers"] == 2 and config.siglip.width == 1024 and config.siglip.layers == 2
    assert config.gen_encoder.channels == 768 and config.num_gen_tokens == 576
