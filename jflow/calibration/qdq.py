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
               shared: Path | None = None, weight_only=()) -> int:
    """Write `model` to `target` with the GEMMs named in `gemms` in W8A8 QDQ; `scales`: each one's input
    activation scale (activation_scale); those of them also in `weight_only` with int8 weights alone (per-channel,
    the same bytes; input float). Returns the bytes referenced in `shared`'s data file."""
    from onnx import helper
    chosen = set(gemms)
    quantized = [n for n in model.graph.node if n.name in chosen and n.name not in weight_only]
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
            dq_out, scale, zero = x, f"{x}_scale", f"{x}_zero_point"
            if node.name not in weight_only:  # the input quantized too (W8A8)
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
                if len(node.input) > 2 and node.input[2] in tensors.readers and x in scales:  # Gemm/Conv bias (float)
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


# Weight-only formats of one MatMul's constant weight [K, N] (weight_only's `formats`):
#   int4: symmetric int4 in blocks along K, MatMulNBitsQuantizer's QDQ format and kernel (ONNX Runtime: MatMulNBits
#         4-bit; TensorRT: weight-only INT4);
#   int8: symmetric int8 per output channel (absmax / 127, zero point 0): TensorRT's weight-only INT8 granularity,
#         and ONNX Runtime 1.32 fuses DequantizeLinear(per-axis int8) + MatMul into MatMulNBits 8-bit (accuracy
#         level 4: the input quantized to int8 in blocks of 32 inside the kernel), so both forms hold one copy.
#   int8-block: symmetric int8 in blocks along K (absmax / 127): ONNX Runtime's MatMulNBits 8-bit with finer weight
#         scales (the ORT LLM form of an int8 artifact); not a TensorRT granularity.
WEIGHT_ONLY = ("int4", "int8", "int8-block")


def weight_only(model, tensors: Tensors, target: Path, formats: dict[str, str], block_size: int,
                shared: Path | None = None) -> int:
    """Write `model` to `target` with each MatMul named in `formats` (of a constant 2-D weight) weight-only in
    its format (WEIGHT_ONLY); the rest as they are. Returns the bytes referenced in `shared`'s data file."""
    from onnx import TensorProto, helper
    from onnxruntime.capi._pybind_state import quantize_qdq_matmul_4bits
    inits = {i.name: i for i in model.graph.initializer}
    writer = DataWriter(target, shared)
    nodes = []
    try:
        for node in model.graph.node:
            w = node.input[1] if node.op_type == "MatMul" and len(node.input) > 1 else None
            init, kind = inits.get(w), formats.get(node.name)
            if init is None or len(init.dims) != 2 or kind is None:
                nodes.append(node)
                continue
            weight = np.ascontiguousarray(tensors.array(w), np.float32)
            rows, cols = weight.shape
            if kind == "int4":
                blocks = (rows + block_size - 1) // block_size
                packed = np.zeros((rows * cols + 1) // 2, np.uint8)
                scales = np.zeros((blocks, cols), np.float32)
                quantize_qdq_matmul_4bits(packed, weight, scales, np.zeros((cols * blocks + 1) // 2, np.uint8),
                                          block_size, cols, rows, True)
                del weight
                writer.add_bytes(f"{w}_DQ_Q4", memoryview(packed), TensorProto.INT4, [rows, cols])
                writer.add(f"{w}_DQ_scales", scales)
                nodes.append(helper.make_node("DequantizeLinear", [f"{w}_DQ_Q4", f"{w}_DQ_scales"],
                                              [f"{w}_DQ_Q4_output"], f"{node.name}_DQ_Q4", axis=0,
                                              block_size=block_size))
                nodes.append(helper.make_node("MatMul", [node.input[0], f"{w}_DQ_Q4_output"], list(node.output),
                                              f"{node.name}_matmul_Q4"))
                continue
            if kind == "int8-block":
                blocks = (rows + block_size - 1) // block_size
                padded = np.zeros((blocks * block_size, cols), np.float32)
                padded[:rows] = weight
                del weight
                scales = np.abs(padded.reshape(blocks, block_size, cols)).max(axis=1) / np.float32(127)
                scales[scales == 0] = 1
                q = np.clip(np.round(padded.reshape(blocks, block_size, cols) / scales[:, None]), -127, 127)
                del padded
                writer.add(f"{w}_DQ_Q8", q.astype(np.int8).reshape(-1, cols)[:rows])
                del q
                writer.add(f"{w}_DQ_scales", scales.astype(np.float32))
                nodes.append(helper.make_node("DequantizeLinear", [f"{w}_DQ_Q8", f"{w}_DQ_scales"],
                                              [f"{w}_DQ_Q8_output"], f"{node.name}_DQ_Q8", axis=0,
                                              block_size=block_size))
                node.input[1] = f"{w}_DQ_Q8_output"
                nodes.append(node)
                continue
            if kind != "int8":  # (int4 and int8-block were handled above)
                raise ValueError(f"jflow bug: weight-only format {kind!r} is not one of {WEIGHT_ONLY}")
            scale = channel_scales(weight, 1)  # the W8A8 writer's scales: a GEMM's int8 weights are the same bytes
            q = quantize_channels(weight, 1, scale)
            del weight
            writer.add(f"{w}_quantized", q)
            writer.add(f"{w}_scale", scale)
            writer.add(f"{w}_zero_point", np.zeros(cols, np.int8))
            nodes.append(helper.make_node("DequantizeLinear", [f"{w}_quantized", f"{w}_scale", f"{w}_zero_point"],
                                          [f"{w}_DequantizeLinear_Output"], f"{w}_DequantizeLinear", axis=1))
            node.input[1] = f"{w}_DequantizeLinear_Output"
            nodes.append(node)
        for opset in model.opset_import:  # int4 tensors and blocked DequantizeLinear: opset 21, IR 10
            if opset.domain in ("", "ai.onnx"):
                opset.version = max(opset.version, 21)
        model.ir_version = max(model.ir_version, 10)
        _finish(model, nodes, tensors, writer)
    finally:
        writer.close()
    return writer.shared_bytes


def int8_round_trip(weight: np.ndarray, axis: int = 1) -> np.ndarray:
    """`weight` through the per-channel symmetric int8 grid write_int8 writes, back to float32."""
    scale = channel_scales(weight, axis)
    shape = [1] * weight.ndim
    shape[axis] = -1
    return quantize_channels(weight, axis, scale).astype(np.float32) * scale.reshape(shape)


def int4_round_trip(weight: np.ndarray, block_size: int) -> np.ndarray:
    """`weight` [K, N] through the int4 grid quantize writes, back to float32: onnxruntime's symmetric kernel
    (quantize_qdq_matmul_4bits) in numpy, 4x faster than running it and unpacking its nibbles. Per block of
    `block_size` along K, the value of largest magnitude v gives the scale v / -8, values round half away from
    zero and clip to [-8, 7] (a test checks equality with the written artifact's DequantizeLinear)."""
    k, n = weight.shape
    blocks = -(-k // block_size)
    w = np.zeros((blocks * block_size, n), np.float32)
    w[:k] = weight
    w = w.reshape(blocks, block_size, n)
    v = np.take_along_axis(w, np.abs(w).argmax(axis=1)[:, None, :], axis=1)
    scale = v / np.float32(-8)
    y = np.divide(w, scale, out=np.zeros_like(w), where=scale != 0)
    q = np.clip(np.trunc(y + np.copysign(np.float32(0.5), y)), -8, 7)
    return (q * scale).reshape(-1, n)[:k]


def _finish(model, nodes: list, tensors: Tensors, writer: DataWriter) -> None:
    """The graph's nodes become `nodes`; the initializers they still read are written (one at a time) after
    the quantized ones, and the graph file saved."""
    used = {i for n in nodes for i in n.input}
    for name in [i.name for i in model.graph.initializer if i.name in used]:
        writer.add(name, tensors.array(name))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    writer.save(model)
