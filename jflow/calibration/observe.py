"""The calibrated LLM form's activation statistics, taken in the calibration run itself.

Measuring the LLM's GEMM input ranges from recorded samples runs the graph a second time over every
sampled call: at full size each sampled ODE row cost about as much as a step of the generation itself, and
that second pass was half of a default quantize. Instead the runner taps the GEMM inputs
(`BaseRunner.tap`), and on the chosen calls `ChannelMaxima` keeps max |x_j| per channel over the real tokens
of each row (the per-tensor range is their maximum; smoothing needs the channels). Padded query rows are
left out, as split_rows leaves them out of a recorded sample: GroupQueryAttention leaves them unwritten and
the portable form computes them from masked-out inputs.

Only minmax ranges come from this: histogram methods (entropy, percentile) need every value, and with
smoothing a second look at x / s, so they keep the recorded samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FILE = "observed-{graph}.npz"


def real_tokens(feeds: dict) -> list[np.ndarray] | None:
    """For each row of an LLM call, the indices of its real new tokens along the sequence axis; None when
    every token is real (no padding information in the feeds)."""
    if "query_seqlens" in feeds:  # llm_ort: row b's first query_seqlens[b] tokens
        return [np.arange(int(n)) for n in np.asarray(feeds["query_seqlens"]).reshape(-1)]
    if "attention_mask" in feeds and "inputs_embeds" in feeds:  # llm: the mask's last `seq` columns
        seq = int(feeds["inputs_embeds"].shape[1])
        mask = np.asarray(feeds["attention_mask"]).astype(bool)
        return [np.flatnonzero(row[-seq:]) for row in mask]
    return None


class ChannelMaxima:
    """max |x_j| over the real tokens of every observed call, per tapped tensor."""

    def __init__(self):
        self.channels: dict[str, np.ndarray] = {}

    def add(self, values, rows: list[np.ndarray] | None) -> None:
        """values: tensor -> value (a Mapping read one tensor at a time: one host copy alive at once)."""
        for name in values:
            value = np.asarray(values[name])
            if rows is not None and value.ndim == 3 and value.shape[0] == len(rows):
                parts = [value[b, index] for b, index in enumerate(rows) if len(index)]
            else:  # no padding to leave out
                parts = [value.reshape(-1, value.shape[-1])]
            for part in parts:
                m = np.abs(part.reshape(-1, part.shape[-1])).max(axis=0).astype(np.float32)
                self.channels[name] = np.maximum(self.channels[name], m) if name in self.channels else m

    def save(self, folder: Path, graph: str) -> None:
        names = sorted(self.channels)
        np.savez(folder / FILE.format(graph=graph), names=np.array(json.dumps(names)),
                 **{f"t{i}": self.channels[n] for i, n in enumerate(names)})


def load_channels(folder: Path, graph: str) -> dict[str, np.ndarray] | None:
    """The channel maxima a calibration run took of `graph`, or None where it recorded samples instead."""
    path = folder / FILE.format(graph=graph)
    if not path.is_file():
        return None
    with np.load(path) as z:
        names = json.loads(str(z["names"]))
        return {n: z[f"t{i}"] for i, n in enumerate(names)}


def gemm_inputs(path: Path) -> list[str]:
    """The input tensors of a graph's weight GEMMs (MatMul/Gemm by an initializer): what calibration taps."""
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    return sorted({n.input[0] for n in model.graph.node
                   if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in weights})
