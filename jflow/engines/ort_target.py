"""The ONNX Runtime target: graphs saved after ORT's offline graph optimization, so a device session
starts without redoing it. Level "extended" (fusions that run on every provider); "all" would add
layout changes that tie the file to the machine that wrote it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import onnxruntime as ort

from jflow.artifact.contract import disabled_optimizers
from jflow.artifact.files import member_dir
from jflow.artifact.manifest import Manifest
from jflow.artifact.sections import OrtGraphs
from jflow.fsutil import scratch_dir
from jflow.runtime.backends import graph_error

FOLDER = "ort"


def optimize_graph(source: Path, target: Path, disabled: list[str] = ()) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    data = f"{target.name}.data"
    name = source.stem
    # ORT writes both files by name: into a private folder first, then each is renamed into place
    # (the weights before the graph that names them).
    with scratch_dir(target.parent) as scratch:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(scratch / target.name)
        # Weights go to one external file next to the graph (the LLM is over protobuf's 2 GB limit).
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", data)
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        try:
            ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=list(disabled) or None)
        except Exception as exc:  # onnxruntime's own exception types
            raise graph_error(name, f"onnxruntime refused to optimize {source.name}", exc) from None
        if (scratch / data).exists():
            os.replace(scratch / data, target.parent / data)
        os.replace(scratch / target.name, target)


def build_ort_target(root: Path, manifest: Manifest, graphs: list[str], log: Callable[[str], None]) -> OrtGraphs:
    """Optimize `graphs`; returns the manifest's engines.onnxruntime section (graphs optimized before by this
    onnxruntime are kept)."""
    built = {}
    member_dir(root, FOLDER)  # never through a link out of the artifact
    for name in graphs:
        started = time.perf_counter()
        rel = f"{FOLDER}/{name}.onnx"
        entry = manifest.graph(name)
        optimize_graph(root / entry["file"], root / rel, disabled_optimizers(entry))
        built[name] = rel
        log(f"  {name:<12} onnxruntime graph optimized in {time.perf_counter() - started:5.1f}s")
    previous = manifest.engines.onnxruntime
    kept = previous.graphs if previous is not None else {}
    return OrtGraphs(ort.__version__, "extended", {**kept, **built})
