"""The processor settings of a JanusFlow checkpoint: prompt tags and image preprocessing.

Read from `processor_config.json` and `preprocessor_config.json` (official names); a missing file or
key takes the official code default, so a checkpoint without them still loads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from jflow.json_file import read_config_object
from jflow.fields import check_fields, flag, non_empty_text, positive_int, positive_real, positive_real_or_three, \
    real_or_three

PROCESSOR_FILE = "processor_config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
# The fields read, with their types (a wrong one is a ConfigError naming file and field).
PROCESSOR_FIELDS = {"image_tag": non_empty_text, "image_start_tag": non_empty_text, "image_end_tag": non_empty_text,
                    "image_gen_tag": non_empty_text, "num_image_tokens": positive_int}
PREPROCESSOR_FIELDS = {"image_size": positive_int, "min_size": positive_int, "image_mean": real_or_three,
                       "image_std": positive_real_or_three, "rescale_factor": positive_real, "do_normalize": flag}


RESTORE = "restore it from the original checkpoint"


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
        proc = read_config_object(folder / PROCESSOR_FILE, RESTORE)
        pre = read_config_object(folder / PREPROCESSOR_FILE, RESTORE)
        check_fields(proc, PROCESSOR_FIELDS, folder / PROCESSOR_FILE)
        check_fields(pre, PREPROCESSOR_FIELDS, folder / PREPROCESSOR_FILE)
        kwargs = {key: proc[key] for key in PROCESSOR_FIELDS if key in proc}
        kwargs.update({key: pre[key] for key in PREPROCESSOR_FIELDS if key in pre})
        for key in ("image_mean", "image_std"):
            if key in kwargs:
                value = kwargs[key]
                kwargs[key] = tuple(float(v) for v in value) if isinstance(value, list) else (float(value),) * 3
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


