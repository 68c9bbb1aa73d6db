"""`jflow-export build`: from a checkpoint (or an existing ONNX artifact) to engines for the target.

One component at a time, with progress and elapsed time; engines are reused when their cache key
matches; every file is written atomically and the manifest, updated last, records what was built.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from jflow.artifact.engines import EngineKey
from jflow.artifact.files import member_dir
from jflow.artifact.manifest import Manifest
from jflow.artifact.sections import OrtGraphs, TensorRTEngines, TensorRTPlan
from jflow.artifact.writer import ArtifactWriter
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
    graphs = components_for(manifest, chosen, components)
    if chosen == "onnxruntime":
        section = build_ort_target(out, manifest, graphs, log)
    else:
        section = _build_tensorrt(out, manifest, graphs, status, workspace_mib, opt_level, timing_cache, log)
    engines = manifest.engines.with_target(chosen, section)
    ArtifactWriter(out).update({"engines": engines.to_dict()}, rehash=_section_files(section))
    return chosen


def components_for(manifest: Manifest, target: str, asked: list[str] | None) -> list[str]:
    """TensorRT builds the portable graphs (the fused LLM form is ONNX Runtime's own). The ONNX Runtime
    target re-saves the graphs after ORT's offline optimization, except the LLM: its ORT form is already
    the fused graph, and re-saving it would store its weights a second time."""
    forms = manifest.forms
    if target == "tensorrt":
        allowed = [n for n in manifest.graphs if n not in forms]
        why = "is ONNX Runtime's form of the LLM (com.microsoft ops); TensorRT builds `llm`"
    else:
        llm = set(forms) | set(forms.values())
        allowed = [n for n in manifest.graphs if n not in llm]
        why = "is the LLM, which ONNX Runtime runs in its fused form as exported (nothing to re-save)"
    refused = [n for n in asked or [] if n not in allowed]
    if refused:
        raise InputError(f"--components {', '.join(refused)}: {refused[0]} {why}; "
                         f"the {target} target builds {', '.join(allowed)}")
    return list(asked or allowed)


def _build_tensorrt(out, manifest: Manifest, graphs, status, workspace_mib, opt_level, timing_cache,
                    log) -> TensorRTEngines:
    from jflow.engines.tensorrt_build import build_plan
    data = manifest.data
    profiles = profiles_for_manifest(data, graphs)
    previous = manifest.engines.tensorrt
    identity = status.identity
    # Engines of another TensorRT or GPU are dropped from the section (their plans could not load here).
    entries = dict(previous.graphs) if previous is not None and previous.identity == identity else {}
    timing_cache = timing_cache or member_dir(out, "engines") / "timing.cache"
    for name in graphs:
        key = EngineKey.for_graph(data, name, profiles[name], identity)
        started = time.perf_counter()
        plan = cache.reusable(out, key)
        if plan is not None:
            log(f"  {name:<12} engine up to date ({plan.relative_to(out)})")
        else:
            log(f"  {name:<12} building TensorRT engine ...")
            plan = cache.store(out, key, build_plan(manifest.graph_path(name), profiles[name], workspace_mib,
                                                    opt_level, timing_cache), time.perf_counter() - started)
            log(f"  {name:<12} built in {time.perf_counter() - started:5.1f}s")
        entries[name] = TensorRTPlan(plan.relative_to(out).as_posix(), key.digest, profiles[name])
    return TensorRTEngines(identity, entries)


def _section_files(section: OrtGraphs | TensorRTEngines) -> list[str]:
    """The files a build wrote (hashed again even when listed: a rebuilt engine has new bytes)."""
    files = []
    for entry in section.graphs.values():
        rel = entry.plan if isinstance(entry, TensorRTPlan) else entry
        files.append(rel)
        files.append(f"{rel[:-len('engine.plan')]}engine.json" if rel.endswith("engine.plan") else f"{rel}.data")
    return files
