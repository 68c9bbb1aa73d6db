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
    # percentile and entropy: onnxruntime's histogram calibrators were still at their first variant after 25
    # minutes here (2 cores); not in the recorded results.
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
    "int8-smooth0.9-down-float": ("int8", {"method": "minmax", "smooth": 0.9, "float": ("down_proj",)}),
    # Not a TensorRT form (per-call asymmetric uint8 activation ranges): what llm_ort, an ORT-only graph,
    # would gain from ORT's dynamic quantization (DynamicQuantizeMatMul).
    "int8-dynamic": ("int8", {"dynamic": True}),
    "int4-sym-g32": ("int4", {"block": 32, "symmetric": True}),
    "int4-sym-g16": ("int4", {"block": 16, "symmetric": True}),
    "int4-asym-g32": ("int4", {"block": 32, "symmetric": False}),
    "int4-sym-g32-lm_head-float": ("int4", {"block": 32, "symmetric": True, "float": ("lm_head",)}),
    "int4-awq-g32": ("int4", {"block": 32, "symmetric": True, "awq": True}),
    "int4-awq-g32-lm_head-float": ("int4", {"block": 32, "symmetric": True, "awq": True, "float": ("lm_head",)}),
    "int4-sym-g32-smooth0.3": ("int4", {"block": 32, "symmetric": True, "smooth": 0.3}),
    "int4-sym-g32-smooth0.5": ("int4", {"block": 32, "symmetric": True, "smooth": 0.5}),
}


def _variant_artifact(fp32: Path, samples: Path, precision: str, how: dict, out: Path) -> Path:
    """A copy of the fp32 artifact whose llm_ort is this variant."""
    import onnx

    from jflow.artifact.manifest import Manifest, update_manifest
    from jflow.calibration import quantize as q
    # A real copy: onnx refuses to read weights from a hard-linked file, and a link would also make the
    # source artifact unreadable to a `jflow-export quantize` running meanwhile.
    shutil.copytree(fp32, out)
    target = out / "onnx" / "llm_ort.onnx"
    target.unlink()
    m = Manifest.load(fp32, check_files=False)
    if how.get("dynamic"):
        _dynamic(fp32 / "onnx" / "llm_ort.onnx", target)
    elif precision == "int8":
        model = onnx.load(str(fp32 / "onnx" / "llm_ort.onnx"), load_external_data=False)
        keep = [n.name for n in model.graph.node if any(n.name.endswith(s) for s in how.get("float", ()))]
        smoothing = {"alpha": how["smooth"], "maxima": None, "gemms": {}} if how.get("smooth") else None
        q._int8(m, "llm_ort", target, samples / "llm_ort", how["method"], exclude=keep, smoothing=smoothing)
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


def _fake_int4(w: np.ndarray, block: int) -> np.ndarray:
    """Symmetric int4 round trip in blocks along the input dimension (what MatMulNBitsQuantizer writes)."""
    k, n = w.shape
    b = w.reshape(k // block, block, n)
    scale = np.abs(b).max(axis=1, keepdims=True) / 7
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


def _dynamic(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from jflow.calibration import quantize as q
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
    q._finish(target)


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
