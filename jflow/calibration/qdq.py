"""QuantizeLinear/DequantizeLinear written into a graph, one weight at a time.

The graphs are those onnxruntime's quantizers write (the same node and tensor names, the same numbers: its
per-channel formula, its int4 kernel), made here from ranges measured beforehand and with each weight read,
quantized and appended to the output file before the next: onnxruntime's quantize_static and
MatMulNBitsQuantizer take the whole model in memory and copy it (they ran a 24 GB host out of memory on the
1.3B LLM). Formats: ONNX QuantizeLinear/DequantizeLinear (per-tensor activations, per-axis weights) and,
for int4, opset 21's blocked DequantizeLinear.

- int8 (W8A8): every GEMM named gets its input through its own Q/DQ pair (one per GEMM: ONNX Runtime fuses
  a DequantizeLinear into an integer kernel only where the GEMM is its sole consumer) and its weight as
  per-channel symmetric int8 through a DequantizeLinear; zero points 0, biases float, and nothing else
  reads a dequantized tensor (residual Adds and norms keep the unrounded activation).
- int4 (weight-only): each MatMul's constant weight [K, N] as symmetric int4 in blocks along K.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from jflow.calibration.tensors import DataWriter, Tensors

CHUNK = 1 << 24  # weight elements quantized at a time (64 MB of float32)


def weight_axis(node) -> int:
    """The output-channel axis of a GEMM's weight, as onnxruntime's QDQ quantizer picks it."""
    if node.op_type == "Gemm":
        return 0 if any(a.name == "transB" and a.i for a in node.attribute) else 1
    return 0 if node.op_type == "Conv" else 1


def channel_scales(weight: np.ndarray, axis: int) -> np.ndarray:
    """float32 scale per channel along `axis`: onnxruntime's symmetric formula (quant_utils.compute_scale_zp,
    qmin, qmax = -127, 127; an all-zero channel gets 1), vectorized."""
    flat = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)
    absmax = np.maximum(np.abs(np.minimum(flat.min(axis=1), 0)), np.abs(np.maximum(flat.max(axis=1), 0)))
    scale64 = (absmax.astype(np.float64) - (-absmax).astype(np.float64)) / np.float64(254)
    return np.where(scale64 < np.finfo(np.float32).tiny, 1.0, scale64).astype(np.float32)


def quantize_channels(weight: np.ndarray, axis: int, scale: np.ndarray) -> np.ndarray:
    """int8 weight for per-channel scales: quantize_nparray's float32 division, round half to even and clip,
    a slice of channels at a time (no float copy of the whole weight)."""
    moved = np.moveaxis(weight, axis, 0)
    q = np.empty(moved.shape, np.int8)
    step = max(1, CHUNK // max(moved[0].size, 1))
    for start in range(0, moved.shape[0], step):
        part = moved[start:start + step].astype(np.float32) / scale[start:start + step].reshape((-1,) + (1,) * (moved.ndim - 1))
        q[start:start + step] = np.clip(np.round(part), -128, 127)
    return np.moveaxis(q, 0, axis)


def _widen_for_bias(scale: np.ndarray, input_scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """onnxruntime widens a weight's scales where input x weight scale would not hold the bias in int32
    (qdq_quantizer._adjust_weight_scale_for_int32_bias; applied even with float biases)."""
    qrange = np.float64(np.iinfo(np.int32).max) - np.float64(np.iinfo(np.int32).min + 1)
    smallest = 1.0001 * (2.0 * np.abs(bias.reshape(-1))) / qrange  # float32 until the division, as there
    candidate = np.float64(input_scale) * scale.astype(np.float64)
    low = (candidate < smallest) & (candidate > 0)
    if low.any():
        scale = scale.copy()
        scale[low] = (scale.astype(np.float64)[low] * (smallest[low] / candidate[low])).astype(np.float32)
    return scale


def write_int8(model, tensors: Tensors, target: Path, gemms: list[str], scales: dict[str, np.ndarray],
               shared: Path | None = None) -> int:
    """Write `model` to `target` with the GEMMs named in `gemms` in W8A8 QDQ; `scales`: each one's input
    activation scale (activation_scale). Returns the bytes referenced in `shared`'s data file."""
    from onnx import helper
    chosen = set(gemms)
    quantized = [n for n in model.graph.node if n.name in chosen]
    readers = Counter(n.input[0] for n in quantized)
    writer = DataWriter(target, shared)
    done: Counter = Counter()
    nodes = []
    try:
        for node in model.graph.node:
            if node.name not in chosen:
                nodes.append(node)
                continue
            x, w = node.input[0], node.input[1]
            scale, zero = f"{x}_scale", f"{x}_zero_point"
            writer.add(scale, scales[x])
            writer.add(zero, np.array(0, np.int8))
            done[x] += 1
            tail = f"_{done[x]}" if readers[x] > 1 else ""  # onnxruntime's DedicatedQDQPair names
            q_out, dq_out = f"{x}_QuantizeLinear_Output{tail}", f"{x}_DequantizeLinear_Output{tail}"
            nodes.append(helper.make_node("QuantizeLinear", [x, scale, zero], [q_out], f"{x}_QuantizeLinear{tail}"))
            nodes.append(helper.make_node("DequantizeLinear", [q_out, scale, zero], [dq_out],
                                          f"{x}_DequantizeLinear{tail}"))
            if f"{w}_quantized" not in writer.names:
                axis, weight = weight_axis(node), tensors.array(w)
                w_scale = channel_scales(weight, axis)
                if len(node.input) > 2 and node.input[2] in tensors.readers:  # Gemm/Conv bias (kept float)
                    w_scale = _widen_for_bias(w_scale, scales[x], tensors.array(node.input[2]))
                q = quantize_channels(weight, axis, w_scale)
                del weight
                writer.add(f"{w}_quantized", q)
                del q
                writer.add(f"{w}_scale", w_scale)
                writer.add(f"{w}_zero_point", np.zeros(w_scale.shape, np.int8))
                nodes.append(helper.make_node("DequantizeLinear", [f"{w}_quantized", f"{w}_scale", f"{w}_zero_point"],
                                              [f"{w}_DequantizeLinear_Output"], f"{w}_DequantizeLinear", axis=axis))
            node.input[0], node.input[1] = dq_out, f"{w}_DequantizeLinear_Output"
            nodes.append(node)
        _finish(model, nodes, tensors, writer)
    finally:
        writer.close()
    return writer.shared_bytes


def write_int4(model, tensors: Tensors, target: Path, block_size: int, exclude=(), shared: Path | None = None) -> int:
    """Write `model` to `target` with every MatMul of a constant 2-D weight (not in `exclude`) weight-only
    int4: symmetric, blocks of `block_size` along K, as MatMulNBitsQuantizer's QDQ format writes it (its
    kernel, its names). Returns the bytes referenced in `shared`'s data file."""
    from onnx import TensorProto, helper
    from onnxruntime.capi._pybind_state import quantize_qdq_matmul_4bits
    skip, inits = set(exclude), {i.name: i for i in model.graph.initializer}
    writer = DataWriter(target, shared)
    nodes = []
    try:
        for node in model.graph.node:
            w = node.input[1] if node.op_type == "MatMul" and len(node.input) > 1 else None
            init = inits.get(w)
            if init is None or len(init.dims) != 2 or node.name in skip:
                nodes.append(node)
                continue
            weight = np.ascontiguousarray(tensors.array(w), np.float32)
            rows, cols = weight.shape
            blocks = (rows + block_size - 1) // block_size
            packed = np.zeros((rows * cols + 1) // 2, np.uint8)
            scales = np.zeros((blocks, cols), np.float32)
            quantize_qdq_matmul_4bits(packed, weight, scales, np.zeros((cols * blocks + 1) // 2, np.uint8), block_size,
                                      cols, rows, True)
            del weight
            writer.add_bytes(f"{w}_DQ_Q4", memoryview(packed), TensorProto.INT4, [rows, cols])
            writer.add(f"{w}_DQ_scales", scales)
            nodes.append(helper.make_node("DequantizeLinear", [f"{w}_DQ_Q4", f"{w}_DQ_scales"], [f"{w}_DQ_Q4_output"],
                                          f"{node.name}_DQ_Q4", axis=0, block_size=block_size))
            nodes.append(helper.make_node("MatMul", [node.input[0], f"{w}_DQ_Q4_output"], list(node.output),
                                          f"{node.name}_matmul_Q4"))
        for opset in model.opset_import:  # int4 tensors and blocked DequantizeLinear: opset 21, IR 10
            if opset.domain in ("", "ai.onnx"):
                opset.version = max(opset.version, 21)
        model.ir_version = max(model.ir_version, 10)
        _finish(model, nodes, tensors, writer)
    finally:
        writer.close()
    return writer.shared_bytes


def _finish(model, nodes: list, tensors: Tensors, writer: DataWriter) -> None:
    """The graph's nodes become `nodes`; the initializers they still read are written (one at a time) after
    the quantized ones, and the graph file saved."""
    used = {i for n in nodes for i in n.input}
    for name in [i.name for i in model.graph.initializer if i.name in used]:
        writer.add(name, tensors.array(name))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    writer.save(model)
