"""Fuzzing the image loader: each case ends in an InputError with a clear one-line message, or in a
correct RGB image; never in another exception. Seeded, so the case list (and the README's count) is
fixed; it runs in a few seconds."""

import io
import struct
import zlib
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from jflow.errors import InputError
from jflow.runtime.image_io import load_image

SEED = 2024
FORMATS = {"PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"), "JPEG": ("L", "RGB", "CMYK"),
           "BMP": ("1", "L", "P", "RGB", "RGBA"), "GIF": ("L", "P"), "TIFF": ("1", "L", "RGB", "RGBA", "CMYK", "I;16"),
           "WEBP": ("RGB", "RGBA")}
LOSSLESS = {"PNG", "BMP", "TIFF"}
MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
         b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"\x00\x00\x01\x00"]
COUNTS = {"random": 500, "valid": 500, "truncated": 1000, "corrupted": 1000, "huge": 200, "array": 300}
CLEAR = ("is not a readable image", "is too large", "has no pixels", "cannot convert")


def _pixels(rng, mode, width, height):
    if mode == "I;16":
        return Image.frombytes("I;16", (width, height), rng.integers(0, 65536, (height, width)).astype("<u2").tobytes())
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=int(rng.integers(2, 256)))
    return rgb.convert(mode)


def _expected_rgb(img):
    """What the file holds as 8-bit RGB, by PIL and numpy directly (not through jflow)."""
    if img.mode.startswith("I"):
        return np.repeat((np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


def _valid_file(rng):
    fmt = str(rng.choice(list(FORMATS)))
    mode = str(rng.choice(FORMATS[fmt]))
    width, height = (int(v) for v in rng.integers(1, 120, 2))
    source = _pixels(rng, mode, width, height)
    buffer = io.BytesIO()
    source.save(buffer, format=fmt)
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as decoded:  # lossy formats: what PIL itself decodes
        expected = _expected_rgb(source if fmt in LOSSLESS else decoded)
    return fmt, data, expected


def _png_with_size(width, height):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 97))
            + chunk(b"IEND", b""))


def cases(rng):
    """(kind, file bytes or an array, expected: an RGB array, "refuse", or "any" RGB image)."""
    for _ in range(COUNTS["random"]):
        yield "random bytes", MAGIC[rng.integers(len(MAGIC))] + rng.bytes(int(rng.integers(0, 3000))), "refuse"
    for _ in range(COUNTS["valid"]):
        fmt, data, expected = _valid_file(rng)
        yield f"valid {fmt}", data, expected
    for _ in range(COUNTS["truncated"]):
        fmt, data, expected = _valid_file(rng)
        yield f"truncated {fmt}", data[:int(rng.integers(0, len(data)))], expected
    for _ in range(COUNTS["corrupted"]):
        fmt, data, expected = _valid_file(rng)
        damaged = bytearray(data)
        for at in rng.integers(0, len(data), int(rng.integers(1, 9))):
            damaged[at] = int(rng.integers(0, 256))
        yield f"corrupted {fmt}", bytes(damaged), "any"  # the header (so the size) may be hit too
    for _ in range(COUNTS["huge"]):
        width, height = (int(v) for v in rng.integers(1, 2**31, 2))
        yield "huge PNG header", _png_with_size(width, height), "refuse"
    for _ in range(COUNTS["array"]):
        shape = tuple(int(v) for v in rng.integers(0, 6, int(rng.integers(1, 5))))
        dtype = np.dtype(rng.choice([np.uint8, np.uint8, np.uint16, np.float32, np.int64, np.bool_]))
        array = rng.integers(0, 2, shape).astype(dtype) * (np.iinfo(dtype).max if dtype.kind == "u" else 1)
        fine = dtype.kind == "u" and len(shape) == 3 and shape[2] in (3, 4) and min(shape) > 0
        expected = (array[..., :3] >> (8 if dtype == np.uint16 else 0)).astype(np.uint8) if fine else "refuse"
        yield "array", array, expected


def run_case(tmp_path, index, kind, payload, expected):
    """'refused' or 'image'; raises AssertionError for anything else."""
    if isinstance(payload, bytes):
        path = tmp_path / f"case{index}.img"
        path.write_bytes(payload)
        source = path
    else:
        source = payload
    try:
        image = load_image(source)
    except InputError as exc:
        text = str(exc)
        assert "\n" not in text, (kind, text)
        if isinstance(payload, bytes):
            assert str(source) in text and any(words in text for words in CLEAR), (kind, text)
        return "refused"
    except Exception as exc:  # the bug this test hunts
        raise AssertionError(f"{kind}: {type(exc).__name__}: {exc}") from exc
    assert not isinstance(expected, str) or expected == "any", f"{kind} should have been refused"
    got = np.asarray(image)
    assert image.mode == "RGB" and got.ndim == 3 and got.shape[2] == 3 and min(got.shape) > 0, kind
    if isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(got, expected, err_msg=kind)
    return "image"


def test_fuzz_image_loader(tmp_path):
    rng = np.random.default_rng(SEED)
    tally, problems = Counter(), []
    for index, (kind, payload, expected) in enumerate(cases(rng)):
        try:
            tally[(kind.split()[0], run_case(tmp_path, index, kind, payload, expected))] += 1
        except AssertionError as exc:
            problems.append(str(exc).splitlines()[0])
    print(f"{sum(tally.values()) + len(problems)} cases:", dict(sorted(tally.items())))
    assert not problems, f"{len(problems)} bad outcome(s), e.g. {problems[:5]}"
    assert sum(tally.values()) == sum(COUNTS.values())
    assert tally[("valid", "image")] == COUNTS["valid"] and tally[("huge", "refused")] == COUNTS["huge"]
    assert tally[("random", "refused")] == COUNTS["random"]
