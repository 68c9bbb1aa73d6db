"""int4 weight rounding as the quantization studies simulate it: round to nearest on a symmetric grid in
blocks, AWQ's activation-aware scale search and GPTQ's error feedback (quant_methods.py, gptq_check.py).
Float in, float out: each returns weights that went through the int4 grid, for float graphs to hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# int4 scale = absmax * a / b. AWQ_STEP: the grid the AWQ search scores on. It is near, not equal to, what
# MatMulNBitsQuantizer writes (scale = the block's largest-magnitude weight / -8, so that weight lands on -8).
AWQ_STEP, GPTQ_STEP = (1, 7), (2, 15)


def fake_int4(w: np.ndarray, block: int, step: tuple[int, int] = AWQ_STEP) -> np.ndarray:
    """Symmetric int4 round trip (levels -8..7) in blocks along the input dimension, scale = absmax * a / b."""
    k, n = w.shape
    b = w.reshape(k // block, block, n)
    scale = np.abs(b).max(axis=1, keepdims=True) * step[0] / step[1]
    scale[scale == 0] = 1
    return (np.clip(np.round(b / scale), -8, 7) * scale).reshape(k, n)


def awq_scales(model, source: Path, samples: Path, block: int, rows: int = 256, grid: int = 20) -> dict:
    """AWQ's search (Lin et al., 2024) for each smoothable GEMM: s = mean|X|^a, a on a grid, the one whose
    int4 round trip of W*s, divided back, best reproduces X @ W on calibration rows."""
    from jflow.calibration.smooth import gemm_inputs, pairs_with_weights
    from jflow.calibration.tensors import digest
    rng = np.random.default_rng(0)
    xs: dict[str, list] = {}
    for values in gemm_inputs(model, source, samples):
        for key, v in values.items():
            v = v.reshape(-1, v.shape[-1])
            xs.setdefault(key, []).append(v[rng.choice(len(v), min(len(v), 64), replace=False)])
    scales = {}
    for pair, w in pairs_with_weights(model):
        x = np.concatenate(xs[digest(w)])
        x = x[rng.choice(len(x), min(len(x), rows), replace=False)]
        ref, mean = x @ w, np.abs(x).mean(axis=0) + 1e-6
        best = (np.linalg.norm(x @ fake_int4(w, block) - ref), np.ones_like(mean))
        for a in np.arange(1, grid) / grid:
            s = mean ** a
            s = s / np.sqrt(s.max() * s.min())
            err = np.linalg.norm(x @ (fake_int4(w * s[:, None], block) / s[:, None]) - ref)
            if err < best[0]:
                best = (err, s)
        scales[pair.matmul] = best[1]
    return scales


def matmul_hessians(model, source: Path, samples: Path) -> dict[str, np.ndarray]:
    """X^T X / n (float64) for the input X of every constant-weight MatMul of `model`, probed on `source`."""
    from jflow.calibration.collect import probe
    inits = {i.name for i in model.graph.initializer}
    tensors = sorted({n.input[0] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits})
    sums, count = {}, 0
    for values in probe(source, tensors, samples):
        for t, x in values.items():
            x = x.reshape(-1, x.shape[-1]).astype(np.float64)
            sums[t] = sums.get(t, 0) + x.T @ x
        count += x.shape[0]
    return {t: h / count for t, h in sums.items()}


def gptq(w: np.ndarray, h: np.ndarray, group: int, damp: float = 0.01, blocksize: int = 128) -> np.ndarray:
    """GPTQ (Frantar et al., 2023) for W [K, N] (rows: input channels) with H = X^T X: rows rounded in order,
    each row's rounding error spread over the rows not yet rounded through the upper Cholesky factor of
    H^-1; a group's scale is taken when its first row is reached. Returns the round-tripped weights."""
    w, h = w.astype(np.float64).copy(), h.copy()
    k = w.shape[0]
    dead = np.diag(h) == 0
    h[dead, dead], w[dead] = 1, 0
    h[np.diag_indices(k)] += damp * np.mean(np.diag(h))
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    out = np.zeros_like(w)
    for i1 in range(0, k, blocksize):
        i2 = min(i1 + blocksize, k)
        w1, errors = w[i1:i2].copy(), np.zeros((i2 - i1, w.shape[1]))
        for i in range(i2 - i1):
            if (i1 + i) % group == 0:
                scale = np.abs(w1[i:i + group]).max(axis=0) * 2 / 15
                scale[scale == 0] = 1
            out[i1 + i] = np.clip(np.round(w1[i] / scale), -8, 7) * scale
            errors[i] = (w1[i] - out[i1 + i]) / u[i1 + i, i1 + i]
            w1[i:] -= np.outer(u[i1 + i, i1 + i:i2], errors[i])
        w[i2:] -= u[i1:i2, i2:].T @ errors
    return out.astype(np.float32)
