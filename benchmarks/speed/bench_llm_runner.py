"""The LLM runner on the bench preset: decode vs context length, the ODE step before and after the fused
in-place form, and both under contention for the cores.

    python -m benchmarks.speed.bench_llm_runner --baseline TREE [--rounds 5]

TREE is a checkout of the code before the runner (commit ff569bb: concat KV, unfused attention); its
side runs from there, on an artifact that code exported. Every measurement runs in a fresh subprocess
and the sides alternate round by round; medians are reported with their ratio. Under contention a
second process keeps one of the cores busy. Writes benchmarks/results/bench_llm_runner.json.

A worker runs this file by its path with the measured tree first on PYTHONPATH (the baseline checkout
has neither this file nor this package layout), so the module level imports the standard library and
numpy only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROMPT = "a red cube on a wooden table, studio light"


def ode_steps(artifact: str, steps: int, spin: bool | None) -> list[float]:
    """Milliseconds of each ODE step after the first (which also makes the loop's buffers)."""
    from jflow.runtime.pipeline import Pipeline
    pipe = Pipeline.load(artifact, check_files=False, **({} if spin is None else {"spin": spin}))
    pipe.generate_latents(PROMPT, steps=1, seed=0)  # sessions made, weights paged in
    marks = [time.perf_counter()]
    pipe.generate_latents(PROMPT, steps=steps, seed=0, progress=lambda k, n: marks.append(time.perf_counter()))
    return [round(d * 1e3, 1) for d in np.diff(marks)[1:]]


def decode(artifact: str, contexts: list[int], tokens: int, spin: bool | None, form: str | None) -> dict:
    """Milliseconds per decode step on caches claiming `context` tokens (their cost is attention over
    that many positions, not their values), for each context."""
    from jflow.runtime.llm_runner import llm_runner
    from jflow.runtime.pipeline import Pipeline
    pipe = Pipeline.load(artifact, check_files=False, **({} if spin is None else {"spin": spin}))
    llm = llm_runner(pipe.backend, pipe.manifest, form)
    token = pipe.embed([[1]])
    out = {}
    for context in contexts:
        cache = llm.new_cache(1, context + tokens + 2)
        cache.claim(context)
        llm.decode_one(cache, token)
        times = []
        for _ in range(tokens):
            start = time.perf_counter()
            pipe.backend.download(llm.decode_one(cache, token))
            times.append((time.perf_counter() - start) * 1e3)
        out[str(context)] = round(float(np.median(times)), 2)
    return out


def _worker(tree: str, job: dict) -> object:
    """One measurement in a fresh interpreter that imports jflow from `tree`."""
    from benchmarks import worker_result
    return worker_result([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)], timeout=3600,
                         cwd=tree, env={**os.environ, "PYTHONPATH": tree})


def _hog():
    """A second process that keeps one core busy."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=False, help="checkout of the code before the runner (ff569bb)")
    parser.add_argument("--baseline-artifact", default=None, help="bench artifact exported by that code")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        kind = job.pop("kind")
        print(json.dumps(ode_steps(**job) if kind == "ode" else decode(**job)))
        return

    from benchmarks import RESULTS, ROOT
    from benchmarks.fixtures.bench_artifact import bench_artifact, cache_dir
    from jflow.runtime.profile_stages import cpu_model
    ours, tree = str(bench_artifact()), str(ROOT)
    baseline = args.baseline_artifact or str(cache_dir() / "bench-2l-fp32-baseline-ff569bb")
    results = {"machine": {"cpu_model": cpu_model(), "cores": os.cpu_count()}, "preset": "bench (2 LLM layers)",
               "rounds": args.rounds}

    # 1. Decode per token vs context: the fused in-place form, and the portable concat form for reference.
    contexts = [64, 1024]
    runs = {"fused": [], "portable": []}
    for _ in range(args.rounds):
        for form in runs:
            runs[form].append(_worker(tree, {"kind": "decode", "artifact": ours, "contexts": contexts, "tokens": 8,
                                             "spin": None, "form": "llm_ort" if form == "fused" else "llm"}))
    results["decode_ms"] = {form: {c: float(np.median([r[str(c)] for r in rs])) for c in contexts}
                            for form, rs in runs.items()}
    for form, row in results["decode_ms"].items():
        row["ratio_1024_over_64"] = row[1024] / row[64]
        print(f"decode ({form}): @64 {row[64]:.1f} ms, @1024 {row[1024]:.1f} ms, x{row['ratio_1024_over_64']:.2f}")

    # 2. The ODE step, before and after; then the same with one core taken by another process.
    sides = {"after (spin)": (tree, ours, None), "after (--no-spin)": (tree, ours, False)}
    if args.baseline:
        sides["before"] = (args.baseline, baseline, None)
    for contention in (False, True):
        steps = {side: [] for side in sides}
        for _ in range(args.rounds):
            for side, (where, artifact, spin) in sides.items():
                hog = _hog() if contention else None
                try:
                    steps[side] += _worker(where, {"kind": "ode", "artifact": artifact, "steps": args.steps,
                                                   "spin": spin})
                finally:
                    if hog:
                        hog.kill()
        key = "ode_step_ms_contended" if contention else "ode_step_ms"
        results[key] = {side: float(np.median(v)) for side, v in steps.items()}
        print(key, {k: round(v) for k, v in results[key].items()}, flush=True)
        if "before" in sides:
            results[key]["speedup_after_over_before"] = results[key]["before"] / results[key]["after (spin)"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_llm_runner.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS / 'bench_llm_runner.json'}")


if __name__ == "__main__":
    main()
