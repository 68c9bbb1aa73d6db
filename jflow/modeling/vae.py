"""SDXL VAE decoder: `diffusers.AutoencoderKL`, loaded from its own folder as the official demo does."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL

from jflow.errors import CheckpointError

VAE_SUBFOLDER = "vae"
VAE_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")

# stabilityai/sdxl-vae config.json (the fields that shape the network).
SDXL_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=[128, 256, 512, 512], act_fn="silu", sample_size=1024, scaling_factor=0.13025,
    force_upcast=True,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
)


def find_vae_folder(checkpoint: Path, vae_path: str | Path | None) -> Path:
    """The VAE folder: an explicit path, else CHECKPOINT/vae; a clear error when neither exists."""
    folder = Path(vae_path) if vae_path is not None else checkpoint / VAE_SUBFOLDER
    if not (folder / "config.json").is_file():
        where = f"--vae {folder}" if vae_path is not None else f"{folder} (the checkpoint's vae/ subfolder)"
        raise CheckpointError(
            f"no SDXL VAE found at {where}: it needs config.json and {VAE_WEIGHTS[0]}. Download "
            "stabilityai/sdxl-vae once and put it in the checkpoint's vae/ folder or pass its path. "
            "(Understanding alone needs no VAE: load with load_vae=False.)")
    if not any((folder / name).is_file() for name in VAE_WEIGHTS):
        raise CheckpointError(f"{folder} has config.json but no {VAE_WEIGHTS[0]}; copy the VAE weights there")
    return folder


def read_vae(folder: Path, dtype: torch.dtype) -> AutoencoderKL:
    # fp16 SDXL-VAE overflows to NaN (spec §8), so an fp16 request keeps the VAE in fp32.
    vae_dtype = torch.float32 if dtype == torch.float16 else dtype
    try:
        vae = AutoencoderKL.from_pretrained(str(folder), torch_dtype=vae_dtype, local_files_only=True,
                                            low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, EnvironmentError) as exc:
        raise CheckpointError(f"the VAE in {folder} could not be loaded: {exc}") from exc
    return vae.eval()


def vae_decode(vae: AutoencoderKL, z: torch.Tensor) -> torch.Tensor:
    """Latent [B, 4, s, s] -> image [B, 3, 8s, 8s] in about [-1, 1]; no shift factor (SDXL)."""
    z = z.to(vae.dtype) / vae.config.scaling_factor
    return vae.decode(z).sample
