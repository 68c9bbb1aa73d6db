"""Peak host memory of a full-size JanusFlow-1.3B ONNX export (random weights, the real shapes).

    python -m benchmarks.memory.export_memory [--precision fp32] [--out DIR] [--keep]

Builds the 1.3B model and an SDXL-shaped VAE with random weights in memory (no download), runs the
same `export_artifact` as `jflow-export onnx`, and records the peak RSS after each step (getrusage
ru_maxrss, which only grows) in benchmarks/results/export_memory_<precision>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import RESULTS


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    parser.add_argument("--out", default=None, help="artifact folder (default: a temporary one, deleted)")
    parser.add_argument("--e2e-steps", type=int, default=1, help="ODE steps of the shipped end-to-end case")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    from diffusers import AutoencoderKL

    from jflow.export.artifact import export_artifact
    from jflow.modeling import JanusFlow, JanusFlowConfig, JanusFlowReference
    from jflow.modeling.presets import janusflow_1_3b_config
    from jflow.modeling.tiny import TINY_PROCESSOR, build_tiny_tokenizer
    from jflow.modeling.vae import SDXL_VAE_CONFIG
    from jflow.runtime.profile_stages import cpu_model
    from jflow.runtime.tokenizer import JanusFlowTokenizer

    steps: list[dict] = []

    def mark(step: str, started: float) -> None:
        steps.append({"step": step, "seconds": round(time.perf_counter() - started, 1),
                      "peak_rss_gib": round(peak_rss_gib(), 2)})
        print(f"{step:<28} {steps[-1]['seconds']:7.1f}s  peak RSS {steps[-1]['peak_rss_gib']:.2f} GiB", flush=True)

    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.no_grad():
        model = JanusFlow(JanusFlowConfig.from_dict(janusflow_1_3b_config())).eval()
        vae = AutoencoderKL(**SDXL_VAE_CONFIG).eval()
    params = sum(p.numel() for p in model.parameters())
    # The tiny tokenizer suffices: the export only needs its special ids (all < 102400).
    ref = JanusFlowReference(model=model, tokenizer=JanusFlowTokenizer(build_tiny_tokenizer(), TINY_PROCESSOR),
                             processor=TINY_PROCESSOR, vae=vae)
    mark("build 1.3B model + VAE", t0)

    parent = Path(args.out).parent if args.out else Path(tempfile.mkdtemp(prefix="jflow-bench-"))
    out = Path(args.out) if args.out else parent / "janusflow-1.3b"
    t1 = time.perf_counter()
    export_artifact(ref, out, precision=args.precision, force=True, e2e_steps=args.e2e_steps,
                    log=lambda line: mark(line.strip().split()[0], t1))
    mark("whole export", t1)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())

    result = {
        "benchmark": "export_memory", "precision": args.precision, "parameters": params,
        "artifact_gib": round(size / 2**30, 2), "peak_rss_gib": round(peak_rss_gib(), 2),
        "limit_gib": 24, "steps": steps, "e2e_steps": args.e2e_steps,
        "machine": {"cpu_model": cpu_model(), "cpu_count": __import__("os").cpu_count(), "python": sys.version.split()[0],
                    "platform": platform.platform(), "torch": torch.__version__},
    }
    results = RESULTS / f"export_memory_{args.precision}.json"
    results.write_text(json.dumps(result, indent=2) + "\n")
    print(f"peak RSS {result['peak_rss_gib']} GiB for {params / 1e9:.3f} B parameters; artifact "
          f"{result['artifact_gib']} GiB; wrote {results}")
    if not args.keep and not args.out:
        shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    main()
