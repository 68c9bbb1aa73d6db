"""JanusFlow config.json in the official layout, parsed into typed settings with clear errors.

Official layout: {"vision_und_enc_config": {"cls", "params"}, "vision_gen_enc_config": {...},
"vision_gen_dec_config": {...}, "language_config": {...}}. Every width comes from here, never from
constants, so Llama variants (other sizes, grouped-query attention, tied embeddings) load too.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

from jflow.json_file import read_config_object
from jflow.errors import ConfigError
from jflow.modeling import config_fields as fields

CONFIG_FILE = "config.json"
SECTIONS = ("vision_und_enc_config", "vision_gen_enc_config", "vision_gen_dec_config", "language_config")

# SigLIP towers the official code knows by name (siglip_vit.SigLIP_MODEL_CONFIG).
SIGLIP_VARIANTS = {
    "siglip_large_patch16_384": dict(image_size=384, patch_size=16, width=1024, layers=24, heads=16, mlp_ratio=4.0),
    "siglip_large_patch16_256": dict(image_size=256, patch_size=16, width=1024, layers=24, heads=16, mlp_ratio=4.0),
    "siglip_so400m_patch14_384": dict(image_size=336, patch_size=14, width=1152, layers=27, heads=16,
                                      mlp_ratio=3.7362),
    "siglip_so400m_patch14_224": dict(image_size=224, patch_size=14, width=1152, layers=27, heads=16,
                                      mlp_ratio=3.7362),
}
# jflow extension: these params, when present, override the named variant (used by the tiny preset).
SIGLIP_OVERRIDES = ("patch_size", "width", "layers", "heads", "mlp_ratio")


@dataclass(frozen=True)
class SiglipConfig:
    image_size: int
    patch_size: int
    width: int
    layers: int  # after select_layer truncation: the blocks that exist and run
    heads: int
    mlp_dim: int
    pixel_mean: tuple | None = None  # optional in-tower normalisation (official image_norm)
    pixel_std: tuple | None = None

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_params(cls, params: dict, source: str = CONFIG_FILE) -> "SiglipConfig":
        name = params.get("model_name", "siglip_large_patch16_384")
        base = dict(SIGLIP_VARIANTS.get(name, {}))
        base.update({k: params[k] for k in SIGLIP_OVERRIDES if k in params})
        missing = [k for k in SIGLIP_OVERRIDES if k not in base]
        if missing:
            raise ConfigError(f"vision_und_enc_config: unknown model_name {name!r} (known: "
                              f"{sorted(SIGLIP_VARIANTS)}); give {missing} in params or use a known name")
        image_size = int(params.get("image_size", base.get("image_size", 384)))
        depth = int(base["layers"])
        select = int(params.get("select_layer", -1))
        # Official create_siglip_vit physically truncates the tower.
        layers = min(depth, depth + select + 1) if select <= 0 else min(depth, select)
        if layers < 1:
            raise ConfigError(f"vision_und_enc_config: select_layer {select} leaves no block of {depth}")
        if image_size % int(base["patch_size"]):
            raise ConfigError(f"vision_und_enc_config: image_size {image_size} is not a multiple of the "
                              f"patch size {base['patch_size']}")
        width = int(base["width"])
        if width % int(base["heads"]):
            raise ConfigError(f"{source}: vision_und_enc_config: heads {base['heads']} must divide width {width}")
        has_norm = params.get("pixel_mean") is not None and params.get("pixel_std") is not None
        return cls(image_size=image_size, patch_size=int(base["patch_size"]), width=width, layers=layers,
                   heads=int(base["heads"]), mlp_dim=int(width * float(base["mlp_ratio"])),
                   pixel_mean=tuple(params["pixel_mean"]) if has_norm else None,
                   pixel_std=tuple(params["pixel_std"]) if has_norm else None)


@dataclass(frozen=True)
class GenEncoderConfig:
    """ShallowUViTEncoder params (official defaults where the config is silent)."""
    input_channels: int = 3
    stride: int = 4
    kernel_size: int = 7
    padding: int | None = None
    block_out_channels: tuple = (768,)
    layers_in_middle: int = 2
    hidden_size: int = 2048
    use_bias: bool = True
    norm_eps: float = 1e-6
    use_mid_block: bool = True

    @property
    def channels(self) -> int:
        return int(self.block_out_channels[-1])

    @property
    def conv_padding(self) -> int:
        return math.ceil(self.kernel_size - self.stride) if self.padding is None else int(self.padding)

    def grid_size(self, latent_size: int) -> int:
        """Side of the token grid that in_conv makes from a latent of this side."""
        return (latent_size + 2 * self.conv_padding - self.kernel_size) // self.stride + 1


@dataclass(frozen=True)
class GenDecoderConfig:
    """ShallowUViTDecoder params (official defaults where the config is silent)."""
    in_channels: int = 768
    out_channels: int = 3
    block_out_channels: tuple = (768,)
    upsamples: int = 2
    layers_in_middle: int = 2
    hidden_size: int = 2048
    use_bias: bool = True
    norm_eps: float = 1e-6
    use_mid_block: bool = True


@dataclass
class JanusFlowConfig:
    siglip: SiglipConfig
    gen_encoder: GenEncoderConfig
    gen_decoder: GenDecoderConfig
    language: dict  # kwargs of transformers.LlamaConfig
    raw: dict = field(repr=False, default_factory=dict)
    # JanusFlow generates 384x384 images: SDXL-VAE latents of 48x48 (the VAE scales by 8).
    latent_size: int = 48

    @property
    def hidden_size(self) -> int:
        return int(self.language["hidden_size"])

    @property
    def rms_norm_eps(self) -> float:
        return float(self.language.get("rms_norm_eps", 1e-6))

    @property
    def gen_grid(self) -> int:
        return self.gen_encoder.grid_size(self.latent_size)

    @property
    def num_gen_tokens(self) -> int:
        return self.gen_grid ** 2

    @classmethod
    def from_dict(cls, raw: dict, source: str = CONFIG_FILE) -> "JanusFlowConfig":
        if not isinstance(raw, dict):
            raise ConfigError(f"{source} must hold a JSON object")
        for section in SECTIONS:
            if not isinstance(raw.get(section), dict):
                raise ConfigError(f"{source} has no '{section}' object; this is not a JanusFlow config.json "
                                  f"(expected sections: {', '.join(SECTIONS)})")
        language = dict(raw["language_config"])
        for key in fields.REQUIRED["language_config"]:
            if key not in language:
                raise ConfigError(f"{source}: language_config has no '{key}'")
        fields.check_language(language, source)
        params = {section: _params(raw, section, source) for section in SECTIONS[:3]}
        for section, table in zip(SECTIONS, (fields.SIGLIP, fields.GEN_ENCODER, fields.GEN_DECODER)):
            fields.check_section(params[section], table, f"{section}.params", source)
        gen_enc = _dataclass_from(GenEncoderConfig, params["vision_gen_enc_config"])
        gen_dec = _dataclass_from(GenDecoderConfig, params["vision_gen_dec_config"])
        config = cls(siglip=SiglipConfig.from_params(params["vision_und_enc_config"], source),
                     gen_encoder=gen_enc, gen_decoder=gen_dec, language=language, raw=copy.deepcopy(raw))
        config._check_consistency(source)
        return config

    def _check_consistency(self, source: str) -> None:
        hidden = self.hidden_size
        for name, value in (("vision_gen_enc_config.params.hidden_size", self.gen_encoder.hidden_size),
                            ("vision_gen_dec_config.params.hidden_size", self.gen_decoder.hidden_size)):
            if value != hidden:
                raise ConfigError(f"{source}: {name} is {value} but language_config.hidden_size is {hidden}; "
                                  "the time embedding must have the LLM width")
        if self.gen_decoder.in_channels != self.gen_encoder.channels:
            raise ConfigError(f"{source}: vision_gen_dec in_channels {self.gen_decoder.in_channels} != "
                              f"encoder channels {self.gen_encoder.channels}")
        if self.gen_decoder.block_out_channels[-1] != self.gen_encoder.channels:
            raise ConfigError(f"{source}: the decoder's skip width {self.gen_decoder.block_out_channels[-1]} "
                              f"!= encoder channels {self.gen_encoder.channels}")
        if self.gen_grid * 2 ** self.gen_decoder.upsamples != self.latent_size:
            raise ConfigError(f"{source}: the decoder's {self.gen_decoder.upsamples} unpatchify stage(s) turn a "
                              f"{self.gen_grid}x{self.gen_grid} grid into {self.gen_grid * 2 ** self.gen_decoder.upsamples}"
                              f", not the {self.latent_size}x{self.latent_size} latent; check upsamples/stride")
        if self.gen_encoder.input_channels != self.gen_decoder.out_channels:
            raise ConfigError(f"{source}: encoder input_channels {self.gen_encoder.input_channels} != decoder "
                              f"out_channels {self.gen_decoder.out_channels} (both are the latent channels)")

    def to_dict(self) -> dict:
        return copy.deepcopy(self.raw)


def read_config(folder: str | Path) -> JanusFlowConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing; a JanusFlow checkpoint folder holds config.json")
    return JanusFlowConfig.from_dict(read_config_object(path), source=str(path))


def _params(raw: dict, section: str, source: str) -> dict:
    params = raw[section].get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: {section}.params must be an object")
    return params


def _dataclass_from(cls, params: dict):
    # Unknown keys are ignored, as the official constructors take **kwargs.
    known = {k: v for k, v in params.items() if k in cls.__dataclass_fields__}
    if "block_out_channels" in known:
        known["block_out_channels"] = tuple(int(c) for c in known["block_out_channels"])
    return cls(**known)
