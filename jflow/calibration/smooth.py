"""SmoothQuant-style smoothing of the LLM before int8 quantization: an exact float rewrite, not a quantizer.

A few input channels of an LLM's GEMMs carry activations hundreds of times larger than the rest; with one
int8 scale per tensor, they leave the others a handful of levels. Smoothing divides channel j of a GEMM's
input X by s_j and multiplies row j of its weight W by s_j, so X @ W is unchanged in exact arithmetic:

    s_j = max|X_j| ** alpha / max|W_j,:| ** (1 - alpha)

(Xiao et al., SmoothQuant, 2023). The division is folded into whatever makes X, so nothing runs at
inference time: the RMSNorm gain feeding Q/K/V and gate/up, and the up_proj columns feeding down_proj
(X = silu(gate) * up is linear in up). o_proj's input (attention over V) is left alone.

Both LLM forms must end up with identical bytes (they share their weights), so the per-channel maxima are
measured once, on the first form, and keyed by the GEMM weight's content, which both forms share. Only
fp32 graphs are smoothed (quantize reads fp32 artifacts).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NORMS = ("Mul", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization")


@dataclass
class Pair:
    """One smoothable GEMM: its input tensor, its weight, and the initializer (and columns) making its input."""
    matmul: str
    tensor: str          # X
    weight: str          # W [K, N]
    source: str          # the gain [K] (kind "gain") or the up weight [., M] (kind "columns")
    kind: str
    columns: slice = field(default_factory=lambda: slice(None))


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:24]


def find_pairs(model) -> list[Pair]:
    """The GEMMs whose input is made by a norm gain or by an up projection, each used by that GEMM alone."""
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    outputs = {o.name for o in model.graph.output}
    pairs = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits or len(inits[node.input[1]].dims) != 2:
            continue
        x, k = node.input[0], inits[node.input[1]].dims[0]
        made = producer.get(x)
        if made is None or uses.get(x) != 1 or x in outputs:
            continue
        gains = [i for i in made.input if i in inits and list(inits[i].dims) == [k] and uses[i] == 1]
        if made.op_type in NORMS and made.output[0] == x and len(gains) == 1:
            pairs.append(Pair(node.name, x, node.input[1], gains[0], "gain"))
        elif made.op_type == "Mul" and not gains:
            up = _up_columns(made, inits, producer, uses, k)
            if up:
                pairs.append(Pair(node.name, x, node.input[1], *up))
    return pairs


def _up_columns(mul, inits, producer, uses, k: int):
    """(weight, "columns", slice) when one factor of `mul` comes straight from a constant-weight MatMul,
    or from one part of a Split of one (a packed gate/up), and feeds nothing else; None otherwise."""
    from onnx import numpy_helper
    for factor in mul.input:
        made = producer.get(factor)
        if made is None or uses.get(factor) != 1:
            continue
        if made.op_type == "MatMul" and made.input[1] in inits and inits[made.input[1]].dims[-1] == k:
            return made.input[1], "columns", slice(None)
        if made.op_type == "Split" and len(made.input) > 1 and made.input[1] in inits:
            packed = producer.get(made.input[0])
            if packed is None or packed.op_type != "MatMul" or packed.input[1] not in inits:
                continue
            sizes = numpy_helper.to_array(inits[made.input[1]]).tolist()
            index = list(made.output).index(factor)
            start = int(sum(sizes[:index]))
            if sizes[index] == k:
                return packed.input[1], "columns", slice(start, start + k)
    return None


def channel_maxima(model, source: Path, samples: Path) -> dict[str, np.ndarray]:
    """max |X_j| over every calibration sample for each smoothable GEMM of `model` (weights in memory),
    keyed by the digest of its weight. Measured on `source`, the float graph `model` was made from: packing
    renames no activations, and that file's weights are read where they lie (nothing is written)."""
    maxima: dict[str, np.ndarray] = {}
    for values in gemm_inputs(model, source, samples):
        for key, value in values.items():
            m = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            maxima[key] = np.maximum(maxima[key], m) if key in maxima else m
    return {k: m.astype(np.float32) for k, m in maxima.items()}


def gemm_inputs(model, source: Path, samples: Path):
    """For each calibration sample, {weight digest: X} over the smoothable GEMMs of `model` (see
    channel_maxima), run on `source` with no graph optimization so every X is there as it is."""
    from jflow.calibration.collect import probe
    inits = {i.name: i for i in model.graph.initializer}
    keys = {p.tensor: digest(_array(inits[p.weight])) for p in find_pairs(model)}
    for values in probe(source, list(keys), samples):
        yield {keys[t]: v for t, v in values.items()}


def _array(init) -> np.ndarray:
    from onnx import numpy_helper
    return numpy_helper.to_array(init)


def smooth(model, maxima: dict[str, np.ndarray], alpha: float, skip: set[str] = frozenset()) -> int:
    """Rewrite `model` (weights loaded in memory) in place; returns how many GEMMs were smoothed. GEMMs
    without measured maxima (not in `maxima`) or named in `skip` (kept float) are left as they are."""
    scales = {}
    for pair, weight in _pairs_with_weights(model):
        x_max = maxima.get(digest(weight))
        if pair.matmul in skip or x_max is None or x_max.shape != (weight.shape[0],):
            continue
        w_max = np.abs(weight).max(axis=1)
        s = np.where((x_max > 0) & (w_max > 0),
                     np.power(np.maximum(x_max, 1e-5), alpha) / np.power(np.maximum(w_max, 1e-5), 1 - alpha), 1.0)
        scales[pair.matmul] = s
    return fold_scales(model, scales)


def _pairs_with_weights(model):
    """(pair, its weight as float32) one at a time: nothing is kept beyond the caller's use."""
    inits = {i.name: i for i in model.graph.initializer}
    for pair in find_pairs(model):
        yield pair, _array(inits[pair.weight]).astype(np.float32, copy=False)


def fold_scales(model, scales: dict[str, np.ndarray]) -> int:
    """W rows *= s and the input's maker (gain or up columns) /= s, for each smoothable GEMM named in
    `scales` (MatMul name -> s [K]); every s computed beforehand from the original weights."""
    from onnx import numpy_helper
    inits = {i.name: i for i in model.graph.initializer}
    arrays: dict[str, np.ndarray] = {}

    def array(name: str) -> np.ndarray:
        if name not in arrays:
            arrays[name] = _array(inits[name]).astype(np.float32)  # a copy, changed below
        return arrays[name]

    done = 0
    for pair in find_pairs(model):
        if pair.matmul not in scales:
            continue
        s = np.clip(scales[pair.matmul], 1e-5, 1e5).astype(np.float32)
        arrays[pair.weight] = array(pair.weight) * s[:, None]
        if pair.kind == "gain":
            arrays[pair.source] = array(pair.source) / s
        else:
            source = array(pair.source)
            source[:, pair.columns] = source[:, pair.columns] / s
        done += 1
    for name, value in arrays.items():
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    return done
