"""The ONNX Runtime form of the llm graph: fused ops after ORT's optimization, and every weight shared
with the portable graph (stored once)."""

import collections

import onnx
import onnxruntime as ort
import pytest

from jflow.export.llm import kv_geometry


def _optimized_ops(path, tmp_path):
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.opt.onnx")
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "opt.data")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    model = onnx.load(options.optimized_model_filepath, load_external_data=False)
    return collections.Counter(n.op_type for n in model.graph.node)


def test_fused_attention_and_norms_and_far_fewer_nodes(tiny_artifact, tiny_ref, tmp_path):
    layers = kv_geometry(tiny_ref.model.config)[0]
    fused = _optimized_ops(tiny_artifact / "onnx" / "llm_ort.onnx", tmp_path)
    portable = _optimized_ops(tiny_artifact / "onnx" / "llm.onnx", tmp_path)
    assert fused["GroupQueryAttention"] == layers and fused["SkipSimplifiedLayerNormalization"] == 2 * layers
    assert fused["MatMul"] == 7 * layers and fused["SimplifiedLayerNormalization"] == 1
    for op in ("Softmax", "Concat", "Expand", "IsNaN", "Pow", "ReduceMean", "Where"):
        assert fused[op] == 0, op  # no unfused attention, no concat KV, no unfused RMSNorm
    assert sum(fused.values()) * 3 < sum(portable.values())


def test_every_tensor_is_typed_for_tools_that_read_the_graph(tiny_artifact):
    # ONNX shape inference does not know the com.microsoft ops: the graph declares its tensors' types.
    model = onnx.load(str(tiny_artifact / "onnx" / "llm_ort.onnx"), load_external_data=False)
    typed = {v.name for v in list(model.graph.value_info) + list(model.graph.output)}
    untyped = [o for n in model.graph.node for o in n.output if o and o not in typed]
    assert untyped == []


def test_every_weight_is_read_from_the_portable_graphs_file(tiny_artifact):
    model = onnx.load(str(tiny_artifact / "onnx" / "llm_ort.onnx"), load_external_data=False)
    external = [i for i in model.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
    locations = {e.value for i in external for e in i.external_data if e.key == "location"}
    assert locations == {"llm.onnx.data"} and not (tiny_artifact / "onnx" / "llm_ort.onnx.data").exists()
    inline = sum(len(i.raw_data) for i in model.graph.initializer if i.data_location != onnx.TensorProto.EXTERNAL)
    assert inline < 128 * 1024  # only the rotary table (2 x 1024 x 8 floats here) and the norm weights
    names = {i.name for i in external}
    assert {"layers.0.q_proj.weight", "layers.0.down_proj.weight", "lm_head.weight"} <= names


def test_a_weight_missing_from_the_portable_graph_is_a_bug_not_a_second_copy(tiny_ref, tmp_path):
    import torch

    from jflow.artifact.spec import Limits
    from jflow.export import llm_ort
    from jflow.modeling import build_tiny
    other = build_tiny(seed=9)  # different weights: none of them is in tiny_ref's data file
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    from jflow.export import llm
    from jflow.export.onnx_export import export_graph
    spec = llm.spec(tiny_ref.model.config, Limits())
    example = llm.example(tiny_ref.model.config, torch.Generator().manual_seed(0))
    export_graph(llm.LlmGraph(tiny_ref.model), spec, example, onnx_dir / "llm.onnx")
    with pytest.raises(RuntimeError, match="would store it twice"):
        llm_ort.build_model(other.model.language_model, other.model.config, Limits(), "float32",
                            onnx_dir / "llm.onnx", inline_limit=0)
