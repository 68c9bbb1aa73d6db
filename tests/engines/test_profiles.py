"""Optimization profiles derived from the manifest, and picking the profile that fits a call."""

import pytest

from jflow.engines.profiles import graph_profiles, input_shapes, llm_profiles, profiles_for_manifest
from jflow.errors import InputError
from jflow.runtime.backends.tensorrt import select_profile
from jflow.artifact.manifest import Manifest

LIMITS = {"max_batch": 3, "max_context": 1024, "max_new_tokens": 16}


def test_llm_has_prefill_gen_step_and_decode_profiles():
    p = llm_profiles(LIMITS, gen_tokens=576)
    assert list(p) == ["prefill", "gen_step", "decode"]
    assert p["prefill"]["past"] == (0, 0, 0) and p["prefill"]["seq"][2] == 1024 and p["prefill"]["batch"][2] == 6
    assert p["gen_step"]["seq"] == (577, 577, 577) and p["gen_step"]["batch"] == (2, 2, 6)
    assert p["gen_step"]["past"][2] + 577 == 1024
    assert p["decode"]["seq"] == (1, 1, 1) and p["decode"]["past"][2] == 1023 and p["decode"]["batch"][2] == 3
    for axes in p.values():
        assert all(t == min(a + b, 1024) for t, a, b in zip(axes["total"], axes["past"], axes["seq"]))
        assert all(lo <= opt <= hi for lo, opt, hi in axes.values())


def test_profiles_from_a_real_manifest(tiny_artifact):
    m = Manifest.load(tiny_artifact)
    profiles = profiles_for_manifest(m.data, list(m.graphs))
    llm = {p["name"]: p["shapes"] for p in profiles["llm"]}
    assert llm["gen_step"]["inputs_embeds"][1] == [2, 577, 64]           # opt: one image, guidance rows
    assert llm["decode"]["past_key_0"][2] == [3, 4, 1023, 16]             # max: batch 3, context - 1
    assert llm["decode"]["attention_mask"][2] == [3, 1024]
    dec = profiles["gen_decoder"][0]["shapes"]
    assert dec["z"][2][0] * 2 == dec["hidden_states"][2][0] == 6           # cfg rows are twice the batch
    assert profiles["vae_decoder"][0]["shapes"]["latent"] == [[1, 4, 48, 48], [1, 4, 48, 48], [3, 4, 48, 48]]


def test_unknown_axis_is_an_error():
    entry = {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", "mystery"]}]}
    with pytest.raises(ValueError, match="mystery"):
        input_shapes(entry, {"batch": (1, 1, 2)})


def test_select_profile_by_shapes(tiny_artifact):
    m = Manifest.load(tiny_artifact)
    profiles = profiles_for_manifest(m.data, ["llm"])["llm"]

    def shapes(batch, seq, past):
        s = {"inputs_embeds": (batch, seq, 64), "attention_mask": (batch, past + seq), "position_ids": (batch, seq)}
        s.update({f"past_{k}_{i}": (batch, 4, past, 16) for i in range(2) for k in ("key", "value")})
        return s
    assert profiles[select_profile(profiles, shapes(1, 600, 0))]["name"] == "prefill"
    assert profiles[select_profile(profiles, shapes(2, 577, 25))]["name"] == "gen_step"
    assert profiles[select_profile(profiles, shapes(1, 1, 640))]["name"] == "decode"
    with pytest.raises(InputError, match="rebuild with larger"):
        select_profile(profiles, shapes(1, 1, 5000))


def test_default_profile_for_simple_graphs():
    entry = {"ranges": {"batch": {"min": 1, "opt": 1, "max": 4}}}
    assert graph_profiles("siglip", entry, LIMITS, 576) == {"default": {"batch": (1, 1, 4)}}
