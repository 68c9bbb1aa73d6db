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


def share_with(primary: Path, secondary: Path, min_bytes: int = 1024) -> int:
    """Rewrite `secondary` (a graph saved with its weights in one external-data file next to it) so every
    weight whose bytes equal one of `primary`'s points into `primary`'s data file; the rest is written
    again to secondary's own data file. Both files must sit in the same folder. Returns the bytes saved."""
    import onnx
    from onnx import numpy_helper
    if primary.parent.resolve() != secondary.parent.resolve():
        raise ValueError("jflow bug: graphs that share weights must sit in the same folder")
    shared = SharedWeights(primary)
    model = onnx.load(str(secondary), load_external_data=True)
    saved = 0
    for init in model.graph.initializer:
        if not init.HasField("raw_data"):  # e.g. int32_data: the stored bytes are what files hold and share
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init), init.name))
        ref = shared.reference(init.name, init.raw_data, list(init.dims), init.data_type) \
            if len(init.raw_data) >= min_bytes else None
        if ref is not None:
            saved += len(init.raw_data)
            init.CopyFrom(ref)
    own = f"{secondary.name}.data"
    (secondary.parent / own).unlink(missing_ok=True)
    onnx.save(model, str(secondary), save_as_external_data=True, location=own, size_threshold=min_bytes,
              all_tensors_to_one_file=True)
    if not any(i.data_location == onnx.TensorProto.EXTERNAL and _external(i)["location"] == own
               for i in onnx.load(str(secondary), load_external_data=False).graph.initializer):
        (secondary.parent / own).unlink(missing_ok=True)  # everything was shared
    return saved
