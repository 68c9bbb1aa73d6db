"""The processor settings of a JanusFlow checkpoint: prompt tags and image preprocessing.

Read from `processor_config.json` and `preprocessor_config.json` (official names); a missing file or
key takes the official code default, so a checkpoint without them still loads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jflow.errors import ConfigError

PROCESSOR_FILE = "processor_config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"


@dataclass(frozen=True)
class ProcessorSettings:
    # Prompt tags (processor_config.json). JanusFlow's start tag is <image_beg>, not Janus's.
    image_tag: str = "<image_placeholder>"
    image_start_tag: str = "<image_beg>"
    image_end_tag: str = "<end_of_image>"
    image_gen_tag: str = "<｜begin▁of▁generation｜>"
    num_image_tokens: int = 576
    # Image preprocessing (preprocessor_config.json).
    image_size: int = 384
    min_size: int = 14
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1.0 / 255.0
    do_normalize: bool = True
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def background_color(self) -> tuple[int, int, int]:
        # Official: tuple(int(x * 255) for x in image_mean); (127,127,127) for mean 0.5.
        return tuple(int(m * 255) for m in self.image_mean)

    @classmethod
    def from_dir(cls, folder: str | Path) -> "ProcessorSettings":
        folder = Path(folder)
        proc = _read_optional_json(folder / PROCESSOR_FILE)
        pre = _read_optional_json(folder / PREPROCESSOR_FILE)
        kwargs = {}
        for key in ("image_tag", "image_start_tag", "image_end_tag", "image_gen_tag"):
            if key in proc:
                kwargs[key] = str(proc[key])
        if "num_image_tokens" in proc:
            kwargs["num_image_tokens"] = int(proc["num_image_tokens"])
        for key in ("image_size", "min_size"):
            if key in pre:
                kwargs[key] = int(pre[key])
        for key in ("image_mean", "image_std"):
            if key in pre:
                kwargs[key] = _three_floats(pre[key], folder / PREPROCESSOR_FILE, key)
        if "rescale_factor" in pre:
            kwargs["rescale_factor"] = float(pre["rescale_factor"])
        if "do_normalize" in pre:
            kwargs["do_normalize"] = bool(pre["do_normalize"])
        return cls(**kwargs)

    def to_processor_json(self) -> dict:
        """processor_config.json in the official layout."""
        return {
            "add_special_token": False,
            "ignore_id": -100,
            "image_tag": self.image_tag,
            "image_start_tag": self.image_start_tag,
            "image_end_tag": self.image_end_tag,
            "image_gen_tag": self.image_gen_tag,
            "mask_prompt": True,
            "num_image_tokens": self.num_image_tokens,
            "processor_class": "VLChatProcessor",
            "sft_format": "deepseek_old",
        }

    def to_preprocessor_json(self) -> dict:
        """preprocessor_config.json in the official layout."""
        return {
            "background_color": list(self.background_color),
            "do_normalize": self.do_normalize,
            "image_mean": list(self.image_mean),
            "image_processor_type": "VLMImageProcessor",
            "image_size": self.image_size,
            "image_std": list(self.image_std),
            "min_size": self.min_size,
            "processor_class": "VLChatProcessor",
            "rescale_factor": self.rescale_factor,
        }

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        return d


def _read_optional_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); restore it from the original checkpoint") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def _three_floats(value, path: Path, key: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    if isinstance(value, (list, tuple)) and len(value) == 3:
        return tuple(float(v) for v in value)
    raise ConfigError(f"{path}: '{key}' must be a number or a list of 3 numbers, found {value!r}")
