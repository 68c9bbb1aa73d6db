"""How much of each LLM GEMM's input one int8 scale per tensor loses, on real weights (SmolLM2-135M).

    python -m benchmarks.quantization.gemm_input_error [--alphas 0,0.8] [--tokens 400]

Runs the real-weights fp32 artifact's `llm_ort` (packed as quantize packs it, then smoothed with each
alpha as quantize smooths it; 0: not smoothed) on the first tokens of benchmarks/data/english.txt, and
rounds every weight GEMM's input to int8 with one symmetric scale from its own absolute maximum (the
best a minmax calibration can do on these very tokens). Reports rel-L2 of that round trip per GEMM role:
mean and worst over the layers. Writes benchmarks/results/gemm_input_error.json.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks import RESULTS


def _role(name: str) -> str:
    """layers.3.down_proj -> down_proj; layers.3.q_proj.packed -> qkv; layers.3.gate_proj.packed -> gate_up."""
    if name.endswith(".packed"):
        return {"q_proj": "qkv", "gate_proj": "gate_up"}[name.split(".")[-2]]
    return name.split(".")[-1]


def errors(fp32: Path, samples: Path, ids: list[int], embeds: np.ndarray, alpha: float) -> dict:
    import onnx
    import onnxruntime as ort

    from jflow.calibration.llm_graph import pack_siblings
    from jflow.calibration.smooth import channel_maxima, smooth
    source = fp32 / "onnx" / "llm_ort.onnx"
    model = onnx.load(str(source), load_external_data=True)
    pack_siblings(model)
    if alpha:
        smooth(model, channel_maxima(model, source, samples), alpha)
    constant = {i.name for i in model.graph.initializer}
    inputs = {n.name: n.input[0] for n in model.graph.node
              if n.op_type in ("MatMul", "Gemm") and n.input[1] in constant}
    for tensor in set(inputs.values()):
        model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    n = len(ids)
    feeds = {"inputs_embeds": embeds[None].astype(np.float32), "position_ids": np.arange(n)[None],
             "seqlens_k": np.array([n - 1], np.int32), "query_seqlens": np.array([n], np.int32),
             "total_sequence_length": np.array(n, np.int32)}
    for i in session.get_inputs():
        if i.name.startswith("past_"):
            feeds[i.name] = np.zeros([1, i.shape[1], n, i.shape[3]], np.float32)
    names = sorted(set(inputs.values()))
    values = dict(zip(names, session.run(names, feeds)))
    by_role = defaultdict(list)
    for gemm, tensor in inputs.items():
        x = values[tensor].reshape(-1, values[tensor].shape[-1])
        scale = np.abs(x).max() / 127
        by_role[_role(gemm)].append(float(np.linalg.norm(x - np.round(x / scale) * scale) / np.linalg.norm(x)))
    return {role: {"mean": round(float(np.mean(e)), 4), "worst": round(float(np.max(e)), 4), "gemms": len(e)}
            for role, e in by_role.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alphas", default="0,0.8")
    parser.add_argument("--tokens", type=int, default=400)
    args = parser.parse_args()
    from benchmarks.fixtures.real_checkpoint import real_artifact
    from benchmarks.quantization.quant_accuracy import TEXT
    from benchmarks.quantization.samples import calibration_samples
    from jflow.runtime.pipeline import Pipeline
    from jflow.runtime.profile_stages import cpu_model
    fp32 = real_artifact("fp32")
    samples = calibration_samples(fp32) / "llm_ort"
    with Pipeline.load(fp32, check_files="none") as pipe:
        text = pipe.tokenizer.tokenizer.encode(TEXT.read_text(encoding="utf-8"), add_special_tokens=False).ids
        ids = [pipe.tokenizer.bos_id] + text[:args.tokens]
        embeds = pipe.embed(ids)
    results = {"machine": {"cpu_model": cpu_model()}, "tokens": len(ids), "alphas": {}}
    for alpha in (float(a) for a in args.alphas.split(",")):
        results["alphas"][str(alpha)] = errors(fp32, samples, ids, embeds, alpha)
        print(alpha, results["alphas"][str(alpha)], flush=True)
    (RESULTS / "gemm_input_error.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
