"""jflow.runtime.image_io: spec §6.1 preprocessing (resize, centred pad, normalise) and §5.10 uint8 output."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from jflow.errors import InputError
from jflow.runtime.image_io import MAX_IMAGE_PIXELS, load_image, preprocess_images, to_uint8
from jflow.runtime.processor_config import ProcessorSettings

SETTINGS = ProcessorSettings()
# Peak RSS growth to load + preprocess a 10000x10000 RGB image (the README states them; measured 399 and
# 10 MiB, 765 MiB each before): PIL holds RGB at 4 bytes a pixel (381 MiB); the JPEG decodes at 1/8 scale.
PNG_10K_BOUND_MIB = 430
JPEG_10K_BOUND_MIB = 40
COLOUR = (200, 30, 60)
PAD = (127, 127, 127)


def solid(width, height, colour=COLOUR):
    return Image.new("RGB", (width, height), colour)


def to_pixels(x: np.ndarray) -> np.ndarray:
    """Undo mean=std=0.5 normalisation: [3, H, W] float -> [H, W, 3] in 0..255."""
    return np.rint((x * 0.5 + 0.5) * 255).astype(np.int64).transpose(1, 2, 0)


def short_side(short, long):
    return max(int(short / long * 384), 14)


def test_settings_defaults_are_the_siglip_ones():
    assert SETTINGS.image_size == 384 and SETTINGS.min_size == 14
    assert SETTINGS.background_color == PAD


def test_wide_image_is_resized_to_384_and_padded_top_and_bottom():
    out = preprocess_images([solid(300, 203)], SETTINGS)
    assert out.shape == (1, 3, 384, 384) and out.dtype == np.float32
    px = to_pixels(out[0])
    new_h = short_side(203, 300)  # 259.84 -> 259 (truncated); 125 pad rows: 62 top, 63 bottom
    top = (384 - new_h) // 2
    assert (new_h, top) == (259, 62)
    assert tuple(px[0, 0]) == PAD and tuple(px[top - 1, 200]) == PAD
    assert tuple(px[top + new_h, 200]) == PAD and tuple(px[383, 383]) == PAD
    content = px[top:top + new_h]
    assert np.all(content == COLOUR)  # full width: no left/right padding
    assert np.all(px[:top] == PAD) and np.all(px[top + new_h:] == PAD)


def test_tall_image_is_padded_left_and_right():
    out = preprocess_images([solid(120, 333)], SETTINGS)
    px = to_pixels(out[0])
    new_w = short_side(120, 333)
    left = (384 - new_w) // 2
    assert np.all(px[:, left:left + new_w] == COLOUR)
    assert np.all(px[:, :left] == PAD) and np.all(px[:, left + new_w:] == PAD)


def test_very_thin_image_keeps_the_minimum_size():
    px = to_pixels(preprocess_images([solid(1000, 10)], SETTINGS)[0])
    top = (384 - 14) // 2
    assert np.all(px[top:top + 14] == COLOUR)
    assert np.all(px[:top] == PAD) and np.all(px[top + 14:] == PAD)


def test_normalisation_maps_0_to_minus_1_and_255_to_1():
    arr = np.zeros((384, 384, 3), dtype=np.uint8)
    arr[:, 192:] = 255
    arr[0, 0] = (51, 102, 204)
    out = preprocess_images([arr, Image.fromarray(arr)], SETTINGS)
    assert out.shape == (2, 3, 384, 384) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], out[1])
    assert np.all(out[0][:, 1:, :192] == -1.0) and np.all(out[0][:, :, 192:] == 1.0)
    np.testing.assert_allclose(out[0][:, 0, 0], (np.array([51, 102, 204]) / 255 - 0.5) / 0.5, atol=1e-6)


def test_rgba_and_grayscale_inputs_become_rgb(tmp_path):
    rgba = np.zeros((384, 384, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    assert load_image(rgba).mode == "RGB"
    path = tmp_path / "g.png"
    Image.new("L", (20, 30), 77).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (20, 30) and img.getpixel((3, 3)) == (77, 77, 77)
    assert load_image(str(path)).size == (20, 30)


def test_load_image_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "missing.png")
    garbage = tmp_path / "x.png"
    garbage.write_bytes(b"this is not an image\x00\x01\x02" * 10)
    with pytest.raises(InputError):
        load_image(garbage)
    with pytest.raises(InputError):
        load_image(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(InputError):
        load_image(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(InputError):
        load_image(12345)
    with pytest.raises(InputError):
        preprocess_images([tmp_path / "missing.png"], SETTINGS)


def _load_within(path, seconds=20):
    """load_image(path) in a thread: (exception, still_running) -- a FIFO must not block the read."""
    import threading
    outcome = []

    def run():
        try:
            load_image(path)
            outcome.append(None)
        except Exception as exc:  # the InputError under test
            outcome.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return (outcome[0] if outcome else None), thread.is_alive()


def test_a_folder_a_fifo_and_a_device_are_named_as_what_they_are(tmp_path):
    import os
    (tmp_path / "pictures.png").mkdir()
    os.mkfifo(tmp_path / "pipe.png")
    garbage = tmp_path / "notes.png"
    garbage.write_text("not a picture")
    for path, what in [(tmp_path / "pictures.png", "is a folder, not a file"),
                       (tmp_path / "pipe.png", "is a named pipe (FIFO), not a file"),
                       ("/dev/zero", "is a character device, not a file")]:
        error, blocked = _load_within(path)
        assert not blocked, f"{path}: load_image blocked"
        assert isinstance(error, InputError) and f"image file {path} {what}; pass a PNG or JPEG file" == str(error)
    with pytest.raises(InputError, match=f"^image file not found: {tmp_path / 'missing.png'}"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match=f"^{garbage} is not a readable image \\(not in a format PIL can read\\)"):
        load_image(garbage)  # named by its path (PIL's own text names an open file object)


def test_to_uint8_truncates_clips_and_is_channels_last():
    v254_9 = np.float32(254.9 / 255 * 2 - 1)
    x = np.zeros((2, 3, 2, 3), dtype=np.float32)
    x[0, :, 0, 0] = [v254_9, 0.5, -1.0]        # 254.9 -> 254, 191.25 -> 191, 0
    x[0, :, 0, 1] = [1.0, 5.0, -7.0]           # clipped: 255, 255, 0
    x[0, :, 1, 0] = [0.0, -0.999, 0.9999]      # 127.5 -> 127, 0.1275 -> 0, 254.98 -> 254
    x[1] = 1.0
    out = to_uint8(x)
    assert out.shape == (2, 2, 3, 3) and out.dtype == np.uint8
    assert out[0, 0, 0].tolist() == [254, 191, 0]
    assert out[0, 0, 1].tolist() == [255, 255, 0]
    assert out[0, 1, 0].tolist() == [127, 0, 254]
    assert np.all(out[1] == 255)


# --- size limit (issue 12, point 8) ----------------------------------------------------------------

def _png_header_only(path, width, height, color_type=2):
    """A PNG whose IHDR declares width x height, with one tiny (truncated) IDAT: PIL reads the size from it."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _zero_png(path, width, height):
    """A real, valid grey PNG of any size, written row by row (no width x height array in memory)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    packer, row, parts = zlib.compressobj(1), b"\0" * (width + 1), []
    parts += [packer.compress(row) for _ in range(height)]
    parts.append(packer.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


def test_a_15000x15000_image_is_refused_with_the_limit(tmp_path):
    path = _zero_png(tmp_path / "huge.png", 15000, 15000)  # 225 megapixels: PIL's bomb error before
    with pytest.raises(InputError, match=r"huge.png is too large \(225.0 megapixels\); jflow reads images of at "
                                         r"most 100 megapixels \(e.g. 10000x10000\): downscale it first"):
        load_image(path)


@pytest.mark.parametrize("width, height", [(10001, 10000), (12000, 9000), (100000, 1001), (2**31 - 1, 2**31 - 1)])
def test_declared_sizes_over_the_limit_are_refused_before_decoding(tmp_path, width, height):
    under_pils_limit = width * height < 179_000_000  # PIL refuses larger ones itself, without the sides
    with pytest.raises(InputError, match=(f"big.png is too large: {width}x{height} " if under_pils_limit else
                                          "big.png is too large ") + r"\(.* megapixels\).* at most 100 megapixels"):
        load_image(_png_header_only(tmp_path / "big.png", width, height))


def test_the_limit_is_100_megapixels():
    assert MAX_IMAGE_PIXELS == 100_000_000 == 10000 * 10000


MEASURE = """
import resource, sys
from jflow.runtime.image_io import preprocess_images
from jflow.runtime.processor_config import ProcessorSettings
settings = ProcessorSettings()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pixels = preprocess_images([sys.argv[1]], settings)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(pixels.shape, (after - before) / 1024)
"""

MAKE_10K = """
import sys
import numpy as np
from PIL import Image
side = 10000
x = np.arange(side, dtype=np.uint16)
rgb = np.empty((side, side, 3), np.uint8)
rgb[..., 0] = (x[None, :] % 256)
rgb[..., 1] = (x[:, None] % 256)
rgb[..., 2] = ((x[None, :] + x[:, None]) // 80 % 256)
image = Image.fromarray(rgb)
image.save(sys.argv[1] + "/big.png", compress_level=1)
image.save(sys.argv[1] + "/big.jpg", quality=90)
"""


def test_10000x10000_png_and_jpeg_load_within_the_stated_memory(tmp_path):
    import subprocess
    import sys
    subprocess.run([sys.executable, "-c", MAKE_10K, str(tmp_path)], check=True, timeout=300)
    for name, bound in (("big.png", PNG_10K_BOUND_MIB), ("big.jpg", JPEG_10K_BOUND_MIB)):
        out = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / name)], capture_output=True, text=True,
                             check=True, timeout=300)
        shape, growth = out.stdout.rsplit(" ", 1)
        assert shape == "(1, 3, 384, 384)"
        assert float(growth) <= bound, f"{name}: peak RSS grew {float(growth):.0f} MiB > {bound} MiB"


# --- high bit depth and other modes (issue 12, point 10) ------------------------------------------

GRADIENT16 = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520


def test_16_bit_png_is_scaled_not_saturated(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(GRADIENT16).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")  # really a 16-bit file
    got = np.asarray(load_image(path))
    assert got.shape == (64, 64, 3) and np.all(got == got[..., :1])
    np.testing.assert_array_equal(got[..., 0], (GRADIENT16 >> 8).astype(np.uint8))
    assert (got == 255).mean() < 0.01  # was 99.6% white


def test_16_bit_rgb_png_is_scaled(tmp_path):
    rgb16 = np.random.default_rng(0).integers(0, 65536, (8, 8, 3)).astype(">u2")
    path = _raw_png(tmp_path / "rgb16.png", rgb16, bit_depth=16, color_type=2)
    np.testing.assert_array_equal(np.asarray(load_image(path)), (rgb16 >> 8).astype(np.uint8))


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I"])
def test_16_bit_modes_from_pil_and_files_scale_by_the_bit_depth(tmp_path, mode):
    dtype = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I": "<i4"}[mode]
    img = Image.frombytes(mode, (64, 64), GRADIENT16.astype(dtype).tobytes())
    expected = (GRADIENT16 >> 8).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(load_image(img))[..., 1], expected)
    img.save(tmp_path / "x.tif")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "x.tif"))[..., 2], expected)


def test_16_bit_arrays_are_scaled():
    rgb16 = np.random.default_rng(1).integers(0, 65536, (5, 6, 3)).astype(np.uint16)
    np.testing.assert_array_equal(np.asarray(load_image(rgb16)), (rgb16 >> 8).astype(np.uint8))


def test_float_images_are_read_as_0_to_1():
    values = np.array([[0.0, 0.25, 0.5], [1.0, 2.0, -1.0]], np.float32)
    got = np.asarray(load_image(Image.fromarray(values)))[..., 0]
    np.testing.assert_array_equal(got, [[0, 64, 128], [255, 255, 0]])


@pytest.mark.parametrize("mode, fmt", [("1", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("PA", None),
                                       ("RGBA", "PNG"), ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("La", None),
                                       ("RGBa", None), ("YCbCr", "JPEG"), ("HSV", None), ("LAB", None)])
def test_other_modes_become_the_right_rgb(tmp_path, mode, fmt):
    base = Image.new("RGB", (16, 12), (200, 30, 60))
    base.paste((10, 240, 90), (0, 0, 8, 6))
    img = base.convert("L").convert(mode) if mode in ("1", "L", "LA") else base.convert(mode)
    if mode == "La":
        img = base.convert("LA").convert("La")
    if mode in ("P", "PA"):
        img = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=4).convert(mode)
    expected = np.asarray(img.convert("LA").convert("RGB") if mode == "La" else img.convert("RGB"), np.int16)
    tolerance = 0
    if fmt is not None:
        exact = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
        img.save(tmp_path / f"x.{fmt.lower()}", format=fmt, **exact)
        img = tmp_path / f"x.{fmt.lower()}"
        tolerance = 8 if fmt == "JPEG" else 0
    got = load_image(img)
    assert got.mode == "RGB" and got.size == (16, 12)
    assert np.abs(np.asarray(got, np.int16) - expected).max() <= tolerance


def _raw_png(path, pixels, bit_depth, color_type):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    height, width = pixels.shape[:2]
    raw = b"".join(b"\0" + pixels[y].tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path
