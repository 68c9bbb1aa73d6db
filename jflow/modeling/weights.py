"""Reading and writing JanusFlow weight files: single or sharded safetensors, or `.bin` without pickle code.

Every failure (missing, truncated, corrupt) becomes a CheckpointError naming the file and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from jflow.artifact.brief import listing
from jflow.json_file import BadJSON, read_json
from jflow.errors import CheckpointError

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a checkpoint folder, preferring safetensors."""
    for index_name in (SAFETENSORS_INDEX, BIN_INDEX):
        index = folder / index_name
        if index.is_file():
            return _files_from_index(index)
    for name in (SAFETENSORS, BIN):
        if (folder / name).is_file():
            return [folder / name]
    raise CheckpointError(f"{folder} holds no weights: expected {SAFETENSORS} (or {SAFETENSORS_INDEX} with its "
                          f"shards, or {BIN}); copy the weight files of the checkpoint there")


def _files_from_index(index: Path) -> list[Path]:
    try:
        weight_map = read_json(index)["weight_map"]  # bounded: size and nesting depth
    except (OSError, BadJSON, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index} is not a valid shard index (needs a 'weight_map'): {exc}") from exc
    files = [index.parent / name for name in sorted(set(weight_map.values()))]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"{index} names {len(missing)} shard(s) that are missing: {listing(missing)}")
    return files


def read_weights(folder: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint on the CPU, floating ones converted to `dtype`."""
    tensors: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        part = _read_safetensors(path) if path.suffix == ".safetensors" else _read_bin(path)
        for name, tensor in part.items():
            if name in tensors:
                raise CheckpointError(f"tensor {name!r} appears in more than one shard (again in {path.name})")
            tensors[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    return tensors


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # safetensors raises its own SafetensorError and plain OSError/ValueError
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}); download it again "
                              f"(a complete JanusFlow-1.3B model.safetensors is 4.09 GB)") from exc


def _read_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)  # never runs pickled code
    except Exception as exc:
        raise CheckpointError(f"{path} could not be read as a weights-only PyTorch file ({exc}); "
                              "prefer model.safetensors") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return data


def write_safetensors(tensors: dict[str, torch.Tensor], folder: Path, shard_bytes: int | None = None) -> None:
    """Write `model.safetensors`, or shards plus `model.safetensors.index.json` when shard_bytes is set."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {"format": "pt"}
    if shard_bytes is None:
        save_file(tensors, str(folder / SAFETENSORS), metadata=metadata)
        return
    shards: list[dict] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata=metadata)
        weight_map.update({key: name for key in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
