"""`jflow-export onnx`: a checkpoint -> one folder a device can take and trust.

DIR/onnx/<graph>.onnx (+ .data), DIR/embeddings/*.npy, tokenizer and processor files, config.json,
DIR/reference/*.npz and DIR/manifest.json (contract, precision policy, tool versions, sha256 of every
file). Written to a hidden sibling folder and renamed at the end: an interrupted export leaves no
half artifact under DIR, and the next export to DIR removes what a killed one left.
"""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from jflow.errors import InputError
from jflow.artifact.writer import ArtifactWriter
from jflow.artifact.precision import EXPORTED, TOLERANCES, activation_dtype, policy_table
from jflow.artifact.spec import Limits
from jflow.export import gen_decoder, gen_encoder, llm, llm_ort, reference_io, siglip, vae_decoder
from jflow.fsutil import check_new_dir, staged_dir
from jflow.export.onnx_export import OPSET, export_graph
from jflow.modeling.checkpoint import build_from_state_dict
from jflow.modeling.llm import FP32_SOFTMAX_ATTENTION
from jflow.runtime.prompts import SYSTEM_PROMPT

GRAPHS = {  # name -> (module, wrapper class, wraps the VAE?)
    siglip.NAME: (siglip, siglip.SiglipGraph, False),
    llm.NAME: (llm, llm.LlmGraph, False),
    gen_encoder.NAME: (gen_encoder, gen_encoder.GenEncoderGraph, False),
    gen_decoder.NAME: (gen_decoder, gen_decoder.GenDecoderGraph, False),
    vae_decoder.NAME: (vae_decoder, vae_decoder.VaeDecoderGraph, True),
}
TOOLS = ("torch", "transformers", "diffusers", "onnx", "onnxscript", "onnxruntime", "numpy", "tokenizers")


def export_artifact(ref, out: str | Path, precision: str = "fp32", limits: Limits = Limits(),
                    force: bool = False, e2e_steps: int = 3, e2e_tokens: int = 8,
                    log: Callable[[str], None] = print) -> Path:
    """Export every graph of `ref` (a JanusFlowReference with its VAE) into the artifact folder `out`."""
    out = Path(out)
    if precision not in EXPORTED:
        raise InputError(f"precision must be one of {', '.join(EXPORTED)}, got {precision!r}; int8/int4 artifacts "
                         "come from an fp32 one with `jflow-export quantize`")
    if ref.vae is None:
        raise InputError("the artifact needs the SDXL VAE: load the checkpoint with its vae/ folder")
    config = ref.model.config
    try:
        limits.check(config.num_gen_tokens, int(config.language.get("max_position_embeddings", 4096)))
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    e2e_tokens = min(e2e_tokens, limits.max_new_tokens)
    question = len(ref.tokenizer.understanding_ids(reference_io.E2E_QUESTION))
    if question + e2e_tokens > limits.max_context:
        raise InputError(f"--max-context {limits.max_context} cannot hold an image question: one takes {question} "
                         f"tokens with the template and its {ref.processor.num_image_tokens} image tokens, plus the "
                         f"answer; use --max-context {question + e2e_tokens} or more")
    # Its source checkpoint is never replaced, nor (with --force) anything jflow did not write.
    sources = [ref.path]
    check_new_dir(out, "the artifact folder", replace=force, sources=sources)
    # A hidden .NAME.partial-* sibling, renamed at the end; a concurrent export that published first
    # is never replaced without --force.
    with staged_dir(out, replace=force, kind="artifact", sources=sources) as tmp:
        _write(ref, tmp, precision, limits, e2e_steps, e2e_tokens, log)
    return out


def _write(ref, root: Path, precision: str, limits: Limits, e2e_steps: int, e2e_tokens: int, log) -> None:
    config = ref.model.config
    (root / "onnx").mkdir()
    (root / "reference").mkdir()
    # The end-to-end cases first: their real tensors are the per-graph reference inputs.
    step = reference_io.generation_case(ref, root / "reference" / "e2e_generation.npz", e2e_steps)
    pixels = reference_io.understanding_case(ref, root / "reference" / "e2e_understanding.npz", e2e_tokens)
    examples = reference_io.real_examples(step, pixels, llm.kv_geometry(config)[0])
    del step
    graphs = {}
    half = None
    if precision == "fp16":  # traced from an fp16 copy: the precision lives in the graph
        # Converted tensor by tensor through the strict loader: no second fp32 copy (~8 GB at full size).
        half = build_from_state_dict(config, {k: v.half() for k, v in ref.model.state_dict().items()},
                                     source="the fp16 copy")
        half.language_model.set_attn_implementation(FP32_SOFTMAX_ATTENTION)
    for name, (module, wrapper, wraps_vae) in GRAPHS.items():
        started = time.perf_counter()
        act = activation_dtype(name, precision)
        truth = wrapper(ref.vae if wraps_vae else ref.model)
        graph = wrapper(half) if act == "float16" else truth
        if wraps_vae:
            half = None  # the VAE is last and fp32: free the fp16 copy (~4 GB at full size) first
        spec = module.spec(config, limits, act)
        path = root / "onnx" / f"{name}.onnx"
        export_graph(graph, spec, _as_contract(module.example(config, torch.Generator().manual_seed(0)), spec), path)
        reference_io.graph_reference(truth, spec, _as_contract(examples.pop(name), spec),
                                     root / "reference" / f"{name}.npz", float64=wraps_vae,
                                     keep=reference_io.kept_outputs(name, llm.kv_geometry(config)[0]))
        graphs[name] = {**spec.to_manifest(f"onnx/{name}.onnx"), "precision": "fp16" if act == "float16" else "fp32"}
        log(f"  {name:<12} exported in {time.perf_counter() - started:5.1f}s")
        if name == llm.NAME:  # the ONNX Runtime form, over the same weight bytes
            started = time.perf_counter()
            llm_ort.export(graph.lm, config, limits, act, path, root / "onnx" / f"{llm_ort.NAME}.onnx")
            graphs[llm_ort.NAME] = {**llm_ort.spec(config, limits, act).to_manifest(f"onnx/{llm_ort.NAME}.onnx"),
                                    "precision": graphs[name]["precision"], "form_of": llm.NAME}
            log(f"  {llm_ort.NAME:<12} written in {time.perf_counter() - started:5.1f}s (weights shared with llm)")
    _write_host_files(ref, root, precision)
    ArtifactWriter(root).create({
        "precision": precision, "precision_policy": policy_table(), "tolerances": TOLERANCES,
        "model": config.to_dict(), "limits": limits.to_dict(), "graphs": graphs, "opset": OPSET,
        "reference": {"graphs": {n: f"reference/{n}.npz" for n in GRAPHS},
                      "end_to_end": {"generation": "reference/e2e_generation.npz",
                                     "understanding": "reference/e2e_understanding.npz"}},
        "embeddings": {"embed_tokens": "embeddings/embed_tokens.npy",
                       "beg_of_und_embed": "embeddings/beg_of_und_embed.npy"},
        "special_tokens": ref.tokenizer.special_ids(), "processor": ref.processor.to_dict(),
        "prompts": {"system_prompt": SYSTEM_PROMPT, "format": "deepseek_sft"},
        "generation": {"latent_size": config.latent_size, "num_gen_tokens": config.num_gen_tokens,
                       "vae_scaling_factor": float(ref.vae.config.scaling_factor)},
        "tools": _tool_versions(),
    })


def _write_host_files(ref, root: Path, precision: str) -> None:
    """What the runtime needs besides the graphs: tokenizer, processor and model config, embeddings."""
    from jflow.modeling.checkpoint import write_host_configs
    write_host_configs(ref, root)
    (root / "embeddings").mkdir()
    dtype = np.float16 if precision == "fp16" else np.float32
    with torch.no_grad():
        table = ref.model.language_model.get_input_embeddings().weight.float().numpy()
        np.save(root / "embeddings" / "embed_tokens.npy", table.astype(dtype))
        np.save(root / "embeddings" / "beg_of_und_embed.npy", ref.model.beg_of_und_embed.float().numpy().astype(dtype))


def _as_contract(example: dict, spec) -> dict:
    """Example tensors in the dtypes the graph's contract declares."""
    return {t.name: example[t.name].to(getattr(torch, t.dtype)) for t in spec.inputs}


def _tool_versions() -> dict:
    found = {}
    for name in TOOLS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found

