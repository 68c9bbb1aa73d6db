"""Peak host memory of one full-size 30-step generation, before and after the in-place KV cache.

    python -m benchmarks.memory.export_memory --out A --keep               # this tree's full-size artifact
    (cd BASELINE && python benchmarks/export_memory.py --out B --keep)   # the baseline's (ff569bb)
    python -m benchmarks.memory.generation_memory --artifact A --baseline BASELINE --baseline-artifact B [--steps 30]

Each side runs `Pipeline.load(...).generate(...)` in a fresh process (ONNX Runtime, CPU) and reports
its peak RSS (getrusage ru_maxrss), the time per ODE step and the whole generation. The baseline made a
present-KV copy of the whole prompt + 577 tokens x 24 layers in every step; the runner writes the step's
tokens into a cache allocated once. Writes benchmarks/results/generation_memory.json.

A worker runs this file by its path with the measured tree first on PYTHONPATH (the baseline checkout
has neither this file nor this package layout), so the module level imports the standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

PROMPT = "a watercolor painting of a lighthouse on a cliff at sunset"


def generate(artifact: str, steps: int) -> dict:
    import numpy as np

    from jflow.runtime.pipeline import Pipeline
    started = time.perf_counter()
    pipe = Pipeline.load(artifact, check_files=False)
    loaded = time.perf_counter()
    marks = [loaded]
    latents = pipe.generate_latents(PROMPT, steps=steps, seed=0, progress=lambda k, n: marks.append(time.perf_counter()))
    image = pipe.decode_latents(latents)
    done = time.perf_counter()
    return {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "load_s": round(loaded - started, 1), "generation_s": round(done - loaded, 1),
            "ode_step_s_median": round(float(np.median(np.diff(marks))), 2), "image_shape": list(image.shape)}


def _run(tree: str, artifact: str, steps: int) -> dict:
    """One generation in a fresh interpreter that imports jflow from `tree`."""
    from benchmarks import worker_result
    return worker_result([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps([artifact, steps])],
                         timeout=6 * 3600, cwd=tree, env={**os.environ, "PYTHONPATH": tree})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact")
    parser.add_argument("--baseline")
    parser.add_argument("--baseline-artifact")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(generate(*json.loads(args.worker))))
        return
    from benchmarks import RESULTS, ROOT
    from jflow.runtime.profile_stages import cpu_model
    result = {"machine": {"cpu_model": cpu_model(), "cores": os.cpu_count()}, "steps": args.steps,
              "model": "JanusFlow-1.3B shapes, random weights, fp32 artifact", "prompt": PROMPT}
    result["after"] = _run(str(ROOT), args.artifact, args.steps)
    print("after", result["after"], flush=True)
    if args.baseline:
        result["before"] = _run(args.baseline, args.baseline_artifact, args.steps)
        print("before", result["before"], flush=True)
        result["peak_rss_saved_gib"] = round(result["before"]["peak_rss_gib"] - result["after"]["peak_rss_gib"], 2)
    path = RESULTS / "generation_memory.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
