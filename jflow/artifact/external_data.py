"""Weights shared between graph files by content, so an artifact stores each weight once.

The portable `llm` graph and its ONNX Runtime form multiply by exactly the same weight tensors (in fp32,
fp16 and, after the same quantizer, int8/int4). A weight of a second graph whose bytes equal one in the
first graph's external-data file is written as a reference to that file's offset: ONNX Runtime and
TensorRT read it from there. Needs `onnx` (host side: export and quantize), never torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def _external(tensor) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


class SharedWeights:
    """The external initializers of one graph file, indexed by the sha256 of their bytes."""

    def __init__(self, graph: Path):
        import onnx
        from onnx import TensorProto
        model = onnx.load(str(graph), load_external_data=False)
        self.folder = graph.parent
        self.by_digest: dict[str, dict] = {}
        handles = {}
        try:
            for init in model.graph.initializer:
                if init.data_location != TensorProto.EXTERNAL:
                    continue
                where = _external(init)
                f = handles.get(where["location"]) or handles.setdefault(
                    where["location"], open(self.folder / where["location"], "rb"))
                f.seek(int(where.get("offset", 0)))
                digest = hashlib.sha256(f.read(int(where["length"]))).hexdigest()
                self.by_digest[digest] = {"dims": list(init.dims), "type": init.data_type, "where": where}
        finally:
            for f in handles.values():
                f.close()

    def reference(self, name: str, data: bytes, dims: list[int], data_type: int):
        """A TensorProto named `name` pointing at the same bytes in this graph's data file, or None."""
        from onnx import TensorProto
        hit = self.by_digest.get(hashlib.sha256(data).hexdigest())
        if hit is None or hit["dims"] != list(dims) or hit["type"] != data_type:
            return None
        tensor = TensorProto(name=name, data_type=data_type, dims=dims)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in hit["where"].items():
            tensor.external_data.add(key=key, value=value)
        return tensor

    def find(self, name: str, array: np.ndarray):
        """`reference` for a numpy array."""
        from onnx import helper
        array = np.ascontiguousarray(array)
        return self.reference(name, array.tobytes(), list(array.shape), helper.np_dtype_to_tensor_dtype(array.dtype))
