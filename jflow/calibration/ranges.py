"""Activation ranges of a graph's GEMM inputs, measured on the float graph over its calibration samples.

One pass runs the graph (its weights read where they lie) on every sample and keeps, per tensor, what the
quantizer needs: max |x| (minmax), or onnxruntime's histograms (entropy, percentile: its HistogramCollector,
fed one sample at a time, as its strided calibration does), and per-channel max |x_j| where smoothing needs
them. onnxruntime's own calibration would run an augmented copy of the whole model instead.

The scale of a range is onnxruntime's (`compute_scale_zp`, symmetric int8, zero point 0), so the numbers
are those quantize_static writes for the same range.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jflow.calibration.collect import probe

# The settings quantize_static gives its calibrators (onnxruntime 1.32, calibrate.create_calibrator).
HISTOGRAMS = {"entropy": {"symmetric": False, "num_bins": 128, "num_quantized_bins": 128},
              "percentile": {"symmetric": True, "num_bins": 2048, "num_quantized_bins": 2048}}


@dataclass
class Observed:
    ranges: dict[str, tuple[np.float32, np.float32]] = field(default_factory=dict)  # tensor -> (lo, hi)
    channels: dict[str, np.ndarray] = field(default_factory=dict)  # tensor -> max |x_j| over all but the last axis


def observe(source: Path, samples: Path, tensors=(), channels=(), method: str = "minmax",
            divide: dict[str, np.ndarray] | None = None) -> Observed:
    """Ranges of `tensors` and channel maxima of `channels` of the float graph `source` over the samples
    in `samples`. `divide`: tensor -> s, ranges taken of x / s (smoothing folded in, channel-wise)."""
    from onnxruntime.quantization.calibrate import HistogramCollector
    tensors, channels, divide = list(tensors), list(channels), divide or {}
    collector = None if method == "minmax" else HistogramCollector(method=method, percentile=99.999, scenario="same",
                                                                   **HISTOGRAMS[method])
    absmax: dict[str, np.float32] = {}
    seen = Observed()
    for values in probe(source, sorted(set(tensors) | set(channels)), samples):
        for name in channels:
            value = values[name]
            m = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            seen.channels[name] = np.maximum(seen.channels[name], m) if name in seen.channels else m
        picked = {t: values[t] / divide[t] if t in divide else values[t] for t in tensors}
        if collector is not None:
            with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per call
                collector.collect({t: [v] for t, v in picked.items()})
            continue
        for name, value in picked.items():
            a = np.float32(np.nanmax(np.abs(value))) if value.size else np.float32(0)
            absmax[name] = max(absmax.get(name, np.float32(0)), a)
    seen.channels = {k: m.astype(np.float32) for k, m in seen.channels.items()}
    if collector is not None and tensors:
        with contextlib.redirect_stdout(io.StringIO()):
            found = collector.compute_collection_result()
        seen.ranges = {t: (np.float32(found[t][0]), np.float32(found[t][1])) for t in tensors}
    else:
        seen.ranges = {t: (-a, a) for t, a in absmax.items()}
    return seen


def load_observed(folder: Path, graph: str) -> Observed | None:
    """What the calibration run observed of `graph` (calibration.observe) as minmax ranges and channel maxima,
    or None where it recorded samples instead."""
    from jflow.calibration.observe import load_channels
    channels = load_channels(folder, graph)
    if channels is None:
        return None
    return Observed(ranges={n: (-np.float32(m.max(initial=0)), np.float32(m.max(initial=0))) for n, m in channels.items()},
                    channels=channels)


def smoothed_range(channel_max: np.ndarray, s: np.ndarray) -> tuple[np.float32, np.float32]:
    """The minmax range of x / s from the channel maxima of x (division keeps the order of magnitudes, so
    this is the maximum of the divided values; only their float rounding differs)."""
    a = np.float32((channel_max.astype(np.float32) / s.astype(np.float32)).max()) if channel_max.size else np.float32(0)
    return -a, a


def activation_scale(lo, hi) -> np.ndarray:
    """onnxruntime's symmetric int8 scale for the range [lo, hi] (float32 scalar; zero point 0)."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType
    qmin, qmax = get_qmin_qmax_for_qType(TensorProto.INT8, reduce_range=False, symmetric=True)
    zero, scale = compute_scale_zp(np.array(lo, np.float32), np.array(hi, np.float32), qmin, qmax, symmetric=True)
    assert not zero.any(), "jflow bug: symmetric int8 has a zero point of 0"
    return np.asarray(scale, np.float32).reshape(())
