"""Validation of user requests, shared by the reference and the runtime so both refuse the same input
with the same words (and before any work is done). Each message names the argument at fault."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from jflow.errors import InputError

# Guidance weights beyond this only overflow the latent (1e300 gave black images); the official is 2.
MAX_CFG_WEIGHT = 100.0
MAX_SEED = 2**63 - 1  # numpy's PCG64 takes any whole number; the CLI and the server take a signed 64-bit one
IMAGE_TYPES = (str, os.PathLike, Image.Image, np.ndarray)


def check_generation_args(steps, cfg_weight) -> None:
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise InputError(f"steps must be a whole number >= 1, got {steps!r} (30 is the official setting)")
    if not isinstance(cfg_weight, (int, float, np.integer, np.floating)) or isinstance(cfg_weight, bool) \
            or not np.isfinite(cfg_weight) or not 0 <= cfg_weight <= MAX_CFG_WEIGHT:
        raise InputError(f"cfg weight must be a number from 0 to {MAX_CFG_WEIGHT:g}, got {cfg_weight!r} "
                         "(2.0 is the official setting)")


THREADS_PER_CORE = 4  # the --threads bound: more threads than this per core only add switching


def max_threads() -> int:
    """The most intra-op threads a session may ask for: THREADS_PER_CORE per core this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return THREADS_PER_CORE * max(cores, 1)


def check_threads(threads) -> None:
    """None (one per core) or a whole number from 1 to max_threads()."""
    if threads is None:
        return
    limit = max_threads()
    if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or not 1 <= threads <= limit:
        raise InputError(f"threads must be a whole number from 1 to {limit} ({THREADS_PER_CORE} per core of this "
                         f"machine), got {threads!r}; leave it unset for one per core")


def check_seed(seed) -> None:
    """None (a fresh random seed) or a whole number >= 0."""
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0):
        raise InputError(f"seed must be a whole number >= 0 (or None for a random one), got {seed!r}")


def check_noise(noise, shape: tuple) -> np.ndarray:
    """The starting latents as float32 of exactly `shape`, all finite (NaN or inf noise gives black images)."""
    arr = np.asarray(noise)
    if arr.dtype.kind not in "fiu":
        raise InputError(f"noise must be an array of real numbers, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise InputError(f"noise must be {list(shape)}, got {list(arr.shape)}")
    with np.errstate(over="ignore"):
        arr = arr.astype(np.float32)
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise InputError(f"noise has {bad} non-finite value(s) (NaN or inf, or beyond float32); pass finite "
                         "numbers, e.g. jflow.runtime.ode.initial_noise(seed, n, size)")
    return arr


def check_text(text, where: str, hint: str) -> None:
    """User text the tokenizer can take: a str, not blank, and valid Unicode. A lone surrogate (from a
    JSON "\\ud800" escape, or undecodable bytes in argv) cannot be encoded: refused here, by name."""
    label = where if "[" in where else f"the {where}"
    if not isinstance(text, str):
        raise InputError(f"{where} must be a str, got {type(text).__name__}")
    if not text.strip():
        raise InputError(f"{label} is empty; {hint}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{label} is not valid Unicode text: character {exc.start} is a lone surrogate "
                         f"({text[exc.start]!r}); pass text decoded from UTF-8 (on the command line: a UTF-8 "
                         "locale and UTF-8 text)") from None


def prompt_list(prompt, name: str = "prompt") -> list[str]:
    """A str or a list/tuple of str, as a non-empty list of non-blank, valid str."""
    hint = "describe the image to generate"
    if isinstance(prompt, str):
        check_text(prompt, name, hint)
        return [prompt]
    if not isinstance(prompt, (list, tuple)):
        raise InputError(f"{name} must be a str or a list of str, got {type(prompt).__name__}")
    if not prompt:
        raise InputError(f"no {name} given: the list is empty")
    for i, p in enumerate(prompt):
        check_text(p, f"{name}[{i}]", hint)
    return list(prompt)


def pair_images_questions(images, questions) -> tuple[list, list]:
    """One image per question: a single (image, str) pair, or two equally long lists."""
    single = isinstance(questions, str)
    hint = "ask something about the image"
    if single:
        check_text(questions, "question", hint)
        questions = [questions]
    elif not isinstance(questions, (list, tuple)):
        raise InputError(f"questions must be a str or a list of str, got {type(questions).__name__}")
    if not questions:
        raise InputError("no question given")
    for i, q in enumerate(questions):
        check_text(q, f"questions[{i}]", hint)
    images = [images] if single or not isinstance(images, (list, tuple)) else list(images)
    if len(images) != len(questions):
        raise InputError(f"got {len(images)} image(s) for {len(questions)} question(s); pass one image per question")
    for i, image in enumerate(images):
        if not isinstance(image, IMAGE_TYPES):
            where = "image" if single else f"images[{i}]"
            raise InputError(f"{where} must be a file path, PIL image or HxWxC array, got {type(image).__name__}")
    return images, list(questions)
