"""jflow's benchmarks: scripts, not tests. Each runs from the repository root as a module,
`python -m benchmarks.<folder>.<script> --help`, and writes its numbers to results/ (see README.md).

- fixtures/: what the measurements run on (the bench-preset artifact, the real-weights checkpoint, the
  ONNX Runtime GenAI peer's builds), built once and cached outside the repository.
- speed/: latency against baselines and peers; memory/: peak host memory of export, generation, quantize;
  serving/: the HTTP server under load and in a browser; quantization/: accuracy studies on real weights;
  checks/: behaviour unchanged across a change (seeded images and tokens).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT / "benchmarks" / "data"


def worker_result(command: list[str], timeout: float, **run) -> object:
    """Run `command` (a measurement in a fresh interpreter) and return the JSON on its last stdout line, or
    raise with the end of its stderr."""
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **run)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
