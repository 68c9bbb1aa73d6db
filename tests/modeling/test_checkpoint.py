"""Checkpoint round trips (single, sharded, bf16, .bin) and clear errors for bad checkpoint folders."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from jflow.errors import CheckpointError, ConfigError, JFlowError
from jflow.modeling import build_tiny, load_janusflow, write_tiny_checkpoint
from jflow.modeling.checkpoint import save_checkpoint


def _same_weights(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_equals_in_memory_model(tiny_dir, tiny_ref, photo):
    loaded = load_janusflow(tiny_dir)
    assert _same_weights(loaded, tiny_ref)
    assert loaded.tokenizer.special_ids() == tiny_ref.tokenizer.special_ids()
    assert loaded.processor == tiny_ref.processor
    a = loaded.generate("a red cube", steps=2, seed=3)
    b = tiny_ref.generate("a red cube", steps=2, seed=3)
    assert np.array_equal(a.latents, b.latents) and np.array_equal(a.images, b.images)
    assert loaded.answer(photo, "what is this?", max_new_tokens=5) == tiny_ref.answer(photo, "what is this?",
                                                                                         max_new_tokens=5)


def test_tiny_preset_is_deterministic(tiny_ref):
    assert _same_weights(build_tiny(seed=0, with_vae=False), tiny_ref)
    assert not _same_weights(build_tiny(seed=1, with_vae=False), tiny_ref)


def test_bf16_sharded_checkpoint_loads_as_fp32(tmp_path, tiny_ref):
    out = write_tiny_checkpoint(tmp_path / "bf16", dtype=torch.bfloat16, shard_bytes=100_000)
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 1
    assert (out / "model.safetensors.index.json").is_file()
    loaded = load_janusflow(out, dtype=torch.float32)
    for name, tensor in loaded.model.state_dict().items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, tiny_ref.model.state_dict()[name].to(torch.bfloat16).float()), name


def test_weights_only_bin_checkpoint(tmp_path, tiny_dir, tiny_ref):
    folder = tmp_path / "bin"
    shutil.copytree(tiny_dir, folder)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    assert _same_weights(load_janusflow(folder, load_vae=False), tiny_ref)


def test_attention_pool_keys_are_optional(tmp_path, tiny_dir, tiny_ref):
    folder = _copy(tiny_dir, tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in tensors.items() if ".attn_pool." not in k}, str(folder / "model.safetensors"))
    loaded = load_janusflow(folder, load_vae=False)
    x = torch.zeros(1, 3, 384, 384)
    assert torch.equal(loaded.model.encode_images(x), tiny_ref.model.encode_images(x))


# --- bad checkpoints: each a specific, readable error ----------------------------------------------

def _copy(tiny_dir, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, folder)
    return folder


def _edit_config(folder, edit):
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def _rewrite_weights(folder, edit):
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint folder not found"):
        load_janusflow(tmp_path / "nope")


def test_missing_config(tmp_path, tiny_dir):
    folder = _copy(tiny_dir, tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(ConfigError, match="config.json is missing"):
        load_janusflow(folder)


def test_config_not_json(tmp_path, tiny_dir):
    folder = _copy(tiny_dir, tmp_path)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_janusflow(folder)


def _unknown_tower(config):
    params = config["vision_und_enc_config"]["params"]
    params["model_name"] = "vit_huge"
    del params["width"]


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["language_config"].pop("hidden_size"), "language_config has no 'hidden_size'"),
    (lambda c: c.pop("vision_gen_dec_config"), "no 'vision_gen_dec_config'"),
    (_unknown_tower, "unknown model_name 'vit_huge'"),
    (lambda c: c["vision_gen_dec_config"]["params"].update(upsamples=2), "unpatchify"),
])
def test_bad_config_fields(tmp_path, tiny_dir, edit, message):
    folder = _copy(tiny_dir, tmp_path)
    _edit_config(folder, edit)
    with pytest.raises(ConfigError, match=message):
        load_janusflow(folder)


def test_missing_weights(tmp_path, tiny_dir):
    folder = _copy(tiny_dir, tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="holds no weights: expected model.safetensors"):
        load_janusflow(folder)


def test_truncated_weights(tmp_path, tiny_dir):
    folder = _copy(tiny_dir, tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is truncated or corrupt"):
        load_janusflow(folder)


def test_corrupt_weights(tmp_path, tiny_dir):
    folder = _copy(tiny_dir, tmp_path)
    (folder / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_janusflow(folder)


def test_missing_shard(tmp_path):
    folder = write_tiny_checkpoint(tmp_path / "sharded", shard_bytes=100_000)
    next(folder.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="shard\\(s\\) that are missing: model-00002"):
        load_janusflow(folder)


def test_missing_key_is_named(tmp_path, tiny_dir):
    folder = _copy(tiny_dir, tmp_path)
    _rewrite_weights(folder, lambda t: t.pop("vision_gen_dec_aligner.bias"))
    with pytest.raises(CheckpointError, match=r"1 missing:\s+vision_gen_dec_aligner.bias"):
        load_janusflow(folder)


def test_wrong_shape_is_named(tmp_path, tiny_dir):
    folder = _copy(tiny_dir, tmp_path)
    _rewrite_weights(folder, lambda t: t.update(beg_of_und_embed=torch.zeros(1, 7)))
    with pytest.raises(CheckpointError, match=r"beg_of_und_embed: checkpoint \[1, 7\], config expects \[1, 64\]"):
        load_janusflow(folder)


def test_janus_checkpoint_is_recognised(tmp_path, tiny_dir):
    folder = _copy(tiny_dir, tmp_path)
    _rewrite_weights(folder, lambda t: t.update({"gen_head.output_mlp_projector.weight": torch.zeros(2, 2)}))
    with pytest.raises(CheckpointError, match="Janus / Janus-Pro checkpoint"):
        load_janusflow(folder)


def test_missing_vae_is_explained(tmp_path, tiny_dir):
    folder = _copy(tiny_dir, tmp_path)
    shutil.rmtree(folder / "vae")
    with pytest.raises(CheckpointError, match="no SDXL VAE found"):
        load_janusflow(folder)
    assert load_janusflow(folder, load_vae=False).vae is None  # understanding needs no VAE


def test_errors_are_jflow_errors():
    assert issubclass(CheckpointError, JFlowError) and issubclass(ConfigError, JFlowError)


def test_save_never_replaces_a_checkpoint_that_appeared_meanwhile(tmp_path, tiny_ref, monkeypatch):
    import jflow.modeling.checkpoint as checkpoint_module
    out = tmp_path / "ckpt"

    def racing(reference, folder, dtype, shard_bytes):
        (folder / "config.json").write_text("second")
        out.mkdir()  # `jflow-export tiny` to the same folder, finished first
        (out / "config.json").write_text("first")
    monkeypatch.setattr(checkpoint_module, "_write_checkpoint", racing)
    with pytest.raises(JFlowError, match="appeared while"):
        save_checkpoint(tiny_ref, out)
    assert (out / "config.json").read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_killed_tiny_leaves_a_partial_that_the_next_one_removes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "tiny"
    proc = subprocess.Popen([sys.executable, "-m", "jflow.cli", "tiny", "--out", str(out)])
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".tiny.") and any(p.iterdir()) for p in tmp_path.iterdir()) \
            and time.monotonic() < deadline:  # its temporary folder has begun to fill
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # as the OOM killer or `kill -9` would, mid-write
    proc.wait()
    if out.exists():
        pytest.skip("the writer finished before it could be killed")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tiny.")]  # the leftover
    save_checkpoint(build_tiny(seed=0, with_vae=False), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
