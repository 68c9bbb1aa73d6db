"""What each quantization method buys on the real-weights LLM (SmolLM2-135M), teacher-forced on held-out text.

    python benchmarks/quant_methods.py [--variants int8-minmax,int4-sym-g32,...]

For each variant only the LLM's ONNX Runtime form is quantized (from the cached calibration samples of
the real-weights fp32 artifact; run `jflow-export quantize` on it once first), in a copy of that
artifact, and scored against fp32 exactly as quant_accuracy.py scores whole artifacts: top-1
agreement, mean KL(fp32 || variant) and perplexity over benchmarks/data/english.txt.
Writes benchmarks/results/quant_methods.json, keeping the variants earlier runs measured there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

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
    # result at percdamp 0.01, 0.001 and 1e-5); GPTQ as published (_gptq, a measurement, not product).
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


def _variant_artifact(fp32: Path, samples: Path, precision: str, how: dict, out: Path) -> Path:
    """A copy of the fp32 artifact whose llm_ort is this variant."""
    import onnx

    from jflow.artifact.manifest import Manifest, update_manifest
    from jflow.calibration import quantize as q
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
        keep = [n.name for n in model.graph.node if any(n.name.endswith(s) for s in how.get("float", ()))]
        smoothing = {"alpha": how["smooth"], "gemms": {}} if how.get("smooth") else None
        q._int8(m, "llm_ort", target, samples / "llm_ort", how["method"], exclude=keep, smoothing=smoothing,
                keep_float=how.get("roles", ()))
    elif how.get("smooth") or how.get("awq"):  # activation-aware scales folded in before int4
        from jflow.calibration.llm_graph import pack_siblings
        from jflow.calibration.smooth import channel_maxima, fold_scales, smooth
        source = fp32 / "onnx" / "llm_ort.onnx"
        model = onnx.load(str(source), load_external_data=True)
        pack_siblings(model)
        if how.get("awq"):
            fold_scales(model, _awq_scales(model, source, samples / "llm_ort", how["block"]))
        else:  # one alpha for every GEMM, no search
            smooth(model, channel_maxima(model, source, samples / "llm_ort"), how["smooth"])
        scaled = out / "scaled.onnx"
        onnx.save(model, str(scaled), save_as_external_data=True, location="scaled.onnx.data", size_threshold=1024)
        q._int4(scaled, target, how["block"], symmetric=how["symmetric"], exclude=how.get("float", ()))
        scaled.unlink()
        (out / "scaled.onnx.data").unlink()
    else:
        q._int4(fp32 / "onnx" / "llm_ort.onnx", target, how["block"], symmetric=how["symmetric"],
                exclude=how.get("float", ()))
    graphs = {**m.graphs, "llm_ort": {**m.graphs["llm_ort"], "precision": precision}}
    update_manifest(out, {"graphs": graphs}, rehash=["onnx/llm_ort.onnx", "onnx/llm_ort.onnx.data"])
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


# int4 scale = absmax * a / b. AWQ_STEP: the grid the AWQ search scores on. It is near, not equal to, what
# MatMulNBitsQuantizer writes (scale = the block's largest-magnitude weight / -8, so that weight lands on -8).
AWQ_STEP, GPTQ_STEP = (1, 7), (2, 15)


def _fake_int4(w: np.ndarray, block: int, step: tuple[int, int] = AWQ_STEP) -> np.ndarray:
    """Symmetric int4 round trip (levels -8..7) in blocks along the input dimension, scale = absmax * a / b."""
    k, n = w.shape
    b = w.reshape(k // block, block, n)
    scale = np.abs(b).max(axis=1, keepdims=True) * step[0] / step[1]
    scale[scale == 0] = 1
    return (np.clip(np.round(b / scale), -8, 7) * scale).reshape(k, n)


def _awq_scales(model, source: Path, samples: Path, block: int, rows: int = 256, grid: int = 20) -> dict:
    """AWQ's search (Lin et al., 2024) for each smoothable GEMM: s = mean|X|^a, a on a grid, the one whose
    int4 round trip of W*s, divided back, best reproduces X @ W on calibration rows."""
    from jflow.calibration.smooth import _pairs_with_weights, digest, gemm_inputs
    rng = np.random.default_rng(0)
    xs: dict[str, list] = {}
    for values in gemm_inputs(model, source, samples):
        for key, v in values.items():
            v = v.reshape(-1, v.shape[-1])
            xs.setdefault(key, []).append(v[rng.choice(len(v), min(len(v), 64), replace=False)])
    scales = {}
    for pair, w in _pairs_with_weights(model):
        x = np.concatenate(xs[digest(w)])
        x = x[rng.choice(len(x), min(len(x), rows), replace=False)]
        ref, mean = x @ w, np.abs(x).mean(axis=0) + 1e-6
        best = (np.linalg.norm(x @ _fake_int4(w, block) - ref), np.ones_like(mean))
        for a in np.arange(1, grid) / grid:
            s = mean ** a
            s = s / np.sqrt(s.max() * s.min())
            err = np.linalg.norm(x @ (_fake_int4(w * s[:, None], block) / s[:, None]) - ref)
            if err < best[0]:
                best = (err, s)
        scales[pair.matmul] = best[1]
    return scales


def _matmul_hessians(model, source: Path, samples: Path) -> dict[str, np.ndarray]:
    """X^T X / n (float64) for the input X of every constant-weight MatMul of `model`, probed on `source`."""
    from jflow.calibration.collect import probe
    inits = {i.name for i in model.graph.initializer}
    tensors = sorted({n.input[0] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits})
    sums, count = {}, 0
    for values in probe(source, tensors, samples):
        for t, x in values.items():
            x = x.reshape(-1, x.shape[-1]).astype(np.float64)
            sums[t] = sums.get(t, 0) + x.T @ x
        count += x.shape[0]
    return {t: h / count for t, h in sums.items()}


def _gptq(w: np.ndarray, h: np.ndarray, group: int, damp: float = 0.01, blocksize: int = 128) -> np.ndarray:
    """GPTQ (Frantar et al., 2023) for W [K, N] (rows: input channels) with H = X^T X: rows rounded in order,
    each row's rounding error spread over the rows not yet rounded through the upper Cholesky factor of
    H^-1; a group's scale is taken when its first row is reached. Returns the round-tripped weights."""
    w, h = w.astype(np.float64).copy(), h.copy()
    k = w.shape[0]
    dead = np.diag(h) == 0
    h[dead, dead], w[dead] = 1, 0
    h[np.diag_indices(k)] += damp * np.mean(np.diag(h))
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    out = np.zeros_like(w)
    for i1 in range(0, k, blocksize):
        i2 = min(i1 + blocksize, k)
        w1, errors = w[i1:i2].copy(), np.zeros((i2 - i1, w.shape[1]))
        for i in range(i2 - i1):
            if (i1 + i) % group == 0:
                scale = np.abs(w1[i:i + group]).max(axis=0) * 2 / 15
                scale[scale == 0] = 1
            out[i1 + i] = np.clip(np.round(w1[i] / scale), -8, 7) * scale
            errors[i] = (w1[i] - out[i1 + i]) / u[i1 + i, i1 + i]
            w1[i:] -= np.outer(u[i1 + i, i1 + i:i2], errors[i])
        w[i2:] -= u[i1:i2, i2:].T @ errors
    return out.astype(np.float32)


def _simulated(source: Path, target: Path, samples: Path, block: int, how: str, damp: float = 0.01) -> None:
    """llm_ort packed, lm_head as a MatMul, every constant-weight MatMul's weight replaced by its int4
    round trip (GPTQ or plain rounding on GPTQ's grid), stored as float."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization.neural_compressor.weight_only import gptq

    from jflow.calibration import quantize as q
    from jflow.calibration.llm_graph import pack_siblings
    model = onnx.load(str(source), load_external_data=True)
    q._gemm_as_matmul(model)
    pack_siblings(model)
    hessians = _matmul_hessians(model, source, samples) if "gptq" in how else {}
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        if how == "gptq":
            fake = _gptq(w, hessians[node.input[0]], block, damp)
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
            fake = _fake_int4(w, block, GPTQ_STEP)
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
    from quant_accuracy import TEXT, teacher_forced
    from real_checkpoint import real_artifact

    from jflow.calibration.collect import collect_samples
    from jflow.calibration.data import calibration_set
    from jflow.calibration.quantize import _cache_dir
    from jflow.runtime.pipeline import Pipeline
    from jflow.runtime.profile_stages import cpu_model
    fp32 = real_artifact("fp32")
    samples = collect_samples(fp32, calibration_set(8), _cache_dir(), log=lambda _: None)
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
    out = HERE / "results" / "quant_methods.json"
    if out.is_file():  # variants measured by earlier runs stay (same text, same fp32)
        earlier = json.loads(out.read_text())
        if earlier.get("text_tokens") == results["text_tokens"]:
            results["variants"] = {**earlier.get("variants", {}), **results["variants"]}
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
