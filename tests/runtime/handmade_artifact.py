"""A hand-made one-graph artifact (y = x*scale + b) for the manifest and verify tests."""

import json

import numpy as np
import pytest

from jflow.runtime.manifest import SCHEMA_VERSION, file_hashes


def save_double_model(path, scale=2.0, input_name="x"):
    """y = x*scale + b, x: float32 [batch, 4]."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    b = numpy_helper.from_array(np.arange(4, dtype=np.float32), "b")
    s = numpy_helper.from_array(np.array(scale, dtype=np.float32), "s")
    graph = helper.make_graph(
        [helper.make_node("Mul", [input_name, "s"], ["t"]), helper.make_node("Add", ["t", "b"], ["y"])],
        "double",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[b, s])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def write_manifest(root, **overrides):
    data = {
        "schema_version": SCHEMA_VERSION,
        "jflow_version": "0.1.0",
        "precision": "fp32",
        "precision_policy": [{"part": "everything", "fp16_build": "fp32", "why": "test"}],
        "model": {"model_type": "test"},
        "limits": {"max_batch": 2, "max_context": 16, "max_new_tokens": 8},
        "graphs": {"double": {
            "file": "onnx/double.onnx",
            "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", 4]}],
            "ranges": {"batch": {"min": 1, "opt": 1, "max": 2}},
        }},
        "reference": {"graphs": {"double": "reference/double.npz"}, "end_to_end": {}},
        "tools": {"numpy": np.__version__},
        "files": file_hashes(root),
    }
    data.update(overrides)
    (root / "manifest.json").write_text(json.dumps(data, indent=1))
    return data

