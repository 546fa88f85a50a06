"""Tiny random-weight autoencoders of the other families, built from their libraries' own classes.

The demo's family models are generated at run time (rule `demo_family_weights`) and written in
their libraries' own formats, so that they go through the same import as released weights: a
diffusers `AutoencoderKL` folder (`save_pretrained`) and a MAISI state dict (`torch.save`). Every
tensor is drawn from a seeded generator, so the same seed writes the same bytes; the import
marks them demo weights like every network of a demo run. The tests build their instances here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medlatent.core.atomic import save_torch
from medlatent.core.errors import ConfigError
from medlatent.models.families import maisi

#: diffusers' test-size AutoencoderKL: three blocks (factor 4 per axis), widths 8-16.
TINY_KL: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (8, 16, 16),
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "sample_size": 32,
}
#: The demo's AutoencoderKL has Stable Diffusion 1.x's latent: 4 channels, scaling factor 0.18215.
SD_LATENT = {"latent_channels": 4, "scaling_factor": 0.18215}


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every tensor drawn at random (GroupNorm affines too), so that no part of the network is an identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def autoencoder_kl(seed: int = 0, **latent: Any) -> torch.nn.Module:
    """A `TINY_KL` diffusers AutoencoderKL; `latent`: its latent keys (channels, scaling, quant convs)."""
    from diffusers import AutoencoderKL

    return randomised(AutoencoderKL(**TINY_KL, **latent), seed)


def maisi_autoencoder(network: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """MONAI's AutoencoderKlMaisi with these network arguments (all of them)."""
    return randomised(maisi.build(network), seed)


def write_demo_weights(model: dict[str, Any], seed: int, out: str | Path) -> None:
    """The tiny random weights of a demo family model entry: a diffusers folder, or a MAISI state dict.

    A MAISI entry's `network:` gives its widths (the import builds the same network from it).
    """
    if model["family"] == "diffusers":
        autoencoder_kl(seed, **SD_LATENT).save_pretrained(out, safe_serialization=True)
    elif model["family"] == "maisi":
        save_torch(out, maisi_autoencoder(maisi.network(model), seed).state_dict())
    else:
        raise ConfigError(
            f"models[{model['id']}]: the demo generates weights of families diffusers and maisi, "
            f"not {model['family']!r}; point `weights:` at a file of that family"
        )
