"""`jflow-export build`: from a checkpoint (or an existing ONNX artifact) to engines for the target.

One component at a time, with progress and elapsed time; engines are reused when their cache key
matches; every file is written atomically and the manifest, updated last, records what was built.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from jflow.artifact.engines import EngineIdentity, EngineKey
from jflow.artifact.manifest import Manifest, member_dir, update_manifest
from jflow.engines import cache
from jflow.engines.ort_target import build_ort_target
from jflow.engines.profiles import profiles_for_manifest
from jflow.engines.targets import TensorRTStatus, choose_target, tensorrt_status
from jflow.errors import InputError


def build(out: Path, target: str = "auto", components: list[str] | None = None, workspace_mib: int | None = None,
          opt_level: int | None = None, timing_cache: Path | None = None, log: Callable[[str], None] = print,
          status: TensorRTStatus | None = None) -> str:
    """Build engines in the artifact `out` (which must exist); returns the target built."""
    manifest = Manifest.load(out)
    unknown = [g for g in components or [] if g not in manifest.graphs]
    if unknown:
        raise InputError(f"unknown component(s) {', '.join(unknown)}; the artifact has {', '.join(manifest.graphs)}")
    if status is None and target != "onnxruntime":
        status = tensorrt_status()
    chosen, note = choose_target(target, str(out), status)
    if note:
        log(note)
    graphs = _components(manifest, chosen, components)
    data = manifest.data
    if chosen == "onnxruntime":
        section = build_ort_target(out, data, graphs, log)
    else:
        section = _build_tensorrt(out, data, graphs, status, workspace_mib, opt_level, timing_cache, log)
    engines = dict(data.get("engines", {}))
    engines[chosen] = section
    update_manifest(out, {"engines": engines}, rehash=_section_files(section))
    return chosen


def _components(manifest: Manifest, target: str, asked: list[str] | None) -> list[str]:
    """TensorRT builds the portable graphs (the fused LLM form is ONNX Runtime's own). The ONNX Runtime
    target re-saves the graphs after ORT's offline optimization, except the LLM: its ORT form is already
    the fused graph, and re-saving it would store its weights a second time."""
    forms = [n for n, g in manifest.graphs.items() if "form_of" in g]
    if target == "tensorrt":
        allowed = [n for n in manifest.graphs if n not in forms]
        why = "is ONNX Runtime's form of the LLM (com.microsoft ops); TensorRT builds `llm`"
    else:
        llm = {n for n in forms} | {manifest.graph(n)["form_of"] for n in forms}
        allowed = [n for n in manifest.graphs if n not in llm]
        why = "is the LLM, which ONNX Runtime runs in its fused form as exported (nothing to re-save)"
    refused = [n for n in asked or [] if n not in allowed]
    if refused:
        raise InputError(f"--components {', '.join(refused)}: {refused[0]} {why}; "
                         f"the {target} target builds {', '.join(allowed)}")
    return list(asked or allowed)


def _build_tensorrt(out, data, graphs, status, workspace_mib, opt_level, timing_cache, log) -> dict:
    from jflow.engines.tensorrt_build import build_plan
    profiles = profiles_for_manifest(data, graphs)
    previous = data.get("engines", {}).get("tensorrt", {})
    identity = status.identity
    # Engines of another TensorRT or GPU are dropped from the section (their plans could not load here).
    entries = dict(previous.get("graphs", {})) if EngineIdentity.from_section(previous) == identity else {}
    timing_cache = timing_cache or member_dir(out, "engines") / "timing.cache"
    for name in graphs:
        key = EngineKey.for_graph(data, name, profiles[name], identity)
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
    return {**identity.as_dict(), "graphs": entries}


def _section_files(section: dict) -> list[str]:
    files = []
    for entry in section.get("graphs", {}).values():
        rel = entry["plan"] if isinstance(entry, dict) else entry
        files.append(rel)
        files.append(f"{rel[:-len('engine.plan')]}engine.json" if rel.endswith("engine.plan") else f"{rel}.data")
    return files
