"""`verify` on artifacts of the real-weights checkpoint (fixtures/real_checkpoint.py: SmolLM2-135M as the LLM).

    python -m benchmarks.quantization.verify_real [--precisions fp32,fp16]

A trained LLM sees embeddings of std ~0.1, not unit noise, so tolerances judged on tiny random models
say little about it. This exports the real-weights checkpoint (once, cached), runs `verify` on each
precision and writes, per graph, the worst rel-L2 / lowest cosine and the verdict to
benchmarks/results/verify_real.json.
"""

from __future__ import annotations

import argparse
import json

from benchmarks import RESULTS


def summary(report) -> dict:
    graphs: dict[str, dict] = {}
    for row in report.rows:
        g = graphs.setdefault(row.graph, {"outputs": 0, "passed": 0, "worst_rel_l2": 0.0, "lowest_cosine": 1.0})
        g["outputs"] += 1
        g["passed"] += row.passed
        if row.rel_l2 is not None:
            g["worst_rel_l2"] = max(g["worst_rel_l2"], row.rel_l2)
            g["lowest_cosine"] = min(g["lowest_cosine"], row.cosine)
        if row.note:
            g["note"] = row.note
    return {"ok": report.ok, "passed": report.passed, "failed": report.failed, "graphs": graphs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precisions", default="fp32,fp16")
    args = parser.parse_args()
    from benchmarks.fixtures.real_checkpoint import real_artifact
    from jflow.runtime.profile_stages import cpu_model
    from jflow.runtime.verify import format_table, verify_artifact
    results = {"machine": {"cpu_model": cpu_model()},
               "weights": "SmolLM2-135M-Instruct LLM (trained), seeded random vision and generation parts"}
    for precision in args.precisions.split(","):
        report = verify_artifact(real_artifact(precision))
        print(format_table(report).splitlines()[-1], f"({precision})", flush=True)
        results[precision] = summary(report)
    path = RESULTS / "verify_real.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
