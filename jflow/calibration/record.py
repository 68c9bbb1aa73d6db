"""What a quantized artifact's manifest says of how it was made: the graphs' precisions and sessions, and the
`quantization` section (formats, smoothing, the GEMMs kept float or held at int8 and why, the calibration)."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

from jflow.artifact.manifest import Manifest
from jflow.artifact.precision import TOLERANCES
from jflow.calibration.collect import calibrated_form
from jflow.calibration.recipe import QuantRecipe

STEP_FORM = "llm_ort_step"  # int8 --ort-int8 split: the static ORT form the ODE steps run (llm_runner.FusedLlm)
KEPT_FLOAT = ["norm statistics (RMSNorm, LayerNorm)", "softmax and attention scores (activation x activation)",
              "GRN", "time features (sinusoids, time MLP, adaLN scale/shift from t_emb)",
              "ODE state z, guidance and Euler update", "SDXL VAE decoder (whole graph)"]


def quantization_manifest(m: Manifest, recipe: QuantRecipe, targets: dict, cset, folder: Path, smoothing: dict | None,
                          float_gemms: dict, mixed: dict | None) -> dict:
    """The quantized artifact's manifest data (before verify adds what it measured)."""
    precision, block_size = recipe.precision, recipe.block_size
    data = {k: v for k, v in m.data.items() if k not in ("files", "engines", "schema_version", "jflow_version")}
    graphs = {name: dict(entry) for name, entry in m.graphs.items()}
    blockwise = precision == "int8" and recipe.ort_int8 in ("blockwise", "split") and "llm_ort" in graphs
    targets = dict(targets)
    if blockwise and recipe.ort_int8 == "split":  # the ODE steps' static form, over llm_ort's cache and tensors
        graphs[STEP_FORM] = {**graphs["llm_ort"], "file": f"{Path(graphs['llm_ort']['file']).parent}/{STEP_FORM}.onnx"}
        targets[STEP_FORM] = "int8"
    for name, target in targets.items():
        if name in graphs:
            graphs[name]["precision"] = target
            static = target == "int8" and not (blockwise and name == "llm_ort")
            if static:  # keep the per-GEMM Q/DQ pairs apart, or ORT runs them as float MatMuls
                graphs[name]["onnxruntime"] = {"disabled_optimizers": ["CommonSubexpressionElimination"]}
    samples = json.loads((folder / "complete.json").read_text())
    kept = any(float_gemms["count"].values())
    where = f"int8{' static forms' if blockwise else ''}"  # the forms holding float GEMMs
    data.update(precision=precision, graphs=graphs, tolerances=TOLERANCES, quantization={
        "from": {"precision": m.precision, "manifest_sha256": m.digest},
        "graphs": {n: t for n, t in targets.items() if n in graphs},
        "int8": {"weights": "per-channel symmetric int8", "activations": "per-tensor symmetric int8",
                 "calibration": recipe.method, "format": "QDQ (zero point 0)",
                 "smoothing": {"method": "SmoothQuant (scales folded into the RMSNorm gains and up_proj)",
                               "alpha": smoothing["alpha"], "gemms": smoothing["gemms"]}
                 if smoothing and smoothing["gemms"] else None,
                 "llm_float_gemms": float_gemms if kept or "chosen_by" in float_gemms else None,
                 "llm_ort": {"weights": f"symmetric int8 in blocks of {block_size} along the input dimension "
                                        "(weight-only QDQ, opset 21)",
                             "activations": f"dynamic: int8 per block of {block_size} inside ONNX Runtime's "
                                            "MatMulNBits (8 bits, accuracy level 4)",
                             "ort_int8": recipe.ort_int8,
                             "ode_steps": f"{STEP_FORM}: the static W8A8 form (weights shared with llm)"
                             if recipe.ort_int8 == "split" else "llm_ort"} if blockwise else None},
        "int4": {"weights": f"symmetric int4, blocks of {block_size} along the input dimension",
                 "activations": "float (weight-only)", "format": "QDQ DequantizeLinear(block_size), opset 21",
                 "onnxruntime": "MatMulNBits, accuracy level 4",
                 "int8_gemms": {**mixed, "weights": "per-channel symmetric int8 (weight-only QDQ; ONNX Runtime: "
                                                   "MatMulNBits 8 bits)"}} if precision == "int4" else None,
        "kept_float": KEPT_FLOAT + [f"the LLM's {role} ({where})" for role in float_gemms["roles"] if kept]
        + ([f"the LLM's GEMMs {', '.join(float_gemms['gemms'])} ({where}; chosen by {float_gemms['chosen_by']})"]
           if float_gemms.get("gemms") else []),
        "calibration_set": cset.to_manifest(), "samples": samples["samples"],
        "llm_calibrated_on": calibrated_form(m),  # the other LLM form takes its ranges by weight (gemms.py)
        "ode_steps": samples["steps"], "decode_positions": samples["decode_positions"],
        "tools": {t: version(t) for t in ("onnxruntime", "onnx")}})
    return data
