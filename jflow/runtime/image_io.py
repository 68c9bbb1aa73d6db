"""Image input and output: official JanusFlow preprocessing and postprocessing with PIL + numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from jflow.errors import InputError, OutputError
from jflow.fsutil import atomic_file, check_writable_file
from jflow.runtime.processor_config import ProcessorSettings


def load_image(source) -> Image.Image:
    """A path, PIL image or HWC uint8 array, as an RGB PIL image; clear errors for anything else."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim != 3 or source.shape[2] not in (3, 4):
            raise InputError(f"an image array must be HxWx3 (or 4) uint8, got {source.dtype} {source.shape}")
        return Image.fromarray(source).convert("RGB")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"image file not found: {path}")
        try:
            with Image.open(path) as img:
                img.load()
                return img.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"{path} is not a readable image ({exc}); pass a PNG or JPEG file") from exc
    raise InputError(f"cannot read an image from a {type(source).__name__}; pass a path, PIL image or array")


def square_image(img: Image.Image, settings: ProcessorSettings) -> Image.Image:
    """Resize the long side to image_size (bicubic) and pad to a centred square with the mean colour."""
    size = settings.image_size
    width, height = img.size
    longest = max(width, height)
    new_w = max(int(width / longest * size), settings.min_size)
    new_h = max(int(height / longest * size), settings.min_size)
    img = img.resize((new_w, new_h), Image.BICUBIC)
    if new_w == new_h:
        return img
    side = max(new_w, new_h)
    canvas = Image.new(img.mode, (side, side), settings.background_color)
    canvas.paste(img, ((side - new_w) // 2, (side - new_h) // 2))
    return canvas


def preprocess_images(images, settings: ProcessorSettings) -> np.ndarray:
    """Images -> SigLIP input [B, 3, S, S] float32: rescale to [0,1], then (x - mean) / std."""
    batch = []
    for source in images:
        chw = np.asarray(square_image(load_image(source), settings)).transpose(2, 0, 1)
        x = (chw.astype(np.float64) * settings.rescale_factor).astype(np.float32)
        if settings.do_normalize:
            mean = np.asarray(settings.image_mean, dtype=np.float32)[:, None, None]
            std = np.asarray(settings.image_std, dtype=np.float32)[:, None, None]
            x = (x - mean) / std
        batch.append(x.astype(np.float32))
    return np.stack(batch)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """VAE output [B, 3, H, W] in [-1, 1] -> [B, H, W, 3] uint8, truncating as the official demo does."""
    x = np.clip(np.asarray(pixels, dtype=np.float32), -1.0, 1.0).transpose(0, 2, 3, 1)
    return ((x + 1.0) / 2.0 * 255.0).astype(np.uint8)


def output_paths(out: str | Path, count: int) -> list[Path]:
    """The files `save_images` writes for `count` images: `out` for one, out-1.png, out-2.png ... for several."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise InputError(f"the output file must end in .png, got {out.name}")
    return [out] if count == 1 else [out.with_name(f"{out.stem}-{i + 1}.png") for i in range(count)]


def check_output_images(out: str | Path, count: int) -> list[Path]:
    """Refuse output names that cannot be written, before any work is done."""
    return [check_writable_file(path, "the output image") for path in output_paths(out, count)]


def save_images(images: np.ndarray, out: str | Path) -> list[Path]:
    """Write [N, H, W, 3] uint8 images as PNG (names: see output_paths), each one whole or not at all."""
    paths = output_paths(out, len(images))
    if not paths[0].parent.is_dir():
        raise OutputError(f"the output folder {paths[0].parent} does not exist")
    for image, path in zip(images, paths):
        with atomic_file(path) as f:
            Image.fromarray(image).save(f, format="PNG")
    return paths
