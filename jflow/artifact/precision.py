"""Precision policy of the exported graphs: one readable table, copied into the manifest.

An fp16 artifact is strongly typed: the graphs are traced from an fp16 copy of the model, so the
precision lives in the graph itself, and the fp32 islands are casts written in the model code:
- RMSNorm statistics (transformers LlamaRMSNorm upcasts), LayerNorm (ONNX stash_type fp32),
- attention softmax (eager Llama attention and our SigLIP attention upcast in half precision),
- the GRN spatial L2 norm (uvit_blocks.GlobalResponseNorm), the sinusoidal time features (diffusers
  computes them in fp32), RoPE angles (transformers computes them in fp32),
- the ODE state z, guidance and the Euler update (gen_encoder / gen_decoder take and give fp32 z),
- the whole SDXL VAE decoder, which is exported from the fp32 VAE.
"""

from __future__ import annotations

PRECISIONS = ("fp32", "fp16", "int8", "int4")
EXPORTED = ("fp32", "fp16")   # what `jflow-export onnx` writes
QUANTIZED = ("int8", "int4")  # what `jflow-export quantize` writes from an fp32 artifact
FP32_GRAPHS = ("vae_decoder",)  # in every artifact

POLICY = (
    ("matmuls, convolutions, attention scores, KV cache, embeddings", "fp16", "speed and memory"),
    ("RMSNorm / LayerNorm statistics, attention softmax", "fp32", "overflow and precision"),
    ("GRN spatial L2 norm (ConvNeXt blocks)", "fp32", "the sum of squares over 576 positions overflows fp16"),
    ("sinusoidal time features, RoPE angles", "fp32", "arguments up to ~1000 rad (time) and ~4096 rad (RoPE)"),
    ("SDXL VAE decoder (whole graph)", "fp32", "the SDXL VAE produces NaN in fp16"),
    ("ODE state z, guidance and Euler update", "fp32", "30 accumulated steps"),
)


def policy_table() -> list[dict]:
    return [{"part": part, "fp16_build": dtype, "why": why} for part, dtype, why in POLICY]


def activation_dtype(graph: str, precision: str) -> str:
    """The dtype of a graph's model-side tensors (embeddings, hidden states, KV) in this precision."""
    return "float16" if precision == "fp16" and graph not in FP32_GRAPHS else "float32"


# `verify` pass thresholds per graph precision, for floating-point outputs (integer outputs must match
# exactly). A row passes when rel_l2 = ||ours - ref|| / ||ref|| <= rel_l2, cosine >= cosine, and ours
# holds no NaN/Inf. Written into the manifest at export, so an artifact states its own bounds.
# fp32: ONNX vs PyTorch differ only by kernel order and fusion (~1e-6 relative); 1e-4 leaves room for
#       long reductions (the 24-layer LLM, the VAE) while catching any real graph error.
# fp16: one fp16 rounding is ~5e-4 relative; after 24 layers a few 1e-3 is normal; 2e-2 is the bound a
#       correct fp16 build stays under (the fp32 islands of the policy keep it there).
# int8 / int4: loose bounds that catch a broken quantization (a wrong scale, a quantized norm). A model
#       that quantizes worse than them gets its own measured bounds in the manifest (quantize._measure).
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"rel_l2": 1e-4, "cosine": 0.99999},
    "fp16": {"rel_l2": 2e-2, "cosine": 0.999},
    "int8": {"rel_l2": 1e-1, "cosine": 0.99},
    "int4": {"rel_l2": 1.5e-1, "cosine": 0.98},
}
