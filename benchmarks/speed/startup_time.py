"""Start-up of the runtime on a (full-size) artifact: every file re-hashed vs the verified stamp.

    python -m benchmarks.speed.startup_time ARTIFACT [--rounds 3]

Before the verified stamp, every `generate`/`chat`/`profile` start hashed the whole artifact (gigabytes).
Now the first load hashes everything and stamps it; later loads re-hash only files whose size, mtime or
inode changed. Each load runs in a fresh process; `--check-files full` is the old behaviour. With the
page cache dropped (needs root), the full hash also pays for reading the files from disk, as a device's
first start after boot does. Writes benchmarks/results/startup_time.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks import RESULTS


def load_seconds(artifact: str, check: str) -> float:
    code = ("import time, sys; t = time.perf_counter(); from jflow.runtime.pipeline import Pipeline; "
            f"Pipeline.load({artifact!r}, check_files={check!r}); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return float(out.stdout.strip().splitlines()[-1])


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from jflow.artifact.manifest import Manifest
    from jflow.runtime.profile_stages import cpu_model
    m = Manifest.load(args.artifact, check_files="none")
    size = sum((Path(args.artifact) / rel).stat().st_size for rel in m.files)
    load_seconds(args.artifact, "full")  # stamps it (and warms the page cache)
    warm = {"full": [], "stamp": []}
    for _ in range(args.rounds):
        for check in warm:
            warm[check].append(load_seconds(args.artifact, check))
    cold = {}
    if drop_page_cache():
        for check in ("full", "stamp"):
            drop_page_cache()
            cold[check] = load_seconds(args.artifact, check)
    result = {"machine": {"cpu_model": cpu_model()}, "artifact": args.artifact, "precision": m.precision,
              "files": len(m.files), "bytes": size,
              "load_s_warm": {k: round(float(np.median(v)), 3) for k, v in warm.items()},
              "load_s_cold_page_cache": {k: round(v, 3) for k, v in cold.items()} or "not measured (no root)"}
    result["speedup_warm"] = round(result["load_s_warm"]["full"] / result["load_s_warm"]["stamp"], 1)
    print(json.dumps(result, indent=2))
    (RESULTS / "startup_time.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
