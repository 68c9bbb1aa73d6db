"""The picture of a chat request: a `data:` URL with a base64 PNG or JPEG, decoded with bounded memory.

Remote URLs are refused: a device must not fetch the internet on a client's behalf (it may be offline, and
a server that fetches what it is told can be pointed at the device's own network).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

from PIL import Image

from jflow.runtime.image_io import to_rgb
from jflow.serving.api_errors import APIError, bad_field, too_large

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,",
                       re.IGNORECASE)
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg"}


def decode_image_url(url, param: str, max_pixels: int) -> Image.Image:
    """An RGB picture from `url`, or a 400/413 naming `param`."""
    if not isinstance(url, str) or not url:
        raise bad_field(param, "must be a data: URL with a base64 PNG or JPEG (data:image/png;base64,...)")
    head = _DATA_URL.match(url)
    if head is None:
        scheme = url.split(":", 1)[0].lower() if ":" in url[:16] else "none"
        raise bad_field(param, f"only data: URLs are accepted (got a {scheme!r} URL): this server does not fetch "
                               "pictures from the network; send the file inline as data:image/png;base64,...",
                        code="unsupported_url")
    if not head["b64"]:
        raise bad_field(param, "the data: URL must be base64 (data:image/png;base64,...)")
    try:
        data = base64.b64decode(re.sub(r"\s+", "", url[head.end():]), validate=True)  # some clients wrap lines
    except (binascii.Error, ValueError) as exc:
        raise bad_field(param, f"the data: URL's base64 does not decode ({exc})") from exc
    return _open(data, param, max_pixels)


def _open(data: bytes, param: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's bomb warning: our own, lower limit applies below
            img = Image.open(io.BytesIO(data))
            if img.format not in FORMATS:
                raise bad_field(param, f"the picture is {img.format or 'of an unknown format'}; send a PNG or JPEG")
            width, height = img.size
            if width * height > max_pixels:
                raise too_large(f"{param}: the picture is {width}x{height} ({width * height / 1e6:.1f} megapixels); "
                                f"this server accepts at most {max_pixels / 1e6:g} megapixels (--max-image-pixels): "
                                "downscale it first (the model sees 384x384)", param=param, code="image_too_large")
            if min(width, height) < 1:
                raise bad_field(param, f"the picture has no pixels ({width}x{height})")
            img.load()
    except APIError:
        raise
    except Image.DecompressionBombError as exc:  # PIL's own limit (~179 MP), met before ours on huge headers
        raise too_large(f"{param}: the picture is too large ({exc})", param=param, code="image_too_large") from exc
    except Exception as exc:  # damaged files raise OSError, SyntaxError, ValueError, EOFError, zlib.error...
        raise bad_field(param, f"not a readable PNG or JPEG ({type(exc).__name__}: {exc})") from exc
    return to_rgb(img)
