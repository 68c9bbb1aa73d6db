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

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from onnx import TensorProto

from jflow.calibration.tensors import Tensors

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


def channel_maxima(model, source: Path, samples: Path, tensors: Tensors | None = None) -> dict[str, np.ndarray]:
    """max |X_j| over every calibration sample for each smoothable GEMM of `model`, keyed by the digest of
    its weight. Measured on `source`, the float graph `model` was made from: packing renames no activations,
    and that file's weights are read where they lie (nothing is written)."""
    from jflow.calibration.ranges import observe
    keys = pair_keys(model, tensors)
    seen = observe(source, samples, channels=list(keys))
    return {keys[t]: m for t, m in seen.channels.items()}


def pair_keys(model, tensors: Tensors | None = None) -> dict[str, str]:
    """Each smoothable GEMM's input tensor -> the digest of its weight (the same in both LLM forms)."""
    tensors = tensors or Tensors(model)
    return {p.tensor: tensors.digest(p.weight) for p in find_pairs(model)}


def scales(model, maxima: dict[str, np.ndarray], alpha: float, skip: set[str] = frozenset(),
           tensors: Tensors | None = None) -> dict[str, np.ndarray]:
    """MatMul -> its smoothing scales s [K] (float32, as folded), for the smoothable GEMMs of `model` with
    measured maxima (in `maxima`) and not named in `skip` (kept float)."""
    tensors = tensors or Tensors(model)
    out = {}
    for pair in find_pairs(model):
        if pair.matmul in skip:
            continue
        x_max = maxima.get(tensors.digest(pair.weight))
        if x_max is None:
            continue
        weight = tensors.array(pair.weight).astype(np.float32, copy=False)
        if x_max.shape != (weight.shape[0],):
            continue
        w_max = np.abs(weight).max(axis=1)
        s = np.where((x_max > 0) & (w_max > 0),
                     np.power(np.maximum(x_max, 1e-5), alpha) / np.power(np.maximum(w_max, 1e-5), 1 - alpha), 1.0)
        out[pair.matmul] = np.clip(s, 1e-5, 1e5).astype(np.float32)
    return out


def smooth(model, maxima: dict[str, np.ndarray], alpha: float, skip: set[str] = frozenset(),
           tensors: Tensors | None = None) -> int:
    """Rewrite `model` in place (its weights where `tensors` reads them; default: loaded in `model`); returns
    how many GEMMs were smoothed. GEMMs without measured maxima (not in `maxima`) or named in `skip` (kept
    float) are left as they are."""
    tensors = tensors or Tensors(model)
    return fold_scales(model, scales(model, maxima, alpha, skip, tensors), tensors)


def fold_scales(model, scales: dict[str, np.ndarray], tensors: Tensors | None = None) -> int:
    """W rows *= s and the input's maker (gain or up columns) /= s, for each smoothable GEMM named in
    `scales` (MatMul name -> s [K]); every s computed beforehand from the original weights. Each change is a
    recipe on the tensor as it stands (made when read), in the pairs' order."""
    tensors = tensors or Tensors(model)
    inits = {i.name: i for i in model.graph.initializer}

    def change(name: str, how) -> None:
        before = tensors.reader(name)
        tensors.derive(name, lambda: how(before().astype(np.float32)), TensorProto.FLOAT, inits[name].dims)

    done = 0
    for pair in find_pairs(model):
        if pair.matmul not in scales:
            continue
        s = np.clip(scales[pair.matmul], 1e-5, 1e5).astype(np.float32)
        change(pair.weight, lambda w, s=s: w * s[:, None])
        if pair.kind == "gain":
            change(pair.source, lambda g, s=s: g / s)
        else:
            change(pair.source, lambda up, s=s, cols=pair.columns: _divide_columns(up, cols, s))
        done += 1
    return done


def _divide_columns(up: np.ndarray, columns: slice, s: np.ndarray) -> np.ndarray:
    up[:, columns] = up[:, columns] / s
    return up


def gemm_inputs(model, source: Path, samples: Path):
    """For each calibration sample, {weight digest: X} over the smoothable GEMMs of `model`, run on `source`
    (benchmarks/quantization/ searches scales on them)."""
    from jflow.calibration.collect import probe
    keys = pair_keys(model)
    for values in probe(source, list(keys), samples):
        yield {keys[t]: v for t, v in values.items()}


def pairs_with_weights(model):
    """(pair, its weight as float32) one at a time (model loaded with its weights; benchmarks/quantization's
    AWQ search scores each pair's weight)."""
    tensors = Tensors(model)
    for pair in find_pairs(model):
        yield pair, tensors.array(pair.weight).astype(np.float32, copy=False)
