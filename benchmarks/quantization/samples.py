"""The calibration samples the studies quantize from: the shipped recipe's (QuantRecipe's defaults: its
prompts, questions and ODE steps), recorded by the quantizer's own collector and cached where
`jflow-export quantize` caches them, so a study and a quantize of the same artifact share one recording."""

from __future__ import annotations

from pathlib import Path

from jflow.calibration.recipe import QuantRecipe

SHIPPED = QuantRecipe("int8")  # the calibration fields are the same for int8 and int4


def calibration_samples(artifact: Path) -> Path:
    """The folder of `artifact`'s calibration samples (one subfolder per graph), recorded on first use."""
    from jflow.calibration.collect import collect_samples
    from jflow.calibration.data import calibration_set
    from jflow.calibration.quantize import calibration_cache_dir
    return collect_samples(artifact, calibration_set(SHIPPED.samples), calibration_cache_dir(), steps=SHIPPED.steps,
                           log=lambda _: None)
