"""What one request may ask of the server. Each bound keeps one request from holding the single Pipeline
(and the device's memory) for long; the README's "Serving over HTTP" section states them."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class ServeLimits:
    queue: int = 8                      # requests waiting behind the one running; more get 503
    max_body_bytes: int = 16 * MIB      # a JSON body (a base64 picture is 4/3 of the file)
    max_image_pixels: int = 16_000_000  # a picture's width x height, checked before it is decoded
    max_images: int = 4                 # `n` of one image request
    max_steps: int = 100                # `steps` of one image request (30 is the official setting)
    retry_after_s: int = 2              # what a 503 tells the client to wait

    def __post_init__(self):
        for name in ("queue", "max_body_bytes", "max_image_pixels", "max_images", "max_steps", "retry_after_s"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "queue" else 1):
                raise ValueError(f"serve limit {name} must be a whole number >= {0 if name == 'queue' else 1}, "
                                 f"got {value!r}")
