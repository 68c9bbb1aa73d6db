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
    # int8: the ORT LLM form block-wise (--ort-int8 blockwise), the float GEMMs of the portable form measured
    # (--keep-float measured); int8-static: that form in the portable form's W8A8 QDQ, down and o kept float (the
    # default; the default, split, holds both forms: test_mixed_precision.py)
    for name, precision, settings in (("int8", "int8", {"ort_int8": "blockwise", "keep_float": None}),
                                      ("int4", "int4", {}), ("int8-static", "int8", {"ort_int8": "static"})):
        out[name] = quantize_artifact(tiny_artifact, root / name, precision, calib=photos, samples=2, steps=3,
                                      cache=root / "cache", log=lambda _: None, **settings)
    return out


@pytest.fixture(scope="session")
def portable_samples(tiny_artifact, photos, tmp_path_factory):
    """Calibration samples of an artifact without llm_ort (the portable LLM form is then the one calibrated):
    the tiny artifact copied with llm_ort left out of its manifest."""
    import shutil

    from jflow.artifact.manifest import Manifest
    from jflow.artifact.writer import ArtifactWriter
    from jflow.calibration.collect import collect_samples
    from jflow.calibration.data import calibration_set
    root = tmp_path_factory.mktemp("portable")
    art = shutil.copytree(tiny_artifact, root / "art")
    data = dict(Manifest.load(art).data)
    data["graphs"] = {n: g for n, g in data["graphs"].items() if n != "llm_ort"}
    (art / "onnx" / "llm_ort.onnx").unlink()
    ArtifactWriter(art).create(data)
    return collect_samples(art, calibration_set(2, photos), root / "cache", steps=3, log=lambda _: None)


@pytest.fixture(scope="session")
def recorded_samples(tiny_artifact, photos, tmp_path_factory):
    """Calibration samples with the LLM's calls recorded (as histogram methods need them; minmax takes the
    LLM's statistics in the run instead)."""
    from jflow.calibration.collect import collect_samples
    from jflow.calibration.data import calibration_set
    return collect_samples(tiny_artifact, calibration_set(2, photos), tmp_path_factory.mktemp("recorded"), steps=3,
                           log=lambda _: None)
