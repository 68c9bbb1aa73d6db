"""Load a JanusFlow checkpoint folder (official Hugging Face layout) strictly, and write one.

Folder: config.json, model.safetensors (or shards / .bin), tokenizer files, processor configs, and
the SDXL VAE in vae/ (or elsewhere, passed explicitly). Weights are bf16 on disk in the official
release and converted to the requested dtype. Missing or unexpected keys and wrong shapes are all
reported in one error; the unused SigLIP attention-pool keys may be present or absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from jflow.errors import CheckpointError
from jflow.fsutil import staged_dir
from jflow.modeling.config import CONFIG_FILE, JanusFlowConfig, read_config
from jflow.modeling.janusflow import JanusFlow
from jflow.modeling.reference import JanusFlowReference
from jflow.modeling.vae import VAE_SUBFOLDER, find_vae_folder, read_vae
from jflow.modeling.weights import read_weights, write_safetensors
from jflow.runtime.processor_config import PREPROCESSOR_FILE, PROCESSOR_FILE, ProcessorSettings
from jflow.runtime.tokenizer import JanusFlowTokenizer

OPTIONAL_PREFIXES = ("vision_und_enc_model.vision_tower.attn_pool.",)  # built, never run
LM_HEAD = "language_model.lm_head.weight"
SHOWN = 8  # names listed per kind of problem


def load_janusflow(path: str | Path, dtype: torch.dtype = torch.float32, vae_path: str | Path | None = None,
                   load_vae: bool = True) -> JanusFlowReference:
    """Load model, tokenizer, processor settings and (unless load_vae=False) the VAE from `path`."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder} (pass the folder that holds config.json)")
    config = read_config(folder)
    processor = ProcessorSettings.from_dir(folder)
    tokenizer = JanusFlowTokenizer.from_dir(folder, processor)
    vae_folder = find_vae_folder(folder, vae_path) if load_vae else None  # fail before the slow part
    model = build_from_state_dict(config, read_weights(folder, dtype), source=str(folder))
    vae = read_vae(vae_folder, dtype) if vae_folder is not None else None
    return JanusFlowReference(model=model, tokenizer=tokenizer, processor=processor, vae=vae, path=folder)


def build_from_state_dict(config: JanusFlowConfig, tensors: dict[str, torch.Tensor], source: str) -> JanusFlow:
    with torch.device("meta"):
        model = JanusFlow(config)
    tied = bool(model.language_model.config.tie_word_embeddings)
    check_state_dict(model, tensors, tied, source)
    if tied:
        tensors.pop(LM_HEAD, None)
    model.load_state_dict(tensors, strict=False, assign=True)
    if tied:
        model.language_model.lm_head.weight = model.language_model.get_input_embeddings().weight
    _materialize_leftovers(model, next(iter(tensors.values())).dtype)
    return model.eval()


def check_state_dict(model: JanusFlow, tensors: dict[str, torch.Tensor], tied: bool, source: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    optional = {k for k in expected if k.startswith(OPTIONAL_PREFIXES)} | ({LM_HEAD} if tied else set())
    missing = sorted(set(expected) - set(tensors) - optional)
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(f"{k}: checkpoint {list(tensors[k].shape)}, config expects {list(expected[k])}"
                   for k in set(tensors) & set(expected) if tuple(tensors[k].shape) != expected[k])
    if not (missing or unexpected or wrong):
        return
    lines = [f"{source} does not match its config.json:"]
    for title, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if names:
            shown = "\n    ".join(names[:SHOWN]) + (f"\n    ... and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
            lines.append(f"  {len(names)} {title}:\n    {shown}")
    if any(k.startswith(("gen_vision_model.", "aligner.", "gen_head.")) for k in unexpected):
        lines.append("  This looks like a Janus / Janus-Pro checkpoint; jflow needs JanusFlow (deepseek-ai/JanusFlow-1.3B).")
    else:
        lines.append("  Check that config.json belongs to these weights (widths, layer counts, vocab size).")
    raise CheckpointError("\n".join(lines))


def _materialize_leftovers(model: JanusFlow, dtype: torch.dtype) -> None:
    """Create what the checkpoint does not hold: RoPE tables, and an absent (unused) attention-pool head."""
    lm = model.language_model.model
    lm.rotary_emb = type(lm.rotary_emb)(config=model.language_model.config)
    pool = model.vision_und_enc_model.vision_tower.attn_pool
    if any(p.is_meta for p in pool.parameters()):
        pool.to_empty(device="cpu").to(dtype)
        for p in pool.parameters():
            torch.nn.init.zeros_(p)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise RuntimeError(f"jflow bug: tensors not materialized after loading: {leftover[:SHOWN]}")


def save_checkpoint(reference: JanusFlowReference, out: str | Path, dtype: torch.dtype | None = None,
                    shard_bytes: int | None = None, overwrite: bool = False) -> Path:
    """Write `reference` as a checkpoint folder in the official layout (atomically: temp dir + rename,
    which refuses a folder that appeared meanwhile unless `overwrite`)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out} already exists; choose another folder, or replace it with --force (overwrite=True)")
    with staged_dir(out, replace=overwrite, kind="checkpoint") as tmp:
        _write_checkpoint(reference, tmp, dtype, shard_bytes)
    return out


def _write_checkpoint(reference: JanusFlowReference, folder: Path, dtype, shard_bytes) -> None:
    model = reference.model
    state = model.state_dict()
    if model.language_model.config.tie_word_embeddings:
        state.pop(LM_HEAD)  # shared with embed_tokens, as save_pretrained writes it
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    write_safetensors(state, folder, shard_bytes)
    write_host_configs(reference, folder)
    if reference.vae is not None:
        reference.vae.save_pretrained(str(folder / VAE_SUBFOLDER), safe_serialization=True)


def write_host_configs(reference: JanusFlowReference, folder: Path) -> None:
    """config.json, processor and preprocessor configs and the tokenizer files, in the official layout."""
    _write_json(folder / CONFIG_FILE, reference.model.config.to_dict())
    _write_json(folder / PROCESSOR_FILE, reference.processor.to_processor_json())
    _write_json(folder / PREPROCESSOR_FILE, reference.processor.to_preprocessor_json())
    reference.tokenizer.save(folder)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
