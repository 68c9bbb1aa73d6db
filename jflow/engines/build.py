"""`jflow-export build`: from a checkpoint (or an existing ONNX artifact) to engines for the target.

One component at a time, with progress and elapsed time; engines are reused when their cache key
matches; every file is written atomically and the manifest, updated last, records what was built.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from jflow.engines import cache
from jflow.engines.ort_target import build_ort_target
from jflow.engines.profiles import profiles_for_manifest
from jflow.engines.targets import TensorRTStatus, choose_target, tensorrt_status
from jflow.errors import InputError
from jflow.fsutil import atomic_write_bytes
from jflow.runtime.manifest import MANIFEST_NAME, Manifest, sha256_file


def build(out: Path, target: str = "auto", components: list[str] | None = None, workspace_mib: int | None = None,
          opt_level: int | None = None, timing_cache: Path | None = None, log: Callable[[str], None] = print,
          status: TensorRTStatus | None = None) -> str:
    """Build engines in the artifact `out` (which must exist); returns the target built."""
    manifest = Manifest.load(out)
    graphs = components or list(manifest.graphs)
    unknown = [g for g in graphs if g not in manifest.graphs]
    if unknown:
        raise InputError(f"unknown component(s) {', '.join(unknown)}; the artifact has {', '.join(manifest.graphs)}")
    if status is None and target != "onnxruntime":
        status = tensorrt_status()
    chosen, note = choose_target(target, str(out), status)
    if note:
        log(note)
    data = manifest.data
    if chosen == "onnxruntime":
        section = build_ort_target(out, data, graphs, log)
    else:
        section = _build_tensorrt(out, data, graphs, status, workspace_mib, opt_level, timing_cache, log)
    update_manifest(out, chosen, section)
    return chosen


def _build_tensorrt(out, data, graphs, status, workspace_mib, opt_level, timing_cache, log) -> dict:
    from jflow.engines.tensorrt_build import build_plan
    profiles = profiles_for_manifest(data, graphs)
    previous = data.get("engines", {}).get("tensorrt", {})
    same_device = (previous.get("tensorrt_version"), previous.get("gpu_name")) == (status.version, status.gpu_name)
    entries = dict(previous.get("graphs", {})) if same_device else {}
    timing_cache = timing_cache or out / "engines" / "timing.cache"
    for name in graphs:
        key = cache.EngineKey.for_graph(data, name, profiles[name], status.version, status.gpu_name,
                                        status.compute_capability)
        started = time.perf_counter()
        plan = cache.reusable(out, key)
        if plan is not None:
            log(f"  {name:<12} engine up to date ({plan.relative_to(out)})")
        else:
            log(f"  {name:<12} building TensorRT engine ...")
            plan = cache.store(out, key, build_plan(out / data["graphs"][name]["file"], profiles[name], workspace_mib,
                                                    opt_level, timing_cache), time.perf_counter() - started)
            log(f"  {name:<12} built in {time.perf_counter() - started:5.1f}s")
        entries[name] = {"plan": plan.relative_to(out).as_posix(), "key": key.digest, "profiles": profiles[name]}
    return {"tensorrt_version": status.version, "gpu_name": status.gpu_name,
            "compute_capability": status.compute_capability, "graphs": entries}


def update_manifest(root: Path, target: str, section: dict) -> None:
    """Record `section` under engines.<target> and hash the new files; manifest.json is replaced atomically."""
    path = root / MANIFEST_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    data.setdefault("engines", {})[target] = section
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        rel = file.relative_to(root).as_posix()
        if rel not in data["files"] and not file.name.startswith("."):
            data["files"][rel] = sha256_file(file)
    for rel in _section_files(section):
        data["files"][rel] = sha256_file(root / rel)  # rebuilt in place: hash again
    atomic_write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _section_files(section: dict) -> list[str]:
    files = []
    for entry in section.get("graphs", {}).values():
        rel = entry["plan"] if isinstance(entry, dict) else entry
        files.append(rel)
        files.append(f"{rel[:-len('engine.plan')]}engine.json" if rel.endswith("engine.plan") else f"{rel}.data")
    return files
