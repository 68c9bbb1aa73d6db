"""`jflow-export quantize`: an fp32 artifact -> an INT8 or INT4 artifact, the way a quantizer writes a new
checkpoint. Nothing in the runtime changes: quantized graphs take and give the same float tensors.

- int8: W8A8 with explicit QuantizeLinear/DequantizeLinear (QDQ) on the MatMul/Gemm/Conv of siglip, llm,
  llm_ort, gen_encoder and gen_decoder: per-channel symmetric int8 weights, symmetric int8 activations
  calibrated on our own runtime's inputs (zero point 0, as TensorRT's explicit quantization requires).
- int4: the LLM's linear weights, lm_head included, as symmetric block-quantized INT4 weight-only QDQ
  (DequantizeLinear with block_size along the input dimension, opset 21): ONNX Runtime fuses it into
  MatMulNBits, TensorRT runs it as weight-only INT4. The other graphs take the int8 path.
- In both LLM forms, Q/K/V and gate/up are packed into one MatMul each before quantizing (the packed weights
  are written once and shared by both forms): one GEMM per shared input, as GenAI's builder does.
Kept float (the precision policy): norm statistics, softmax and attention scores (MatMuls of two
activations), GRN, everything computed from the time alone (sinusoids, time MLP, the adaLN scale/shift
mappers), the ODE state and the Euler update, and the whole VAE. Quantizers: onnxruntime.quantization
(quantize_static with a CalibrationDataReader; MatMulNBitsQuantizer in QDQ format).
"""

from __future__ import annotations

import shutil
import time
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import numpy as np

from jflow.artifact.external_data import share_with
from jflow.artifact.manifest import Manifest, write_manifest
from jflow.artifact.precision import QUANTIZED, TOLERANCES
from jflow.calibration import KEEP_FLOAT, METHODS, SMOOTH_ALPHA
from jflow.calibration.collect import SampleReader, collect_samples
from jflow.calibration.data import calibration_set
from jflow.calibration.llm_graph import FLOAT_GEMMS, ROLES, drop_unused_initializers, pack_siblings
from jflow.calibration.smooth import channel_maxima, smooth as smooth_gemms
from jflow.errors import InputError
from jflow.fsutil import check_new_dir, staged_dir

STATIC = ("siglip", "llm", "llm_ort", "gen_encoder", "gen_decoder")
LLM_FORMS = ("llm", "llm_ort")
TIME_INPUTS = {"gen_encoder": ("t",), "gen_decoder": ("t_emb", "dt", "cfg_weight")}
KEPT_FLOAT = ["norm statistics (RMSNorm, LayerNorm)", "softmax and attention scores (activation x activation)",
              "GRN", "time features (sinusoids, time MLP, adaLN scale/shift from t_emb)",
              "ODE state z, guidance and Euler update", "SDXL VAE decoder (whole graph)"]


def plan(precision: str) -> dict[str, str]:
    """Graph -> its precision in the quantized artifact."""
    out = {g: "int8" for g in STATIC}
    if precision == "int4":
        out.update({g: "int4" for g in LLM_FORMS})
    return out


def quantize_artifact(src: str | Path, out: str | Path, precision: str, calib: str | Path | None = None,
                      samples: int = 8, method: str = "minmax", block_size: int = 32, steps: int = 30,
                      smooth: float = SMOOTH_ALPHA, keep_float: tuple[str, ...] = KEEP_FLOAT,
                      cache: str | Path | None = None, force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Quantize the fp32 artifact `src` into a new artifact `out`; checks every argument before any work."""
    if precision not in QUANTIZED:
        raise InputError(f"--precision must be one of {', '.join(QUANTIZED)}, got {precision!r}")
    if method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(block_size, int) or block_size < 16 or block_size & (block_size - 1):
        raise InputError(f"--block-size must be a power of two >= 16, got {block_size!r}")
    if not isinstance(smooth, (int, float)) or not 0 <= smooth < 1:
        raise InputError(f"--smooth must be a migration strength in [0, 1) (0: off), got {smooth!r}")
    if isinstance(keep_float, str) or not set(keep_float) <= set(FLOAT_GEMMS):
        raise InputError(f"--keep-float takes roles among {', '.join(FLOAT_GEMMS)} (comma-separated) or none, "
                         f"got {keep_float!r}")
    m = Manifest.load(src)
    if m.precision != "fp32":
        raise InputError(f"{src} is a {m.precision} artifact; quantize reads an fp32 one (export it with "
                         "`jflow-export onnx --precision fp32`)")
    linked = sorted(rel for rel in m.files if ".onnx" in rel and m.path(rel).stat().st_nlink > 1)
    if linked:  # onnx refuses to read such weights (a guard against hard-link attacks), mid-way through
        raise InputError(f"{src}/{linked[0]} has other hard links ({len(linked)} file(s) in all); onnx will not "
                         "read weights from hard-linked files: quantize a real copy (cp -r, not cp -al or ln)")
    cset = calibration_set(samples, calib)
    out = check_new_dir(out, "the quantized artifact folder", replace=force)
    cache = Path(cache) if cache else _cache_dir()
    started = time.perf_counter()
    folder = collect_samples(m.root, cset, cache, steps=steps, log=log)
    targets = plan(precision)
    smoothing = {"alpha": smooth, "maxima": None, "gemms": {}} if smooth else None  # measured once, both forms
    float_gemms: dict[str, int] = {}  # LLM form -> GEMMs kept float
    with staged_dir(out, replace=force) as tmp:
        _copy_unquantized(m, tmp, targets)
        for name, target in targets.items():
            if name not in m.graphs:
                continue
            begun = time.perf_counter()
            if target == "int4":
                _int4(m.graph_path(name), tmp / m.graph(name)["file"], block_size)
            else:
                kept = _int8(m, name, tmp / m.graph(name)["file"], folder / name, method, smoothing=smoothing,
                             keep_float=tuple(keep_float))
                if name in LLM_FORMS:
                    float_gemms[name] = kept
            log(f"  {name:<12} {target} in {time.perf_counter() - begun:5.1f}s")
        if "llm_ort" in targets and "llm_ort" in m.graphs:
            saved = share_with(tmp / m.graph("llm")["file"], tmp / m.graph("llm_ort")["file"])
            log(f"  llm_ort shares {saved / 2**20:.1f} MiB of weights with llm")
        data = _manifest(m, precision, targets, cset, method, block_size, folder, smoothing,
                         {"roles": [ROLES[r] for r in keep_float], "count": float_gemms})
        write_manifest(tmp, data)
        _measure(tmp, data, log)
    log(f"wrote {out} ({precision}) in {time.perf_counter() - started:.0f}s")
    return out


MARGIN = 1.5  # a stated bound is this much looser than the error quantize measured


def _measure(root: Path, data: dict, log) -> None:
    """Run every quantized graph and both end-to-end cases against the fp32 reference (what `verify` does)
    and record the errors in the manifest. Where a model quantizes worse than its precision's bound, the
    manifest states that graph's own, measured bound (with a margin) and this says so: `verify` on a
    device then checks the device reproduces what was measured here. Judge the accuracy itself with the
    report (benchmarks/quant_accuracy.py), not with these bounds."""
    from jflow.runtime.verify import verify_artifact
    report = verify_artifact(root)
    if report.error:
        raise RuntimeError(f"jflow bug: the quantized artifact does not load: {report.error}")
    measured: dict[str, dict] = {}
    for row in report.rows:
        if row.rel_l2 is None:
            if not row.passed:
                raise RuntimeError(f"jflow bug: {row.graph}.{row.output} could not be compared: {row.note}")
            continue
        worst = measured.setdefault(row.graph, {"rel_l2": 0.0, "cosine": 1.0, "passed": True})
        worst.update(rel_l2=max(worst["rel_l2"], row.rel_l2), cosine=min(worst["cosine"], row.cosine))
        worst["passed"] &= row.passed
    overrides = {}
    for group, worst in measured.items():
        if not worst["passed"]:
            overrides[group] = {"rel_l2": float(f"{worst['rel_l2'] * MARGIN:.3g}"),
                                "cosine": float(f"{1 - (1 - worst['cosine']) * MARGIN:.6g}")}
            log(f"  warning: {group} quantizes worse than the {data['precision']} bound on this model (rel-L2 "
                f"{worst['rel_l2']:.3g}, cosine {worst['cosine']:.5f} vs fp32); the manifest states its measured "
                "bound. Check the accuracy on your data before you ship it")
    data["quantization"]["measured"] = {g: {k: round(v, 6) for k, v in w.items() if k != "passed"}
                                        for g, w in measured.items()}
    data["tolerances"] = {**data["tolerances"], "overrides": overrides}
    write_manifest(root, data)
    if overrides and not verify_artifact(root).ok:
        raise RuntimeError("jflow bug: the quantized artifact fails verify with its own measured bounds")


def _cache_dir() -> Path:
    from jflow.artifact.stamp import folder
    return folder().parent / "calibration"


def _copy_unquantized(m: Manifest, tmp: Path, targets: dict) -> None:
    """Every listed file but the quantized graphs' own (engines are per artifact and not copied)."""
    quantized = {m.graph(n)["file"] for n in targets if n in m.graphs}
    quantized |= {f"{rel}.data" for rel in quantized}
    for rel in m.files:
        if rel in quantized or rel.startswith("engines/") or rel.startswith("ort/"):
            continue
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(m.root / rel, tmp / rel)


def _time_only_nodes(model, time_inputs: tuple[str, ...]) -> list[str]:
    """Nodes whose values come from the time inputs and constants alone (the time-conditioning path).
    Shapes are not values: Shape/Size outputs (e.g. the batch size a Reshape needs) count as constants,
    and so does the dtype-only second input of CastLike."""
    constant = {i.name for i in model.graph.initializer}
    timed = set(time_inputs)
    names = []
    for node in model.graph.node:  # topological order
        values = [i for i in (node.input[:1] if node.op_type == "CastLike" else node.input) if i]
        if node.op_type in ("Constant", "Shape", "Size") or all(i in constant for i in values):
            constant.update(node.output)
        elif all(i in constant or i in timed for i in values):
            timed.update(node.output)
            names.append(node.name)
    return names


def _int8(m: Manifest, name: str, target: Path, samples: Path, method: str, exclude: list[str] = (),
          smoothing: dict | None = None, keep_float: tuple[str, ...] = ()) -> int:
    """W8A8 QDQ of graph `name` into `target`. LLM forms: packed, then smoothed (`smoothing`, shared by both
    forms); keep_float names LLM GEMM roles left float (llm_graph.FLOAT_GEMMS, found from the wiring).
    Returns how many GEMMs keep_float left float."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    if not any(samples.glob("*.npz")):
        raise InputError(f"no calibration samples for {name}; the calibration run recorded none (is --samples 0?)")
    source = m.graph_path(name)
    model = onnx.load(str(source), load_external_data=name in LLM_FORMS)
    changed = name in LLM_FORMS and pack_siblings(model) > 0  # quantize the packed graph (see pack_siblings)
    kept = [n for role in keep_float for n in FLOAT_GEMMS[role](model)] if name in LLM_FORMS else []
    if name in LLM_FORMS and smoothing:
        if smoothing["maxima"] is None:  # the first LLM form measures, both use it (identical bytes)
            smoothing["maxima"] = channel_maxima(model, source, samples)
        smoothing["gemms"][name] = smooth_gemms(model, smoothing["maxima"], smoothing["alpha"], skip=set(kept))
        changed = True
    if changed:
        target.parent.mkdir(parents=True, exist_ok=True)
        source = target.with_name(f".{target.stem}.packed.onnx")
        onnx.save(model, str(source), save_as_external_data=True, location=f"{source.name}.data",
                  size_threshold=1024, all_tensors_to_one_file=True)
    exclude = _time_only_nodes(model, TIME_INPUTS.get(name, ())) + _activation_products(model) + kept + list(exclude)
    reader = SampleReader(samples, [i.name for i in model.graph.input])
    target.parent.mkdir(parents=True, exist_ok=True)
    # The histogram calibrators (entropy, percentile) stack each tensor's values over all the samples of a
    # collect_data call, which fails on samples of different token counts and held every value in memory
    # (24 GiB ran out on a 135M LLM): one sample a call ("strided" calibration), the histograms merge.
    strided = {} if method == "minmax" else {"CalibStridedMinMax": 1}
    quantize_static(str(source), str(target), reader, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul", "Gemm", "Conv"], per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                    use_external_data_format=True,
                    calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                      "percentile": CalibrationMethod.Percentile}[method],
                    # (Not CalibMaxIntermediateOutputs: in onnxruntime 1.32 it drops the collected ranges.)
                    # Q/DQ on the inputs of the GEMMs and convolutions only, biases float: the placement
                    # TensorRT's explicit quantization fuses (it wants float biases). One Q/DQ pair per GEMM:
                    # ONNX Runtime fuses a DequantizeLinear into an integer kernel only when that GEMM is its
                    # sole consumer (Q, K and V share their input: shared, they ran as float MatMuls that
                    # dequantize their weights on every call, 7x slower decode than fp32).
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "MatMulConstBOnly": True,
                                   "QuantizeBias": False, "DedicatedQDQPair": True,
                                   "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm", "Conv"], **strided})
    if source != m.graph_path(name):
        source.unlink()
        source.with_name(f"{source.name}.data").unlink(missing_ok=True)
    _finish(target)
    return len(kept)


def _int4(source: Path, target: Path, block_size: int, symmetric: bool = True, exclude: tuple[str, ...] = ()) -> None:
    import onnx
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    model = onnx.load(str(source), load_external_data=True)
    _gemm_as_matmul(model)  # lm_head is a Gemm(transB): the weight-only quantizer takes MatMuls
    pack_siblings(model)
    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=symmetric, accuracy_level=4,
                                     quant_format=QuantFormat.QDQ, op_types_to_quantize=("MatMul",),
                                     nodes_to_exclude=list(exclude))
    quantizer.process()
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(quantizer.model.model, str(target), save_as_external_data=True, location=f"{target.name}.data",
              size_threshold=1024, all_tensors_to_one_file=True)


def _gemm_as_matmul(model) -> None:
    """Gemm(A, B, transB=1) with a constant B and no bias -> MatMul(A, B^T), the transpose materialized."""
    from onnx import helper, numpy_helper
    inits = {i.name: i for i in model.graph.initializer}
    for index, node in enumerate(model.graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm" or len(node.input) > 2 or node.input[1] not in inits \
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("transA", 0):
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = np.ascontiguousarray(weight.T)
        name = f"{node.input[1]}.matmul"
        model.graph.initializer.append(numpy_helper.from_array(weight, name))
        model.graph.node[index].CopyFrom(helper.make_node("MatMul", [node.input[0], name], list(node.output),
                                                          name=node.name))
    drop_unused_initializers(model)


def _activation_products(model) -> list[str]:
    """MatMuls of two activations (attention scores, attention x V) stay float: quantize_static's
    MatMulConstBOnly option let SigLIP's through."""
    constant = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in constant]


def _float_consumers(model) -> int:
    """A quantized activation that also feeds float ops (a residual Add, a norm) must reach them unrounded:
    rewire every consumer other than the GEMMs/convolutions from the DequantizeLinear back to the tensor
    its QuantizeLinear read. Returns how many inputs were rewired."""
    quantize = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    float_of = {n.output[0]: quantize[n.input[0]] for n in model.graph.node
                if n.op_type == "DequantizeLinear" and n.input[0] in quantize}
    rewired = 0
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm", "Conv", "QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            if name in float_of:
                node.input[i] = float_of[name]
                rewired += 1
    return rewired


def _finish(target: Path) -> None:
    """Float consumers stay float, and the weights file gets the artifact's name <graph>.onnx.data
    (quantize_static names it after the model)."""
    import onnx
    model = onnx.load(str(target), load_external_data=True)
    _float_consumers(model)
    for leftover in target.parent.glob(f"{target.stem}*.data"):
        leftover.unlink()
    onnx.save(model, str(target), save_as_external_data=True, location=f"{target.name}.data", size_threshold=1024,
              all_tensors_to_one_file=True)


def _manifest(m: Manifest, precision: str, targets: dict, cset, method: str, block_size: int, folder: Path,
              smoothing: dict | None, float_gemms: dict) -> dict:
    import json
    data = {k: v for k, v in m.data.items() if k not in ("files", "engines", "schema_version", "jflow_version")}
    graphs = {name: dict(entry) for name, entry in m.graphs.items()}
    for name, target in targets.items():
        if name in graphs:
            graphs[name]["precision"] = target
            if target == "int8":  # keep the per-GEMM Q/DQ pairs apart, or ORT runs them as float MatMuls
                graphs[name]["onnxruntime"] = {"disabled_optimizers": ["CommonSubexpressionElimination"]}
    samples = json.loads((folder / "complete.json").read_text())
    data.update(precision=precision, graphs=graphs, tolerances=TOLERANCES, quantization={
        "from": {"precision": m.precision, "manifest_sha256": m.digest},
        "graphs": {n: t for n, t in targets.items() if n in graphs},
        "int8": {"weights": "per-channel symmetric int8", "activations": "per-tensor symmetric int8",
                 "calibration": method, "format": "QDQ (zero point 0)",
                 "smoothing": {"method": "SmoothQuant (scales folded into the RMSNorm gains and up_proj)",
                               "alpha": smoothing["alpha"], "gemms": smoothing["gemms"]}
                 if smoothing and smoothing["gemms"] else None,
                 "llm_float_gemms": float_gemms if any(float_gemms["count"].values()) else None},
        "int4": {"weights": f"symmetric int4, blocks of {block_size} along the input dimension",
                 "activations": "float (weight-only)", "format": "QDQ DequantizeLinear(block_size), opset 21",
                 "onnxruntime": "MatMulNBits, accuracy level 4"} if precision == "int4" else None,
        "kept_float": KEPT_FLOAT + [f"the LLM's {role} (int8)" for role in float_gemms["roles"]
                                    if any(float_gemms["count"].values())],
        "calibration_set": cset.to_manifest(), "samples": samples["samples"],
        "ode_steps": samples["steps"], "decode_positions": samples["decode_positions"],
        "tools": {t: version(t) for t in ("onnxruntime", "onnx")}})
    return data
