"""Validation of user requests, shared by the reference and the runtime so both refuse the same input
with the same words (and before any work is done)."""

from __future__ import annotations

import numpy as np

from jflow.errors import InputError

# Guidance weights beyond this only overflow the latent (1e300 gave black images); the official is 2.
MAX_CFG_WEIGHT = 100.0


def check_generation_args(steps, cfg_weight) -> None:
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise InputError(f"steps must be a whole number >= 1, got {steps!r} (30 is the official setting)")
    if not isinstance(cfg_weight, (int, float, np.integer, np.floating)) or isinstance(cfg_weight, bool) \
            or not np.isfinite(cfg_weight) or not 0 <= cfg_weight <= MAX_CFG_WEIGHT:
        raise InputError(f"cfg weight must be a number from 0 to {MAX_CFG_WEIGHT:g}, got {cfg_weight!r} "
                         "(2.0 is the official setting)")


def pair_images_questions(images, questions) -> tuple[list, list]:
    """One image per question: a single (image, str) pair, or two equally long lists."""
    single = isinstance(questions, str)
    questions = [questions] if single else list(questions)
    images = [images] if single or not isinstance(images, (list, tuple)) else list(images)
    if not questions:
        raise InputError("no question given")
    if len(images) != len(questions):
        raise InputError(f"got {len(images)} image(s) for {len(questions)} question(s); pass one image per question")
    return images, questions
