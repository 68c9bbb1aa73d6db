"""Does onnxruntime's bundled GPTQ correct rounding errors? Layer by layer, on the real-weights LLM.

    python -m benchmarks.quantization.gptq_check [--layers 1,15,29]

For the packed GEMMs of a few layers of the real-weights llm_ort (quant_methods.py's set-up: lm_head as a
MatMul, Q/K/V and gate/up packed), H = X^T X over the cached calibration samples, and the relative output
error on those same inputs, tr((W-Q)^T H (W-Q)) / tr(W^T H W), of three int4 round trips on GPTQ's
symmetric grid in blocks of 32: rounding to nearest, onnxruntime's `gptq` (what GPTQWeightOnlyQuantConfig
runs) and GPTQ as published (int4_rounding.gptq). GPTQ minimizes exactly this error, so a working one must
come out well below rounding. Also the share of weights where onnxruntime's result differs from rounding.
Writes benchmarks/results/gptq_check.json.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks import RESULTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default="1,15,29")
    args = parser.parse_args()
    import onnx
    from onnx import numpy_helper
    from onnxruntime import __version__ as ort_version
    from onnxruntime.quantization.neural_compressor.weight_only import gptq
    from benchmarks.fixtures.real_checkpoint import real_artifact
    from benchmarks.quantization.int4_rounding import GPTQ_STEP, fake_int4, matmul_hessians
    from benchmarks.quantization.int4_rounding import gptq as published_gptq
    from benchmarks.quantization.samples import calibration_samples
    from jflow.calibration.llm_graph import pack_siblings
    from jflow.calibration.llm_graph import gemm_as_matmul
    from jflow.runtime.profile_stages import cpu_model
    fp32 = real_artifact("fp32")
    samples = calibration_samples(fp32) / "llm_ort"
    source = fp32 / "onnx" / "llm_ort.onnx"
    model = onnx.load(str(source), load_external_data=True)
    gemm_as_matmul(model)
    pack_siblings(model)
    layers = tuple(f"layers.{n}." for n in args.layers.split(","))
    inits = {i.name: i for i in model.graph.initializer}
    picked = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits and n.name.startswith(layers)]
    hessians = matmul_hessians(model, source, samples)
    rows = {}
    for node in picked:
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        h = hessians[node.input[0]]
        error = lambda fake: float(np.trace((w - fake).T @ h @ (w - fake)) / np.trace(w.T @ h @ w))  # noqa: B023,E731
        rtn, ours = fake_int4(w, 32, GPTQ_STEP), published_gptq(w, h, 32)
        ort_q = gptq(w.copy(), h.copy(), num_bits=4, group_size=32, scheme="sym")
        rows[node.name] = {"rtn": error(rtn), "onnxruntime_gptq": error(ort_q), "published_gptq": error(ours),
                           "onnxruntime_differs_from_rtn": float((np.abs(ort_q - rtn) > 1e-6 * np.abs(w).max()).mean())}
        print(node.name, {k: round(v, 6) for k, v in rows[node.name].items()}, flush=True)
    out = RESULTS / "gptq_check.json"
    out.write_text(json.dumps({"machine": {"cpu_model": cpu_model()}, "onnxruntime": ort_version,
                               "weights": "SmolLM2-135M-Instruct (real_checkpoint.py)", "gemms": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
