"""Shared fixtures: photographs to calibrate on and the tiny artifact quantized once per session."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jflow.calibration.quantize import quantize_artifact


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (180 + 40 * i, 240, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


@pytest.fixture(scope="session")
def quantized(tiny_artifact, photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("quant")
    out = {}
    for precision in ("int8", "int4"):
        out[precision] = quantize_artifact(tiny_artifact, root / precision, precision, calib=photos, samples=2,
                                           steps=3, cache=root / "cache", log=lambda _: None)
    return out
