"""Speed unchanged across a change: `jflow-export profile` of one bench-preset artifact under two trees.

    python -m benchmarks.checks.speed_unchanged --baseline REV [--rounds 3] [--runs 5]

REV's code is exported with `git archive` into a temporary folder; each side runs the CLI's `profile` in a
fresh interpreter with its tree first on PYTHONPATH, on the same fp32 bench artifact (fixtures.bench_artifact,
exported by the working tree: the artifact format is the same on both sides), the sides alternating round
by round (which goes first alternates too). Per stage: the median over rounds of each round's p50, and the
ratio working tree / baseline. Run it on quiet cores. Writes results/speed_unchanged.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import RESULTS, ROOT

STAGES = ("decode_token@640", "decode_token@1024", "understanding_prefill", "generation_prefill", "ode_step.llm",
          "ode_step.gen_encoder", "ode_step.gen_decoder", "generation_total", "siglip_encode", "vae_decode")


def archive(rev: str, into: Path) -> Path:
    """REV's jflow package, as git stores it."""
    into.mkdir(parents=True, exist_ok=True)
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "jflow"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True)
    return into


def profile(tree: Path, artifact: Path, runs: int, steps: int, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-m", "jflow.cli", "profile", str(artifact), "--backend", "onnxruntime",
                    "--runs", str(runs), "--warmup", "2", "--steps", str(steps), "--json", str(out)],
                   env=env, cwd=tempfile.gettempdir(), check=True, capture_output=True, timeout=3600)
    return json.loads(out.read_text())


def p50(report: dict, stage: str) -> float | None:
    value = report["stages"].get(stage)
    return None if value is None else float(value["p50_ms"] if isinstance(value, dict) else value)


def machine() -> dict:
    from jflow.runtime.profile_stages import cpu_model
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision before the change")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per stage in each profile")
    parser.add_argument("--steps", type=int, default=4, help="ODE steps of the timed whole generation")
    args = parser.parse_args()
    from benchmarks.fixtures.bench_artifact import bench_artifact
    artifact = bench_artifact("fp32")
    with tempfile.TemporaryDirectory(prefix="jflow-speed-") as tmp:
        sides = {"baseline": archive(args.baseline, Path(tmp) / "base"), "working tree": ROOT}
        seen: dict[str, list[dict]] = {side: [] for side in sides}
        for r in range(args.rounds):
            for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                report = profile(sides[side], artifact, args.runs, args.steps, Path(tmp) / f"{side}-{r}.json")
                seen[side].append(report)
                print(f"round {r + 1}/{args.rounds} {side}: ode_step.llm {p50(report, 'ode_step.llm'):.1f} ms, "
                      f"decode@640 {p50(report, 'decode_token@640'):.2f} ms", flush=True)
    table = {}
    for stage in STAGES:
        medians = {side: [v for v in (p50(rep, stage) for rep in reports) if v is not None]
                   for side, reports in seen.items()}
        if all(medians.values()):
            base, new = (float(np.median(medians[s])) for s in sides)
            table[stage] = {"baseline_ms": round(base, 3), "working_tree_ms": round(new, 3), "ratio": round(new / base, 3)}
    for stage, row in table.items():
        print(f"{stage:24s} {row['baseline_ms']:10.2f} {row['working_tree_ms']:10.2f}  x{row['ratio']:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speed_unchanged.json").write_text(json.dumps({
        "benchmark": "speed_unchanged", "baseline": args.baseline, "rounds": args.rounds, "runs": args.runs,
        "artifact": "bench preset, fp32 (benchmarks/fixtures/bench_artifact.py)", "machine": machine(),
        "stages_p50_median_ms": table}, indent=1))
    print(f"wrote {RESULTS / 'speed_unchanged.json'}")


if __name__ == "__main__":
    main()
