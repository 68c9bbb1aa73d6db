"""A graph's weights read one at a time where they lie, and a quantized graph's written one at a time.

`onnx.load(load_external_data=True)` pulls every weight of a graph into protobuf (6.6 GB for the 1.3B LLM in
fp32), and each tool handed that ModelProto copies it again: quantizing the full-size model that way ran out
of 24 GB. Here a graph is loaded without its weights. `Tensors` reads an initializer's bytes from its
external-data file when asked and holds nothing after; weights made from others (packed Q/K/V, smoothed
rows) are recipes, computed when read. `DataWriter` appends the output graph's tensors to its data file as
they are made, each stored once (or as a reference into another graph's file holding the same bytes).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

INLINE = 1024  # tensors smaller than this (bytes) stay in the graph file, as onnx.save's size_threshold


def _read_external(folder: Path, init) -> Callable[[], np.ndarray]:
    from onnx import helper
    where = {e.key: e.value for e in init.external_data}
    path, offset = folder / where["location"], int(where.get("offset", 0))
    dtype, dims = helper.tensor_dtype_to_np_dtype(init.data_type), tuple(init.dims)
    count = int(np.prod(dims, dtype=np.int64))

    def read() -> np.ndarray:
        return np.fromfile(path, dtype=dtype, count=count, offset=offset).reshape(dims)
    return read


def digest(array: np.ndarray) -> str:
    """A weight's content key: equal bytes (the same weight in both LLM forms) give equal keys."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:24]


class Tensors:
    """The initializer values of `model`. With `folder` (where its external data lies), weights are read
    from disk when asked and made ones are computed when read; without, the model holds its weights (loaded
    with them) and made ones are stored in it at once."""

    def __init__(self, model, folder: Path | None = None, known: dict | None = None):
        from onnx import TensorProto, numpy_helper
        self.model, self.folder = model, folder
        self.readers: dict[str, Callable[[], np.ndarray]] = {}
        self.digests: dict[str, str] = {}
        # Where each weight lies as read (file, offset, type, dims) and the digests of such places: `known`, shared
        # by two graphs over one data file (the fp32 LLM forms), hashes each place once for both.
        self.places: dict[str, tuple] = {}
        self.known = {} if known is None else known
        for init in model.graph.initializer:
            if init.data_location == TensorProto.EXTERNAL:
                if folder is None:
                    raise ValueError(f"jflow bug: {init.name} lies in external data and no folder was given")
                self.readers[init.name] = _read_external(folder, init)
                where = {e.key: e.value for e in init.external_data}
                self.places[init.name] = (str((folder / where["location"]).resolve()), where.get("offset", "0"),
                                          init.data_type, tuple(init.dims))
            else:
                self.readers[init.name] = (lambda init=init: numpy_helper.to_array(init))

    def array(self, name: str) -> np.ndarray:
        return self.readers[name]()

    def digest(self, name: str) -> str:
        """The content digest of `name` as it stands (`digest`), computed once."""
        if name not in self.digests:
            place = self.places.get(name)
            if place is not None and place in self.known:
                self.digests[name] = self.known[place]
            else:
                self.digests[name] = digest(self.array(name))
                if place is not None:
                    self.known[place] = self.digests[name]
        return self.digests[name]

    def reader(self, name: str) -> Callable[[], np.ndarray]:
        """What reads `name` now (a later `derive` of the same name does not change it)."""
        return self.readers[name]

    def derive(self, name: str, make: Callable[[], np.ndarray], data_type: int, dims, made_from=None) -> None:
        """Initializer `name` (added, or replacing one) is `make()`, of the stated type and shape. `made_from`:
        a key naming the recipe by where its inputs lie (e.g. ("concat", places)), so its digest is known too."""
        from onnx import TensorProto, helper, numpy_helper
        self.digests.pop(name, None)
        self.places.pop(name, None)  # made, not read where it lay
        if made_from is not None:
            self.places[name] = (made_from, data_type, tuple(dims))
        nbytes = int(np.prod(dims, dtype=np.int64)) * helper.tensor_dtype_to_np_dtype(data_type).itemsize
        if self.folder is None or nbytes < INLINE:  # small ones in the graph: find_pairs reads Split sizes
            value = np.asarray(make(), order="C")
            tensor = numpy_helper.from_array(value, name)
            self.readers[name] = (lambda tensor=tensor: numpy_helper.to_array(tensor))
        else:
            tensor = TensorProto(name=name, data_type=data_type, dims=list(dims))
            tensor.data_location = TensorProto.EXTERNAL  # a recipe: no bytes anywhere until written
            self.readers[name] = make
        for i, init in enumerate(self.model.graph.initializer):
            if init.name == name:
                self.model.graph.initializer[i].CopyFrom(tensor)
                return
        self.model.graph.initializer.append(tensor)


class DataWriter:
    """The initializers of a graph file being written, appended to its one external-data file (or kept in
    the graph file when small); with `shared`, a tensor whose bytes already lie in that graph's data file
    (the other LLM form's) is written as a reference to them."""

    def __init__(self, target: Path, shared: Path | None = None):
        from jflow.artifact.external_data import SharedWeights
        self.target, self.location = target, f"{target.name}.data"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(target.parent / self.location, "wb")
        self.shared = SharedWeights(shared) if shared else None
        self.tensors: list = []
        self.names: set[str] = set()
        self.shared_bytes = 0

    def add(self, name: str, array: np.ndarray) -> None:
        from onnx import helper
        array = np.asarray(array, order="C")  # (ascontiguousarray makes a 0-d array 1-d)
        self.add_bytes(name, memoryview(array.reshape(-1).view(np.uint8)), helper.np_dtype_to_tensor_dtype(array.dtype),
                       list(array.shape))

    def add_bytes(self, name: str, data, data_type: int, dims: list[int]) -> None:
        from onnx import TensorProto
        if name in self.names:
            return
        self.names.add(name)
        if len(data) < INLINE:
            tensor = TensorProto(name=name, data_type=data_type, dims=dims, raw_data=bytes(data))
        else:
            tensor = self.shared.reference(name, data, dims, data_type) if self.shared else None  # hashed in place
            if tensor is not None:
                self.shared_bytes += len(data)
            else:
                offset = self.file.tell()
                self.file.write(data)
                tensor = TensorProto(name=name, data_type=data_type, dims=dims)
                tensor.data_location = TensorProto.EXTERNAL
                for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(len(data)))):
                    tensor.external_data.add(key=key, value=value)
        self.tensors.append(tensor)

    def save(self, model) -> None:
        """Write the graph file: `model`'s nodes with the initializers written here (its own are dropped)."""
        import onnx
        self.file.close()
        del model.graph.initializer[:]
        model.graph.initializer.extend(self.tensors)
        onnx.save(model, str(self.target))
        if not (self.target.parent / self.location).stat().st_size:
            (self.target.parent / self.location).unlink()  # everything shared or small

    def close(self) -> None:
        self.file.close()
