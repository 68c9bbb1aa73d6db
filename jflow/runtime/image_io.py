"""Image input and output: official JanusFlow preprocessing and postprocessing with PIL + numpy."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from jflow.errors import InputError, OutputError
from jflow.fsutil import atomic_file, check_name_length, check_writable_file
from jflow.input_files import NotAFile, open_regular
from jflow.runtime.ode import draw_noise, noise_stream
from jflow.runtime.processor_config import ProcessorSettings

# -n: images one command makes (each written as it is made; beyond this, run it again).
MAX_IMAGES = 1000
# Files with more pixels are refused before decoding (a 10000x10000 picture is the largest accepted).
MAX_IMAGE_PIXELS = 100_000_000
_LIMIT_TEXT = "jflow reads images of at most 100 megapixels (e.g. 10000x10000): downscale it first"
# JPEGs with more pixels decode at reduced scale, never below DRAFT_MIN_SIDE on the long side (the
# model sees 384); smaller ones decode exactly as the official processor does.
DRAFT_ABOVE_PIXELS = 16_000_000
DRAFT_MIN_SIDE = 1024


def load_image(source) -> Image.Image:
    """A path, PIL image or HxWx3/4 uint8 (or uint16) array, as an RGB PIL image; clear errors for anything else.

    Files over MAX_IMAGE_PIXELS are refused before decoding. Memory: loading and preprocessing a
    10000x10000 RGB PNG raises peak RSS by at most 430 MiB (PIL holds RGB at 4 bytes a pixel; other
    modes add a conversion copy); a JPEG that large decodes at 1/8 scale (DRAFT_ABOVE_PIXELS) and
    needs at most 40 MiB. High-bit-depth pixels are scaled to 8 bits, not clipped (see to_rgb).
    """
    if isinstance(source, Image.Image):
        _check_not_empty(source.size, "the image")
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, (str, os.PathLike)):
        return to_rgb(_read(Path(source)))
    raise InputError(f"cannot read an image from a {type(source).__name__}; pass a path, PIL image or array")


def _read(path: Path) -> Image.Image:
    # a folder, FIFO or device is named as such (never "not found"), and a FIFO never blocks the read
    try:
        file = open_regular(path)
    except FileNotFoundError:
        raise InputError(f"image file not found: {path}; pass a PNG or JPEG file") from None
    except OSError as exc:  # NotAFile: "is a folder, not a file"; or no permission
        raise InputError(f"image file {path} {exc.strerror}; pass a PNG or JPEG file" if isinstance(exc, NotAFile)
                         else f"cannot read the image file {path} ({exc.strerror or exc})") from None
    with file:
        return _decode(file, path)


def _decode(file, path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # PIL's bomb warning (our own, lower limit applies) and its notes on damaged files (they end
            # in one clear error below, or in a picture) would only clutter the output.
            warnings.simplefilter("ignore")
            with Image.open(file) as img:
                _check_size(img.size, path)
                _draft(img)
                img.load()
                return img
    except InputError:
        raise
    except Image.DecompressionBombError as exc:  # PIL's own limit, met at open (over ~179 megapixels)
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise InputError(f"{path} is too large ({_megapixels(int(pixels[1])) if pixels else 'over 179'} "
                         f"megapixels); {_LIMIT_TEXT}") from exc
    except MemoryError as exc:
        raise InputError(f"{path}: not enough memory to decode it; downscale it first") from exc
    except UnidentifiedImageError:  # (PIL's own text names the open file object, not the path)
        raise InputError(f"{path} is not a readable image (not in a format PIL can read); pass a PNG or JPEG "
                         "file") from None
    except Exception as exc:  # damaged files raise OSError, SyntaxError, ValueError, EOFError, zlib.error...
        raise InputError(f"{path} is not a readable image ({type(exc).__name__}: {exc}); pass a PNG or JPEG "
                         "file") from exc


def _check_not_empty(size, what) -> None:
    if min(size) < 1:
        raise InputError(f"{what} has no pixels ({size[0]}x{size[1]})")


def _check_size(size, path: Path) -> None:
    _check_not_empty(size, str(path))
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"{path} is too large: {width}x{height} ({_megapixels(width * height)} megapixels); "
                         f"{_LIMIT_TEXT}")


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f}"


def _draft(img: Image.Image) -> None:
    """Let libjpeg decode a large JPEG at 1/2, 1/4 or 1/8 scale, keeping DRAFT_MIN_SIDE on the long side."""
    width, height = img.size
    if img.format != "JPEG" or width * height <= DRAFT_ABOVE_PIXELS:
        return
    for k in (8, 4, 2):
        if max(width, height) // k >= DRAFT_MIN_SIDE and min(width, height) >= k:
            img.draft(img.mode, (width // k, height // k))
            return


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB. 16-bit modes (I;16*, and I, which PIL uses for 16-bit PNG/TIFF) keep their high byte as
    PIL does for 16-bit RGB; F is read as 0..1. Alpha is dropped, as the official processor does."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        return Image.fromarray(_high_byte(np.asarray(img)), "L").convert("RGB")
    if mode == "F":
        x = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0)
        return Image.fromarray(np.rint(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8), "L").convert("RGB")
    try:
        return (img.convert("LA") if mode == "La" else img).convert("RGB")
    except ValueError as exc:
        raise InputError(f"cannot convert an image of mode {mode} to RGB ({exc})") from exc


def _high_byte(values: np.ndarray) -> np.ndarray:
    """16-bit values (clipped to 0..65535) -> their high byte, a block of rows at a time (bounded memory)."""
    out = np.empty(values.shape, np.uint8)
    for start in range(0, len(values), 1024):
        out[start:start + 1024] = np.clip(values[start:start + 1024], 0, 65535) >> 8
    return out


def _from_array(source: np.ndarray) -> Image.Image:
    if source.dtype not in (np.uint8, np.uint16) or source.ndim != 3 or source.shape[2] not in (3, 4):
        raise InputError(f"an image array must be HxWx3 (or 4) uint8 or uint16, got {source.dtype} {source.shape}")
    _check_not_empty(source.shape[1::-1], "the image array")
    if source.dtype == np.uint16:
        source = _high_byte(source)
    return Image.fromarray(np.ascontiguousarray(source)).convert("RGB")


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
    """The files `save_images` writes for `count` images: `out` for one, out-1.png, out-2.png ... for several
    (at most MAX_IMAGES)."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise InputError(f"the output file must end in .png, got {out.name}")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_IMAGES:
        raise InputError(f"the number of images must be a whole number from 1 to {MAX_IMAGES}, got {count!r}; "
                         "run the command again for more")
    return [out] if count == 1 else [out.with_name(f"{out.stem}-{i + 1}.png") for i in range(count)]


def check_output_images(out: str | Path, count: int) -> list[Path]:
    """Refuse output names that cannot be written, before any work is done (their folder is probed once,
    the longest name, the last, is checked against the file system's limit)."""
    check_name_length(out, "the output image")
    if Path(out).is_dir():  # whatever its name: one line that suggests a file name in it
        check_writable_file(out, "the output image")
    paths = output_paths(out, count)
    check_name_length(paths[-1], "the output image")
    check_writable_file(paths[0], "the output image")
    for path in paths[1:]:
        if path.is_dir():
            raise OutputError(f"the output image {path} is a folder; choose another -o name")
    return paths


def save_images(images: np.ndarray, out: str | Path) -> list[Path]:
    """Write [N, H, W, 3] uint8 images as PNG (names: see output_paths), each one whole or not at all."""
    paths = output_paths(out, len(images))
    write_images(images, paths)
    return paths


def write_images(images, paths: list[Path]) -> None:
    """Write uint8 HxWx3 images to `paths` as PNG, each one whole or not at all."""
    if paths and not paths[0].parent.is_dir():
        raise OutputError(f"the output folder {paths[0].parent} does not exist")
    for image, path in zip(images, paths):
        with atomic_file(path) as f:
            Image.fromarray(image).save(f, format="PNG")


def images_to_files(paths: list[Path], chunk: int, seed: int | None, latent_size: int,
                    render: Callable[[np.ndarray], np.ndarray]) -> Iterator[Path]:
    """Make one image per path, `chunk` at a time: render(noise [k, 4, s, s]) -> uint8 images [k, H, W, 3],
    written before the next chunk starts, so memory does not grow with the count. The noise is drawn from
    one stream, so the images equal those of one call with initial_noise(seed, len(paths), ...)."""
    rng = noise_stream(seed)
    for start in range(0, len(paths), chunk):
        part = paths[start:start + chunk]
        images = render(draw_noise(rng, len(part), latent_size))
        write_images(images, part)
        del images
        yield from part
