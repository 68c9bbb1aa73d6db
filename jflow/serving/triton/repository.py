"""`jflow-export triton`: a Triton Inference Server model repository from an artifact.

variant "bls" (GPU servers):
    REPO/<graph>/config.pbtxt, 1/model.onnx (+ its external data) or 1/model.plan   one model per graph
    REPO/janusflow_generate, REPO/janusflow_answer                                 Python models: our loops,
        1/model.py, 1/artifact/ (manifest.json, embeddings, tokenizer, processor)   graphs called through BLS
variant "local" (CPU servers, or a server with the Python backend only):
    REPO/janusflow_generate, REPO/janusflow_answer: 1/model.py, 1/artifact/ (the whole artifact, run on ONNX Runtime)

The llm model is the portable graph (explicit past/present KV): Triton's ONNX Runtime and TensorRT
backends are stateless, so the fused llm_ort form, whose cache buffer is updated in place between calls,
cannot be served by them (see README "Triton"). Files are hard links to the artifact's where the file
system allows (jflow never changes an artifact file in place; it replaces files), else copies. The
repository is written in a hidden sibling folder and appears in one rename.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from jflow.artifact.contract import GRAPH_NAMES, ArtifactError
from jflow.artifact.manifest import MANIFEST_NAME, Manifest
from jflow.errors import InputError
from jflow.fsutil import atomic_write_bytes, check_new_dir, staged_dir
from jflow.serving.triton.bls_backend import host_files
from jflow.serving.triton.configs import MODEL_FILES, graph_config, model_config_pb2, python_config, to_pbtxt
from jflow.serving.triton.model import ARTIFACT_DIR, MODEL_NAMES

ENGINES = tuple(MODEL_FILES)
VARIANTS = ("bls", "local")
VERSION = "1"
MODEL_PY = '''"""Written by `jflow-export triton`: a Triton Python-backend model over jflow's loops
(jflow.serving.triton.model). Needs jflow (numpy, onnxruntime, tokenizers, pillow) in the server's Python."""
import triton_python_backend_utils as pb_utils

from jflow.serving.triton.model import JanusFlowModel


class TritonPythonModel(JanusFlowModel):
    pb_utils = pb_utils
'''
BUILD_ENGINES = "build them with `jflow-export build {root} --target tensorrt` on a machine with the " \
                "server's GPU and TensorRT version, or export with --engines onnxruntime"


def export_repository(artifact: str | Path, out: str | Path, engines: str = "onnxruntime", variant: str = "bls",
                      instances: int = 1, max_queue_delay_us: int = 100, force: bool = False,
                      log: Callable[[str], None] = print) -> Path:
    """Write the model repository `out` for `artifact`; returns its path."""
    if engines not in ENGINES or variant not in VARIANTS:
        raise InputError(f"engines must be one of {', '.join(ENGINES)} and variant one of {', '.join(VARIANTS)}, "
                         f"got {engines!r} and {variant!r}")
    if variant == "local" and engines != "onnxruntime":
        raise InputError("--variant local runs the artifact on ONNX Runtime inside the Python model; "
                         "--engines tensorrt needs --variant bls")
    if not isinstance(instances, int) or instances < 1 or not isinstance(max_queue_delay_us, int) \
            or max_queue_delay_us < 0:
        raise InputError(f"instances must be >= 1 and max_queue_delay_us >= 0, got {instances!r}, "
                         f"{max_queue_delay_us!r}")
    out = check_new_dir(out, "the model repository", replace=force, sources=[artifact])
    model_config_pb2()  # tritonclient present, before any work
    manifest = Manifest.load(artifact)  # every file checked (sha256, or its verified stamp) before it is served
    plans = _tensorrt_plans(manifest) if engines == "tensorrt" else {}
    with staged_dir(out, replace=force, kind="triton-repository", sources=[artifact]) as repo:
        if variant == "bls":
            for name in GRAPH_NAMES:
                _graph_model(repo, manifest, name, engines, plans.get(name), instances, max_queue_delay_us)
                log(f"  {name:<18} {engines}")
        files = host_files(manifest) if variant == "bls" else list(manifest.files)
        for task, model in MODEL_NAMES.items():
            folder = repo / model / VERSION
            for rel in [MANIFEST_NAME, *files]:
                _place(manifest.root / rel, folder / ARTIFACT_DIR / rel)
            atomic_write_bytes(folder / "model.py", MODEL_PY.encode())
            write_config(repo / model, python_config(task, variant, instances))
            log(f"  {model:<18} python ({'graphs through BLS' if variant == 'bls' else 'ONNX Runtime in-process'})")
    return out


def _tensorrt_plans(manifest: Manifest) -> dict[str, dict]:
    """{graph: engine entry} of the artifact's TensorRT section, or one line saying what is missing."""
    section = manifest.engines.tensorrt
    if section is None:
        raise ArtifactError(f"{manifest.root} has no TensorRT engines; {BUILD_ENGINES.format(root=manifest.root)}")
    entries = {name: plan.to_dict() for name, plan in section.graphs.items()}
    missing = [g for g in GRAPH_NAMES if g not in entries]
    if missing:
        raise ArtifactError(f"{manifest.root} has no TensorRT engine for {', '.join(missing)}; "
                            f"{BUILD_ENGINES.format(root=manifest.root)}")
    return entries


def _graph_model(repo: Path, manifest: Manifest, name: str, engines: str, plan: dict | None, instances: int,
                 delay_us: int) -> None:
    folder = repo / name / VERSION
    if plan is not None:
        _place(manifest.path(plan["plan"]), folder / MODEL_FILES[engines])
    else:
        graph = manifest.graph(name)["file"]
        _place(manifest.path(graph), folder / MODEL_FILES[engines])
        for rel in manifest.files:  # external weights: found by their own name next to the graph
            if rel.startswith(graph + "."):
                _place(manifest.path(rel), folder / Path(rel).name)
    config = graph_config(name, manifest.graph(name), engines, instances, delay_us,
                          plan["profiles"] if plan is not None else None)
    write_config(repo / name, config)


def write_config(folder: Path, config) -> None:
    """folder/config.pbtxt, written atomically (a failure leaves the staged repository, never a half file)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "config.pbtxt", to_pbtxt(config).encode())


def _place(src: Path, dst: Path) -> None:
    """dst as a hard link to src where the file system allows, else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
