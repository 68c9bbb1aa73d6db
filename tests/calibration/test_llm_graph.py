"""GEMMs found by their role from the wiring: the same GEMMs in both LLM forms, and kept float when asked."""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from jflow.calibration.llm_graph import FLOAT_GEMMS, pack_siblings
from jflow.calibration.quantize import quantize_artifact


def _packed(art, name):
    model = onnx.load(str(art / "onnx" / f"{name}.onnx"), load_external_data=True)
    pack_siblings(model)
    return model


def _weights(model, names):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    return sorted(inits[nodes[n].input[1]].tobytes() for n in names)


def test_each_role_finds_one_gemm_per_layer_and_the_same_weights_in_both_forms(tiny_artifact, tiny_ref):
    layers = tiny_ref.model.config.language["num_hidden_layers"]
    fused, portable = _packed(tiny_artifact, "llm_ort"), _packed(tiny_artifact, "llm")
    for role, find in FLOAT_GEMMS.items():
        found = find(fused)
        assert len(found) == layers and all(n.endswith(f".{role}_proj") for n in found), (role, found)
        # The portable graph's nodes are anonymous (node_linear_7): same role, same weights.
        assert _weights(portable, find(portable)) == _weights(fused, found), role


def test_keep_float_down_alone_quantizes_the_attention_output_projections(tiny_artifact, photos, quantized, tmp_path,
                                                                     tiny_ref):
    layers = tiny_ref.model.config.language["num_hidden_layers"]
    out = quantize_artifact(tiny_artifact, tmp_path / "int8-down", "int8", calib=photos, samples=2, steps=3,
                            cache=quantized["int8"].parent / "cache",  # the session's calibration samples
                            keep_float=("down",), ort_int8="static", log=lambda _: None)  # both forms QDQ
    for name in ("llm", "llm_ort"):
        model = onnx.load(str(out / "onnx" / f"{name}.onnx"), load_external_data=False)
        inits = {i.name for i in model.graph.initializer}
        float_gemms = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
        assert len(float_gemms) == layers, (name, [n.name for n in float_gemms])
        assert FLOAT_GEMMS["o"](model) == [], name  # every o_proj reads a DequantizeLinear's weight
    from jflow.artifact.manifest import Manifest
    q = Manifest.load(out).data["quantization"]
    assert q["int8"]["llm_float_gemms"]["count"] == {"llm": layers, "llm_ort": layers}
    assert "the LLM's MLP down projections (int8)" in q["kept_float"]
    assert "the LLM's attention output projections (int8)" not in q["kept_float"]
