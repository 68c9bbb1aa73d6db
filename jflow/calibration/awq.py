"""AWQ's activation-aware scales for int4 weights (Lin et al., 2024), on the grid quantize writes.

A few input channels of a GEMM carry much larger activations than the rest, so their weight rows matter
more; int4 rounds every row alike. Scaling row j of W up by s_j (and channel j of the input down, folded
into the RMSNorm gain or up_proj's columns as smooth.fold_scales does) gives those rows finer steps in
their block. s = mean|x_j|^a, with a searched per GEMM on a grid, scoring the output error of the int4
round trip the artifact will hold (qdq.int4_round_trip: onnxruntime's kernel, the block's largest
magnitude on -8), not an idealised absmax/7 grid (benchmarks/quantization/int4_rounding.py's study did
that, and its choices were not the ones the written weights reward). a = 0 is plain rounding, so the
search never does worse than it on the calibration rows.
"""

from __future__ import annotations

import numpy as np

from jflow.calibration.qdq import int4_round_trip

GRID = 10  # a in 0, 0.1, ..., 0.9


def search_scales(x: np.ndarray, w: np.ndarray, block_size: int, grid: int = GRID) -> tuple[np.ndarray, float]:
    """(s [K] float32, a): x [rows, K] the GEMM's calibration inputs, w [K, N] its float weight."""
    x = x.astype(np.float32, copy=False)
    ref = x @ w
    mean = np.abs(x).mean(axis=0) + 1e-6
    best = (float(np.linalg.norm(x @ int4_round_trip(w, block_size) - ref)), np.ones_like(mean), 0.0)
    for a in np.arange(1, grid) / grid:
        s = mean ** a
        s = (s / np.sqrt(s.max() * s.min())).astype(np.float32)  # centred: no overall gain moves into W
        err = float(np.linalg.norm((x / s) @ int4_round_trip(w * s[:, None], block_size) - ref))
        if err < best[0]:
            best = (err, s, float(a))
    return best[1], best[2]
