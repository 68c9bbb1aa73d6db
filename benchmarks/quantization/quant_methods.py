"""What each quantization method buys on the real-weights LLM (SmolLM2-135M), teacher-forced on held-out text.

    python -m benchmarks.quantization.quant_methods [--variants int8-minmax,int4-sym-g32,...]

For each variant only the LLM's ONNX Runtime form is quantized (from the cached calibration samples of
the real-weights fp32 artifact; run `jflow-export quantize` on it once first), with the quantizer's own
`quantize_graph_int8` / `quantize_llm_int4` and the variant's QuantRecipe, in a copy of that artifact,
and scored against fp32 exactly as quant_accuracy.py scores whole artifacts: top-1 agreement, mean
KL(fp32 || variant) and perplexity over benchmarks/data/english.txt.
Writes benchmarks/results/quant_methods.json, keeping the variants earlier runs measured there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import RESULTS
from benchmarks.quantization import int4_rounding as rounding
from jflow.calibration.recipe import QuantRecipe

# name -> (precision, how). int8: calibration method, SmoothQuant alpha (none: off), the MatMuls kept float;
# int4: block, symmetry.
VARIANTS = {
    "int8-minmax": ("int8", {"method": "minmax"}),
    # percentile and entropy: onnxruntime's histogram calibrators, fed one sample a call by `quantize`
    # (all at once they failed on samples of different lengths, after filling memory).
    "int8-percentile": ("int8", {"method": "percentile"}),
    "int8-entropy": ("int8", {"method": "entropy"}),
    "int8-minmax-down-float": ("int8", {"method": "minmax", "float": ("down_proj",)}),
    "int8-minmax-down-o-float": ("int8", {"method": "minmax", "float": ("down_proj", "o_proj")}),
    "int8-minmax-lm_head-float": ("int8", {"method": "minmax", "float": ("lm_head",)}),
    "int8-smooth0.5": ("int8", {"method": "minmax", "smooth": 0.5}),
    "int8-smooth0.8": ("int8", {"method": "minmax", "smooth": 0.8}),
    "int8-smooth0.5-percentile": ("int8", {"method": "percentile", "smooth": 0.5}),
    "int8-smooth0.5-o-float": ("int8", {"method": "minmax", "smooth": 0.5, "float": ("o_proj",)}),
    "int8-smooth0.5-down-float": ("int8", {"method": "minmax", "smooth": 0.5, "float": ("down_proj",)}),
    "int8-smooth0.8-down-float": ("int8", {"method": "minmax", "smooth": 0.8, "float": ("down_proj",)}),
    "int8-smooth0.8-down-o-float": ("int8", {"method": "minmax", "smooth": 0.8, "float": ("down_proj", "o_proj")}),
    # As `quantize` does it: kept float by role (llm_graph), and those GEMMs not smoothed.
    "int8-smooth0.8-keep-down-o": ("int8", {"method": "minmax", "smooth": 0.8, "roles": ("down", "o")}),
    "int8-smooth0.8-keep-down-o-percentile": ("int8", {"method": "percentile", "smooth": 0.8,
                                                       "roles": ("down", "o")}),
    "int8-smooth0.8-keep-down-o-entropy": ("int8", {"method": "entropy", "smooth": 0.8, "roles": ("down", "o")}),
    "int8-smooth0.9-down-float": ("int8", {"method": "minmax", "smooth": 0.9, "float": ("down_proj",)}),
    # Not a TensorRT form (per-call asymmetric uint8 activation ranges): what llm_ort, an ORT-only graph,
    # would gain from ORT's dynamic quantization (DynamicQuantizeMatMul).
    "int8-dynamic": ("int8", {"dynamic": True}),
    "int4-sym-g32": ("int4", {"block": 32, "symmetric": True}),
    "int4-sym-g16": ("int4", {"block": 16, "symmetric": True}),
    # (int4-asym-g32, in results/quant_methods.json, was measured with onnxruntime's quantizer; quantize now
    # writes symmetric int4 only.)
    "int4-sym-g32-lm_head-float": ("int4", {"block": 32, "symmetric": True, "float": ("lm_head",)}),
    "int4-awq-g32": ("int4", {"block": 32, "symmetric": True, "awq": True}),
    "int4-awq-g32-lm_head-float": ("int4", {"block": 32, "symmetric": True, "awq": True, "float": ("lm_head",)}),
    "int4-sym-g32-smooth0.3": ("int4", {"block": 32, "symmetric": True, "smooth": 0.3}),
    "int4-sym-g32-smooth0.5": ("int4", {"block": 32, "symmetric": True, "smooth": 0.5}),
    # Simulations (float graphs holding round-tripped weights) on GPTQ's symmetric grid (scale 2*absmax/15,
    # levels -8..7): plain rounding; onnxruntime 1.32's bundled GPTQ (its error feedback reads the zero
    # lower triangle of an upper Cholesky factor, so it rounds almost every weight as RTN does: the same
    # result at percdamp 0.01, 0.001 and 1e-5); GPTQ as published (int4_rounding.gptq, a measurement, not product).
    "int4-rtn-g32-sim": ("int4", {"block": 32, "sim": "rtn"}),
    "int4-ort-gptq-g32-sim": ("int4", {"block": 32, "sim": "ort-gptq"}),
    "int4-gptq-g32-sim": ("int4", {"block": 32, "sim": "gptq"}),
    # Calibrated on the text samples alone (prompt prefills and chat decode steps): most calibration rows
    # come from ODE steps and image questions, whose tokens here come from the random generation and
    # vision parts, while the scoring is on text.
    "int8-smooth0.8-down-float-text-calib": ("int8", {"method": "minmax", "smooth": 0.8, "float": ("down_proj",),
                                                      "text": True}),
    "int4-gptq-g32-text-calib-sim": ("int4", {"block": 32, "sim": "gptq", "text": True}),
    # GPTQ's Hessians from 4096 tokens of other English (CPython's pydoc topics, held out from the scoring).
    "int4-gptq-g32-pydoc-calib-sim": ("int4", {"block": 32, "sim": "gptq", "pydoc": True}),
    # Floors: the weights alone rounded (per-output-channel symmetric int8 / fp16), activations float.
    "int8-weights-only-sim": ("int8", {"block": 32, "sim": "w8"}),
    "fp16-weights-only-sim": ("fp16", {"block": 32, "sim": "fp16"}),
}


def variant_recipe(precision: str, how: dict, node_names=()) -> QuantRecipe:
    """The variant as a quantization recipe. A study starts from no smoothing and nothing kept float, then
    adds what `how` names: int8 `float` suffixes pick nodes among `node_names`, int4 `float` names the int4
    writer's exclusions."""
    if precision == "int8":
        exclude = tuple(n for n in node_names if any(n.endswith(suffix) for suffix in how.get("float", ())))
        return QuantRecipe("int8", method=how["method"], smooth=how.get("smooth", 0), keep_float=how.get("roles", ()),
                           exclude=exclude)
    return QuantRecipe("int4", block_size=how["block"], symmetric=how["symmetric"], exclude=tuple(how.get("float", ())))


def _variant_artifact(fp32: Path, samples: Path, precision: str, how: dict, out: Path) -> Path:
    """A copy of the fp32 artifact whose llm_ort is this variant."""
    import onnx

    from jflow.artifact.manifest import Manifest
    from jflow.artifact.writer import ArtifactWriter
    from jflow.calibration.quantize import quantize_graph_int8, quantize_llm_int4
    # A real copy: onnx refuses to read weights from a hard-linked file, and a link would also make the
    # source artifact unreadable to a `jflow-export quantize` running meanwhile.
    shutil.copytree(fp32, out)
    if how.get("text"):
        samples = _text_samples(samples, out.parent / f"{out.name}-samples")
    elif how.get("pydoc"):
        samples = _pydoc_samples(fp32, out.parent / f"{out.name}-samples")
    target = out / "onnx" / "llm_ort.onnx"
    target.unlink()
    m = Manifest.load(fp32, check_files=False)
    if how.get("sim"):
        _simulated(fp32 / "onnx" / "llm_ort.onnx", target, samples / "llm_ort", how["block"], how["sim"],
                   how.get("damp", 0.01))
    elif how.get("dynamic"):
        _dynamic(fp32 / "onnx" / "llm_ort.onnx", target)
    elif precision == "int8":
        model = onnx.load(str(fp32 / "onnx" / "llm_ort.onnx"), load_external_data=False)
        recipe = variant_recipe(precision, how, [n.name for n in model.graph.node])
        smoothing = {"alpha": recipe.smooth, "gemms": {}} if recipe.smooth else None
        quantize_graph_int8(m, "llm_ort", target, samples / "llm_ort", recipe, smoothing=smoothing)
    elif how.get("smooth") or how.get("awq"):  # activation-aware scales folded in before int4
        from jflow.calibration.llm_graph import pack_siblings
        from jflow.calibration.smooth import channel_maxima, fold_scales, smooth
        source = fp32 / "onnx" / "llm_ort.onnx"
        model = onnx.load(str(source), load_external_data=True)
        pack_siblings(model)
        if how.get("awq"):
            fold_scales(model, rounding.awq_scales(model, source, samples / "llm_ort", how["block"]))
        else:  # one alpha for every GEMM, no search
            smooth(model, channel_maxima(model, source, samples / "llm_ort"), how["smooth"])
        scaled = out / "scaled.onnx"
        onnx.save(model, str(scaled), save_as_external_data=True, location="scaled.onnx.data", size_threshold=1024)
        quantize_llm_int4(scaled, target, variant_recipe(precision, how))
        scaled.unlink()
        (out / "scaled.onnx.data").unlink()
    else:
        quantize_llm_int4(fp32 / "onnx" / "llm_ort.onnx", target, variant_recipe(precision, how))
    graphs = {**m.graphs, "llm_ort": {**m.graphs["llm_ort"], "precision": precision}}
    ArtifactWriter(out).update({"graphs": graphs}, rehash=["onnx/llm_ort.onnx", "onnx/llm_ort.onnx.data"])
    return out


def _text_samples(samples: Path, out: Path, most: int = 64) -> Path:
    """A copy of the calibration folder whose llm_ort holds only the calls of fewer than `most` new tokens."""
    (out / "llm_ort").mkdir(parents=True, exist_ok=True)
    for path in sorted((samples / "llm_ort").glob("*.npz")):
        with np.load(path) as z:
            if int(z["query_seqlens"].max()) < most:
                shutil.copy(path, out / "llm_ort" / path.name)
    return out


def _pydoc_samples(fp32: Path, out: Path, tokens: int = 4096, window: int = 512) -> Path:
    """llm_ort calibration samples (one prefill of `window` tokens each, empty cache) over the first `tokens`
    tokens of CPython's pydoc topics: English documentation, none of it in the scored text."""
    from pydoc_data.topics import topics

    from jflow.runtime.pipeline import Pipeline
    (out / "llm_ort").mkdir(parents=True, exist_ok=True)
    with Pipeline.load(fp32, check_files="none") as pipe:
        text = "\n\n".join(topics[k] for k in sorted(topics))
        ids = pipe.tokenizer.tokenizer.encode(text, add_special_tokens=False).ids[:tokens]
        kv, hd = pipe.llm.kv_heads, pipe.llm.head_dim
        for n, start in enumerate(range(0, len(ids), window)):
            chunk = [pipe.tokenizer.bos_id] + ids[start:start + window - 1]
            s = len(chunk)
            feeds = {"inputs_embeds": pipe.embed([chunk]).astype(np.float32),
                     "position_ids": np.arange(s)[None], "seqlens_k": np.array([s - 1], np.int32),
                     "query_seqlens": np.array([s], np.int32), "total_sequence_length": np.array(s, np.int32),
                     **{name: np.zeros((1, kv, 0, hd), np.float32) for name in pipe.llm.past}}
            np.savez(out / "llm_ort" / f"{n:05d}.npz", **feeds)
    return out


def _simulated(source: Path, target: Path, samples: Path, block: int, how: str, damp: float = 0.01) -> None:
    """llm_ort packed, lm_head as a MatMul, every constant-weight MatMul's weight replaced by its int4
    round trip (GPTQ or plain rounding on GPTQ's grid), stored as float."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization.neural_compressor.weight_only import gptq

    from jflow.calibration.llm_graph import pack_siblings
    from jflow.calibration.llm_graph import gemm_as_matmul
    model = onnx.load(str(source), load_external_data=True)
    gemm_as_matmul(model)
    pack_siblings(model)
    hessians = rounding.matmul_hessians(model, source, samples) if "gptq" in how else {}
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        if how == "gptq":
            fake = rounding.gptq(w, hessians[node.input[0]], block, damp)
        elif how == "ort-gptq":
            fake = gptq(w.copy(), hessians[node.input[0]].copy(), num_bits=4, group_size=block, scheme="sym",
                        percdamp=damp)
        elif how == "w8":
            scale = np.abs(w).max(axis=0, keepdims=True) / 127
            scale[scale == 0] = 1
            fake = np.clip(np.round(w / scale), -127, 127) * scale
        elif how == "fp16":
            fake = w.astype(np.float16).astype(np.float32)
        else:
            fake = rounding.fake_int4(w, block, rounding.GPTQ_STEP)
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(fake.astype(np.float32), node.input[1]))
        print(".", end="", flush=True)
    onnx.save(model, str(target), save_as_external_data=True, location=f"{target.name}.data", size_threshold=1024,
              all_tensors_to_one_file=True)


def _dynamic(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from jflow.calibration.llm_graph import pack_siblings
    model = onnx.load(str(source), load_external_data=True)
    pack_siblings(model)
    packed = target.with_name(".packed.onnx")
    onnx.save(model, str(packed), save_as_external_data=True, location=".packed.onnx.data", size_threshold=1024)
    quantize_dynamic(str(packed), str(target), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gemm"], use_external_data_format=True,
                     extra_options={"MatMulConstBOnly": True})
    packed.unlink()
    packed.with_name(".packed.onnx.data").unlink()
    _float_consumers_unrounded(target)


def _float_consumers_unrounded(target: Path) -> None:
    """Ops other than the GEMMs read the tensor a QuantizeLinear read, not its dequantized copy (what
    quantize's own writer does by construction), and the weights file gets the name <graph>.onnx.data."""
    import onnx
    model = onnx.load(str(target), load_external_data=True)
    quantize = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    float_of = {n.output[0]: quantize[n.input[0]] for n in model.graph.node
                if n.op_type == "DequantizeLinear" and n.input[0] in quantize}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv", "QuantizeLinear", "DequantizeLinear"):
            for i, name in enumerate(node.input):
                node.input[i] = float_of.get(name, name)
    for leftover in target.parent.glob(f"{target.stem}*.data"):
        leftover.unlink()
    onnx.save(model, str(target), save_as_external_data=True, location=f"{target.name}.data", size_threshold=1024,
              all_tensors_to_one_file=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    from benchmarks.fixtures.real_checkpoint import real_artifact
    from benchmarks.quantization.quant_accuracy import TEXT, teacher_forced
    from benchmarks.quantization.samples import calibration_samples
    from jflow.runtime.pipeline import Pipeline
    from jflow.runtime.profile_stages import cpu_model
    fp32 = real_artifact("fp32")
    samples = calibration_samples(fp32)
    with Pipeline.load(fp32, check_files="none") as pipe:
        ids = [pipe.tokenizer.bos_id] + pipe.tokenizer.tokenizer.encode(TEXT.read_text(encoding="utf-8"),
                                                                        add_special_tokens=False).ids
        ref = teacher_forced(pipe, ids)
    targets = np.array(ids[1:])
    nll = lambda lp: float(-lp[np.arange(len(targets)), targets].mean())  # noqa: E731
    results = {"machine": {"cpu_model": cpu_model()}, "text_tokens": len(targets),
               "fp32_perplexity": float(np.exp(nll(ref))), "variants": {}}
    work = Path(tempfile.mkdtemp(prefix="jflow-quant-methods-"))
    try:
        for name in args.variants.split(","):
            precision, how = VARIANTS[name]
            started = time.perf_counter()
            art = _variant_artifact(fp32, samples, precision, how, work / name)
            with Pipeline.load(art, check_files="none") as pipe:
                lp = teacher_forced(pipe, ids)
            row = {"top1_agreement": float((lp.argmax(-1) == ref.argmax(-1)).mean()),
                   "mean_kl": float((np.exp(ref) * (ref - lp)).sum(-1).mean()),
                   "perplexity": float(np.exp(nll(lp))), "seconds": round(time.perf_counter() - started, 1)}
            row["perplexity_vs_fp32"] = row["perplexity"] / results["fp32_perplexity"] - 1
            results["variants"][name] = row
            print(name, {k: round(v, 4) for k, v in row.items()}, flush=True)
            shutil.rmtree(art, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = RESULTS / "quant_methods.json"
    if out.is_file():  # variants measured by earlier runs stay (same text, same fp32)
        earlier = json.loads(out.read_text())
        if earlier.get("text_tokens") == results["text_tokens"]:
            results["variants"] = {**earlier.get("variants", {}), **results["variants"]}
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
