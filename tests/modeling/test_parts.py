"""Each JanusFlow part against an independent computation of the spec's formula."""

import math

import torch

from jflow.modeling.uvit_blocks import ChannelLastRMSNorm, GlobalResponseNorm


def test_grn_formula():
    torch.manual_seed(0)
    grn = GlobalResponseNorm(6)
    with torch.no_grad():
        grn.weight.normal_()
        grn.bias.normal_()
    x = torch.randn(2, 5, 4, 6)  # NHWC
    g = x.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
    n = g / (g.mean(dim=-1, keepdim=True) + 1e-6)
    assert torch.allclose(grn(x), grn.bias + x * (1 + grn.weight * n), atol=1e-6)


def test_channel_last_rmsnorm():
    norm = ChannelLastRMSNorm(3, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
    x = torch.randn(2, 3, 4, 4)
    expected = x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-6) * norm.weight[None, :, None, None]
    assert torch.allclose(norm(x), expected, atol=1e-6)


def test_time_features_are_cos_first(tiny_ref):
    proj = tiny_ref.model.vision_gen_enc_model.time_proj
    t = torch.tensor([33.25, 968.0])
    half = proj.num_channels // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    angles = t[:, None] * freqs[None]
    assert torch.allclose(proj(t), torch.cat([angles.cos(), angles.sin()], dim=1), atol=1e-5)


def test_gen_encode_token_order_and_shapes(tiny_ref):
    model = tiny_ref.model
    z = torch.randn(2, 4, 48, 48)
    with torch.no_grad():
        tokens, t_emb, skip = model.gen_encode(z, torch.tensor([0.0, 500.0]))
        grid_h, _ = model.vision_gen_enc_model(z, torch.tensor([0.0, 500.0]))
        row, col = 5, 17  # token n = row * 24 + col
        expected = model.vision_gen_enc_aligner(grid_h[:, :, row, col])
    assert tokens.shape == (2, 576, 64) and t_emb.shape == (2, 64) and skip.shape == (2, 16, 24, 24)
    assert torch.allclose(tokens[:, row * 24 + col], expected, atol=1e-6)
    assert not torch.allclose(t_emb[0], t_emb[1])


def test_gen_decode_shape_and_pixel_shuffle(tiny_ref):
    model = tiny_ref.model
    hidden, skip, t_emb = torch.randn(1, 576, 64), torch.randn(1, 16, 24, 24), torch.randn(1, 64)
    with torch.no_grad():
        v = model.gen_decode(hidden, skip, t_emb)
        dec = model.vision_gen_dec_model
        x = model.vision_gen_dec_aligner(model.vision_gen_dec_aligner_norm(hidden)).reshape(1, 24, 24, -1)
        x = dec.mid_block(torch.cat([dec.input_norm(x.permute(0, 3, 1, 2)), skip], 1), t_emb)
        pre = dec.out_convs[0].unpatch_conv(dec.out_convs[0].norm(x))  # [1, 16, 24, 24]
    assert v.shape == (1, 4, 48, 48)
    # torch pixel shuffle (ONNX DepthToSpace CRD): out[c, 2i+a, 2j+b] = in[c*4 + a*2 + b, i, j]
    c, i, j, a, b = 2, 7, 11, 1, 0
    assert torch.allclose(v[0, c, 2 * i + a, 2 * j + b], pre[0, c * 4 + a * 2 + b, i, j])


def test_siglip_output_is_final_normed(tiny_ref):
    tower = tiny_ref.model.vision_und_enc_model.vision_tower
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        h = tower.patch_embed(x) + tower.pos_embed
        for block in tower.blocks:
            h = block(h)
        assert torch.allclose(tower(x), tower.norm(h), atol=1e-6)
        assert tower.patch_embed(x).shape == (1, 576, 32)
