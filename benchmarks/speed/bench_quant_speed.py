"""Speed and size of the int8 and int4 artifacts against fp32 on the bench preset (ONNX Runtime, CPU).

    python -m benchmarks.speed.bench_quant_speed [--rounds 3]

Quantizes the cached bench artifact (fixtures/bench_artifact.py) with `quantize_artifact` and RECIPE (the
shipped recipe with a small calibration set: speed does not depend on it), then times, each in a fresh
subprocess and alternating artifacts round by round: one ODE step, decode per token at context 64 and
1024, the understanding prefill and SigLIP. Also reports the artifacts' sizes and the int4 decode's
bandwidth floor (LLM weight bytes read per token / measured copy bandwidth). Writes
benchmarks/results/bench_quant_speed.json.
Targets (issue 11): int4 decode >= 4x faster than fp32; int8 ODE step >= 1.6x faster than fp32; (issue 21)
int8 ODE step >= 2.0x and decode >= 3x faster than fp32.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import RESULTS, ROOT, worker_result
from jflow.calibration.recipe import QuantRecipe

# The shipped recipe with a small calibration set (speed does not depend on it); each precision replaces int8.
RECIPE = QuantRecipe("int8", samples=2, steps=6)
# The shipped recipes and the ones they replaced: int8's ORT LLM form split (the default), block-wise (MatMulNBits
# 8-bit) or static W8A8 QDQ; int4 with the measured int8 GEMMs (1.3x bytes) or plain.
VARIANTS = {"int8-static": {"ort_int8": "static"}, "int8": {"ort_int8": "blockwise"}, "int8-split": {},
            "int4": {"precision": "int4"}, "int4-plain": {"precision": "int4", "int8_budget": 1.0}}


def stages(artifact: str) -> dict:
    """Milliseconds of SigLIP and the understanding prefill (median of 3 after a warm-up)."""
    from jflow.runtime.pipeline import Pipeline
    pipe = Pipeline.load(artifact, check_files=False)
    photo = np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8)

    def median(fn):
        fn()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return round(float(np.median(times)) * 1e3, 1)
    rows, _ = pipe.understanding_rows([photo], ["What is in this picture?"])
    llm = pipe.llm
    pixels = pipe.backend.upload(np.zeros((1, 3, 384, 384), np.float32))
    return {"siglip": median(lambda: pipe.runner("siglip").infer({"pixel_values": pixels}, ["image_embeds"])),
            "understanding_prefill": median(lambda: llm.prefill(llm.new_cache(1, len(rows[0])), rows))}


def _worker(job: dict) -> dict:
    return worker_result([sys.executable, "-m", __spec__.name, "--worker", json.dumps(job)], timeout=3600, cwd=ROOT)


def llm_weight_bytes(artifact: Path) -> int:
    """Bytes of the LLM's weights a decode step reads (its data file; the ORT form shares them)."""
    return (artifact / "onnx" / "llm.onnx.data").stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=None, help="comma-separated variants to measure (with fp32, in one run); "
                                                     "their rows replace those in the results file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        from benchmarks.speed.bench_llm_runner import decode, ode_steps
        job = json.loads(args.worker)
        kind, artifact = job["kind"], job["artifact"]
        result = (ode_steps(artifact, 4, None) if kind == "ode" else
                  decode(artifact, [64, 1024], 8, None, None) if kind == "decode" else stages(artifact))
        print(json.dumps(result))
        return

    from benchmarks.fixtures.bench_artifact import bench_artifact
    from benchmarks.speed.bench_vs_pytorch import copy_bandwidth
    from jflow.calibration.quantize import quantize_artifact
    from jflow.runtime.profile_stages import cpu_model
    fp32 = bench_artifact()
    artifacts = {"fp32": fp32}
    chosen = args.only.split(",") if args.only else list(VARIANTS)
    for name, settings in {n: VARIANTS[n] for n in chosen}.items():
        out = fp32.parent / f"{fp32.name}-{name}"
        quantize_artifact(fp32, out, QuantRecipe.of(RECIPE, **settings), force=True)  # today's code, every run
        artifacts[name] = out
    results = {"machine": {"cpu_model": cpu_model()}, "preset": "bench (2 LLM layers, real widths and vocabulary)",
               "rounds": args.rounds, "sizes_gib": {}, "stages": {}}
    runs = {name: {"ode": [], "decode": [], "stages": []} for name in artifacts}
    for _ in range(args.rounds):
        for kind in ("ode", "decode", "stages"):
            for name, path in artifacts.items():
                runs[name][kind].append(_worker({"kind": kind, "artifact": str(path)}))
    for name, r in runs.items():
        row = {"ode_step_ms": float(np.median([t for rr in r["ode"] for t in rr]))}
        for context in ("64", "1024"):
            row[f"decode_ms@{context}"] = float(np.median([rr[context] for rr in r["decode"]]))
        for stage in ("siglip", "understanding_prefill"):
            row[f"{stage}_ms"] = float(np.median([rr[stage] for rr in r["stages"]]))
        results["stages"][name] = row
        results["sizes_gib"][name] = round(sum(p.stat().st_size for p in Path(artifacts[name]).rglob("*")
                                               if p.is_file()) / 2**30, 3)
        print(name, {k: round(v, 1) for k, v in row.items()}, flush=True)
    base = results["stages"]["fp32"]
    results["speedups_vs_fp32"] = {name: {k: round(base[k] / v, 2) for k, v in row.items()}
                                   for name, row in results["stages"].items() if name != "fp32"}
    bandwidth = copy_bandwidth()
    results["bandwidth_gb_s"] = round(bandwidth / 1e9, 1)
    if "int4" in artifacts:
        results["int4_decode_floor_ms"] = round(llm_weight_bytes(artifacts["int4"]) / bandwidth * 1e3, 2)
    results["fp32_decode_floor_ms"] = round(llm_weight_bytes(fp32) / bandwidth * 1e3, 2)
    print(json.dumps(results["speedups_vs_fp32"], indent=1), "floors (ms):", results["fp32_decode_floor_ms"],
          results.get("int4_decode_floor_ms"))
    path = RESULTS / "bench_quant_speed.json"
    if args.only and path.is_file():  # the other variants' rows stay, each with the fp32 of its own run
        earlier = json.loads(path.read_text())
        for key in ("stages", "speedups_vs_fp32", "sizes_gib"):
            earlier.setdefault(key, {}).update({f"{k} (run of {args.only})" if k == "fp32" else k: v
                                                for k, v in results[key].items()})
        results = earlier
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
