"""The `bench` preset as a reference model and an exported artifact, built once and cached outside the repo.

    python benchmarks/bench_artifact.py [--precision fp32] [--layers 2]

The preset (jflow.modeling.presets.bench_config) has the real widths and vocabulary (LLM 2048 x 5632,
16 heads, 102400 tokens; SigLIP 1024; UViT 768) with few layers, random weights and a full-size
SDXL-shaped VAE: per-layer timings mean something on a 2-core CPU, and a run takes minutes.
Cache: $JFLOW_CACHE/bench (default ~/.cache/jflow/bench).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("JFLOW_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                         os.path.expanduser("~/.cache"), "jflow")
    return Path(base) / "bench"


def bench_reference(layers: int = 2):
    """The bench-preset reference (seeded random weights, the tiny tokenizer, an SDXL-shaped VAE)."""
    import torch
    from diffusers import AutoencoderKL

    from jflow.modeling import JanusFlow, JanusFlowConfig, JanusFlowReference
    from jflow.modeling.presets import bench_config
    from jflow.modeling.tiny import TINY_PROCESSOR, build_tiny_tokenizer
    from jflow.modeling.vae import SDXL_VAE_CONFIG
    from jflow.runtime.tokenizer import JanusFlowTokenizer

    torch.manual_seed(0)
    config = JanusFlowConfig.from_dict(bench_config(layers=layers), source="bench preset")
    with torch.no_grad():
        return JanusFlowReference(model=JanusFlow(config).eval(), processor=TINY_PROCESSOR,
                                  tokenizer=JanusFlowTokenizer(build_tiny_tokenizer(), TINY_PROCESSOR),
                                  vae=AutoencoderKL(**SDXL_VAE_CONFIG).eval())


def bench_artifact(precision: str = "fp32", layers: int = 2, max_context: int = 2048, ref=None, log=print) -> Path:
    """The exported bench artifact (exported on first use; the schema version is part of the folder name,
    so an artifact of an older schema is never picked up)."""
    from jflow.artifact.manifest import SCHEMA_VERSION
    from jflow.artifact.spec import Limits
    from jflow.export.artifact import export_artifact
    folder = cache_dir() / f"bench-{layers}l-{precision}-ctx{max_context}-schema{SCHEMA_VERSION}"
    if (folder / "manifest.json").is_file():
        return folder
    started = time.perf_counter()
    export_artifact(ref or bench_reference(layers), folder, precision=precision, e2e_steps=1, e2e_tokens=4, log=log,
                    limits=Limits(max_context=max_context))
    log(f"exported the bench preset ({precision}, {layers} layers) in {time.perf_counter() - started:.0f}s")
    return folder


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    print(bench_artifact(args.precision, args.layers))
