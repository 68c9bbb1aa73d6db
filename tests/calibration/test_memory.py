"""quantize holds one weight at a time, not a copy of the model: its memory must not grow with the model.

A synthetic graph of 16 layers of packable Q/K/V MatMuls (200 MB of fp32 weights in external data) is
quantized in a fresh process, whose peak RSS growth is compared with the weights' size. onnxruntime's
tools took the whole model into protobuf and copied it (22 GB resident for the 1.3B LLM's 6.6 GB)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTH, LAYERS = 1024, 16


def _stacked_qkv(path):
    rng = np.random.default_rng(0)
    nodes, inits, h = [], [], "x"
    for i in range(LAYERS):
        outs = []
        for part in "qkv":
            w = f"l{i}.{part}"
            inits.append(numpy_helper.from_array(rng.standard_normal((WIDTH, WIDTH), np.float32), w))
            nodes.append(helper.make_node("MatMul", [h, w], [f"{w}/out"], name=f"{w}_proj"))
            outs.append(f"{w}/out")
        nodes.append(helper.make_node("Sum", outs, [f"h{i}"], name=f"sum{i}"))
        h = f"h{i}"
    graph = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, WIDTH])],
                              [helper.make_tensor_value_info(h, TensorProto.FLOAT, [1, 4, WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(path), save_as_external_data=True, location=f"{path.name}.data", size_threshold=1024)
    return LAYERS * 3 * WIDTH * WIDTH * 4


def _peak_growth(code: str) -> dict:
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


PRELUDE = """
import json, resource, sys
from pathlib import Path
import numpy as np
import onnx, onnxruntime
import jflow.calibration.quantize as q
from jflow.calibration.recipe import QuantRecipe
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
src, out = Path(sys.argv[1] if len(sys.argv) > 1 else "{src}"), Path("{out}")
base = rss()
"""


def test_int4_and_int8_writing_hold_one_weight_not_the_model(tmp_path):
    src = tmp_path / "stack.onnx"
    weights = _stacked_qkv(src)
    int4 = _peak_growth(PRELUDE.format(src=src, out=tmp_path / "int4.onnx") + """
q.quantize_llm_int4(src, out, QuantRecipe("int4", block_size=32))
print(json.dumps({"growth": rss() - base}))
""")
    int8 = _peak_growth(PRELUDE.format(src=src, out=tmp_path / "int8.onnx") + """
from jflow.calibration.gemms import open_graph
from jflow.calibration.qdq import write_int8
graph = open_graph(src, "llm")  # an LLM form: Q/K/V packed (made when read), then quantized
scales = {graph.nodes[g].input[0]: np.float32(0.05) for g in graph.gemms}
write_int8(graph.model, graph.tensors, out, graph.gemms, scales)
print(json.dumps({"growth": rss() - base, "gemms": len(graph.gemms)}))
""")
    assert int8["gemms"] == LAYERS  # one packed GEMM per layer
    # one packed layer is 12 MB of fp32 (its parts read, joined, quantized): far below the 200 MB model
    for name, seen in (("int4", int4), ("int8", int8)):
        assert seen["growth"] < 0.25 * weights, (name, seen["growth"] / 2**20, weights / 2**20)
    model = onnx.load(str(tmp_path / "int4.onnx"), load_external_data=False)
    assert sum(n.op_type == "DequantizeLinear" for n in model.graph.node) == LAYERS
