"""jflow.runtime.image_io: spec §6.1 preprocessing (resize, centred pad, normalise) and §5.10 uint8 output."""

import numpy as np
import pytest
from PIL import Image

from jflow.errors import InputError
from jflow.runtime.image_io import load_image, preprocess_images, to_uint8
from jflow.runtime.processor_config import ProcessorSettings

SETTINGS = ProcessorSettings()
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
