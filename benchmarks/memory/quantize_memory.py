"""Peak host memory and wall time of `jflow-export quantize` on the full-size JanusFlow-1.3B (random weights).

    python -m benchmarks.memory.export_memory --precision fp32 --keep --out /data/fp32   # the fp32 one (8 GiB)
    python -m benchmarks.memory.quantize_memory /data/fp32 --precision int8 [--samples 1 --steps 4] [--out DIR]

Runs the same `quantize_artifact` as `jflow-export quantize` (the shipped recipe with --samples and --steps;
a fresh calibration cache unless --cache) and records, at each of its log lines, the peak RSS so far
(getrusage ru_maxrss, which only grows), the highest RSS since the previous line (sampled every 0.2 s), the
RSS at that moment and the elapsed time. Phases: calibration (the fp32 runtime's generations and
questions), each graph, verify. Results: benchmarks/results/quantize_memory_<precision>_s<samples>x<steps>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from benchmarks import RESULTS


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def rss_gib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 2**20


class RssSampler:
    """The highest RSS since the last `take`, sampled every 0.2 s by a thread (ru_maxrss only grows, so it
    cannot tell a later phase's peak once an earlier phase went higher)."""

    def __init__(self, every: float = 0.2):
        import threading
        self.high, self.lock = 0.0, threading.Lock()
        threading.Thread(target=self._run, args=(every,), daemon=True).start()

    def _run(self, every: float) -> None:
        while True:
            with self.lock:
                self.high = max(self.high, rss_gib())
            time.sleep(every)

    def take(self) -> float:
        with self.lock:
            high, self.high = max(self.high, rss_gib()), rss_gib()
        return high


def machine() -> dict:
    from jflow.runtime.profile_stages import cpu_model
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:")) / 2**20
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "memory_gib": round(total, 1),
            "python": sys.version.split()[0], "platform": platform.platform(),
            "onnxruntime": version("onnxruntime"), "onnx": version("onnx"), "numpy": version("numpy")}


def main() -> None:
    from jflow.calibration.recipe import QuantRecipe  # (jflow.cli reads these defaults too)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", help="the fp32 artifact (benchmarks.memory.export_memory --keep --out DIR)")
    parser.add_argument("--precision", default="int8", choices=["int8", "int4"])
    parser.add_argument("--samples", type=int, default=QuantRecipe.samples)
    parser.add_argument("--steps", type=int, default=QuantRecipe.steps)
    parser.add_argument("--out", default=None, help="quantized artifact folder (default: a temporary one, deleted)")
    parser.add_argument("--cache", default=None, help="calibration cache folder (default: a fresh temporary one)")
    parser.add_argument("--note", default="", help="recorded with the results (e.g. what else ran on the host)")
    args = parser.parse_args()

    from jflow.artifact.manifest import Manifest
    from jflow.calibration.quantize import quantize_artifact

    scratch = Path(tempfile.mkdtemp(prefix="jflow-quant-bench-", dir=Path(args.out).parent if args.out else None))
    out = Path(args.out) if args.out else scratch / f"janusflow-1.3b-{args.precision}"
    cache = Path(args.cache) if args.cache else scratch / "calibration"
    steps: list[dict] = []
    started = time.perf_counter()
    last = [started]
    sampler = RssSampler()

    def mark(line: str) -> None:
        now = time.perf_counter()
        steps.append({"line": line.strip(), "seconds": round(now - started, 1), "since_last_s": round(now - last[0], 1),
                      "peak_rss_gib": round(peak_rss_gib(), 2), "rss_gib": round(rss_gib(), 2),
                      "max_rss_since_last_gib": round(sampler.take(), 2)})
        last[0] = now
        print(f"{steps[-1]['seconds']:7.1f}s  peak {steps[-1]['peak_rss_gib']:5.2f} GiB  max since last "
              f"{steps[-1]['max_rss_since_last_gib']:5.2f} GiB  now {steps[-1]['rss_gib']:5.2f} GiB  {line.strip()}",
              flush=True)

    m = Manifest.load(args.artifact)
    size = sum(m.path(rel).stat().st_size for rel in m.files)
    mark(f"start ({args.precision}, {args.samples} samples x {args.steps} steps)")
    recipe = QuantRecipe(args.precision, samples=args.samples, steps=args.steps)
    quantize_artifact(args.artifact, out, recipe, cache=cache, log=mark)
    phases = _phases(steps)
    q = Manifest.load(out)
    result = {
        "benchmark": "quantize_memory", "precision": args.precision, "samples": args.samples, "steps": args.steps,
        "source": {"model": "JanusFlow-1.3B shapes, random weights (benchmarks/memory/export_memory.py)",
                   "artifact_gib": round(size / 2**30, 2),
                   "llm_weights_gib": round(m.path(f"{m.graph('llm')['file']}.data").stat().st_size / 2**30, 2)},
        "quantized_gib": round(sum(q.path(rel).stat().st_size for rel in q.files) / 2**30, 2),
        "peak_rss_gib": round(peak_rss_gib(), 2), "limit_gib": 12, "seconds": round(time.perf_counter() - started, 1),
        "phases": phases, "log": steps, "measured": q.data["quantization"]["measured"],
        "machine": machine(), "note": args.note,
    }
    results = RESULTS / f"quantize_memory_{args.precision}_s{args.samples}x{args.steps}.json"
    results.write_text(json.dumps(result, indent=2) + "\n")
    print(f"peak RSS {result['peak_rss_gib']} GiB in {result['seconds']:.0f}s; wrote {results}")
    if not args.out:
        shutil.rmtree(scratch, ignore_errors=True)
    elif not args.cache:
        shutil.rmtree(cache, ignore_errors=True)


def _phases(steps: list[dict]) -> list[dict]:
    """The lines that end a phase ("... in 12.3s"): calibration, each graph, verify."""
    phases = []
    for step in steps:
        words = step["line"].split()
        if len(words) > 2 and words[-2] == "in" and words[-1].endswith("s") and words[0] != "wrote":
            name = {"calibration": "calibration", "verified": "verify"}.get(words[0], words[0])
            phases.append({"phase": name, "seconds": float(words[-1][:-1]), "peak_rss_gib": step["peak_rss_gib"],
                           "max_rss_in_phase_gib": round(max(s.get("max_rss_since_last_gib", 0) for s in steps[
                               _start(steps, step):steps.index(step) + 1]), 2), "rss_after_gib": step["rss_gib"]})
    return phases


def _start(steps: list[dict], end: dict) -> int:
    """The index of the first line of the phase `end` closes (after the previous phase's closing line)."""
    index = steps.index(end)
    for i in range(index - 1, -1, -1):
        words = steps[i]["line"].split()
        if len(words) > 2 and words[-2] == "in" and words[-1].endswith("s"):
            return i + 1
    return 0


if __name__ == "__main__":
    main()
