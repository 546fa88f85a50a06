"""Tiny random-weight instances of the other autoencoder families, saved in their libraries' own formats.

Configurations from the families' facts (docs/autoencoder-families.md): diffusers' test-size
AutoencoderKL (SD/SDXL shape with quant convs, SD3/FLUX shape without, shift factor set) and
VQModel, and MAISI's released CT keys at test width. The AutoencoderKL and MAISI builders are
the demo's (`medlatent.demo.autoencoders`). diffusers models are written with `save_pretrained`
(config.json + diffusion_pytorch_model.safetensors), MAISI as a plain state dict.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medlatent.demo import autoencoders
from medlatent.demo.autoencoders import randomised

KL_SHAPES = {
    "sd": {"latent_channels": 4, "scaling_factor": 0.13025},
    "sd3": {"latent_channels": 16, "scaling_factor": 1.5305, "shift_factor": 0.0609,
            "use_quant_conv": False, "use_post_quant_conv": False},
}  # fmt: skip
MAISI_TINY = {
    "spatial_dims": 3, "in_channels": 1, "out_channels": 1, "latent_channels": 4, "num_channels": [8, 16, 16],
    "num_res_blocks": [1, 1, 1], "norm_num_groups": 4, "norm_eps": 1e-6, "attention_levels": [False, False, False],
    "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False, "use_checkpointing": False,
    "use_convtranspose": False, "norm_float16": False, "num_splits": 1, "dim_split": 1,
}  # fmt: skip


def autoencoder_kl(shape: str = "sd", seed: int = 0):
    return autoencoders.autoencoder_kl(seed, **KL_SHAPES[shape])


def vq_model(seed: int = 0):
    from diffusers import VQModel

    model = VQModel(
        block_out_channels=[8, 16], norm_num_groups=8, in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=3, num_vq_embeddings=32,
    )  # fmt: skip
    return randomised(model, seed)


def video_vae(class_name: str, seed: int = 0):
    """diffusers' test-size Wan 2.1 VAE, or a CogVideoX VAE at width 8: /8 in plane, /4 in time."""
    import diffusers

    if class_name == "AutoencoderKLWan":
        model = diffusers.AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        )
    else:
        model = diffusers.AutoencoderKLCogVideoX(
            in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
            layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
        )  # fmt: skip
    return randomised(model, seed)


def maisi_model(seed: int = 0, **network):
    return autoencoders.maisi_autoencoder({**MAISI_TINY, **network}, seed)


def save_diffusers(model, folder: Path) -> dict[str, Path]:
    """`save_pretrained` into `folder`; its files by name, for a hub cache."""
    model.save_pretrained(folder, safe_serialization=True)
    return {path.name: path for path in sorted(folder.iterdir())}


def save_maisi(model, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path
