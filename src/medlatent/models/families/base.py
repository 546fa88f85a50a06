"""The one protocol every autoencoder family implements, and the input adaptation they share.

Extraction (`medlatent.latents.extract`) and `medlatent decode` see a model only through
`LatentModel`: items come in as the normalized arrays of a shard (values in [-1, 1],
background -1, 2D `(H, W)`, 3D `(X, Y, Z)`), and each family adapts them to what its network
expects (channels, intensity, size), encodes them to a deterministic latent and decodes a
latent back onto the padded item grid, in the normalized intensity scale and one channel.

Adaptation shared by the natural-image families (recorded in every dataset card):
- channels: gray is repeated to the network's input channels (as MediBench and the
  Foundation-VAE scripts feed medical images to RGB VAEs); RGB output is averaged back to gray;
- size: every axis is padded at its end with the background value to a multiple of the
  network's factor on that axis (the diffusers encoders silently floor other sizes), and the
  decoder output is cropped back by the caller (`encoding.normalized_shape`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from medlatent.models.autoencoder import Padding
from medlatent.normalize import BACKGROUND

#: Format of the final weights file of an imported family model (`results/models/{model}/stage2.pt`).
FAMILY_FORMAT = "medlatent-family-model/1"


class LatentModel(nn.Module):
    """An autoencoder as extraction and decoding use it; one subclass per family.

    Attributes every family sets: `family` (its name in `models[].family`), `spec` (the config
    entry), `is_demo`, `dims` (2 or 3: the items it encodes), `factors` (item pixels or voxels
    per latent position, per item axis), `latent_channels`, `decoded_from` (the stored array the
    decoder reads: `latent`, `mean` for projected MedVAE latents, `indices` for VQ codes) and
    `windowed` (3D families whose `encode_latent` MONAI's sliding window may run window by window;
    they also give `encode_posterior`). A 3D model that is not windowed encodes a whole volume per
    call: slice-wise in chunks of `slices_per_forward` slices of its last axis, which extraction
    derives from `latents.max_memory_gb` and `item_bytes` of one slice (`budget_unit`), or, for a
    video VAE, all of it at once (`item_bytes` of the whole volume).
    """

    family: str
    dims: int
    factors: tuple[int, ...]
    latent_channels: int
    decoded_from: str = "latent"
    windowed: bool = False
    #: what a latent is: `posterior_mean`, or `vector_quantized` (VQ: the quantized latent and its codes)
    method: str = "posterior_mean"
    #: arrays `latents.store` may ask for beside the latent (`mean`: the unprojected mean; `logvar`)
    posterior_arrays: tuple[str, ...] = ("logvar",)
    #: arrays always stored beside the latent (VQ: `indices`, the integer codes)
    extra_arrays: tuple[str, ...] = ()
    projected: bool = False

    def __init__(self, spec: dict[str, Any], is_demo: bool) -> None:
        super().__init__()
        self.spec = dict(spec)
        self.is_demo = bool(is_demo)

    @property
    def downsample_factor(self) -> int:
        """The factor of an isotropic model (windowing needs one); ValueError otherwise."""
        if len(set(self.factors)) != 1:
            raise ValueError(f"{self.family} model {self.spec.get('id')!r} downsamples by {self.factors} per axis")
        return self.factors[0]

    def encode(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Deterministic latent of a batch of normalized items `(B, *item)` of any size.

        Returns `{"latent": (B, C, *latent grid), ...}` (plus `logvar`, `mean` or `indices` where the
        family has them) and what the encoding did (`padded_shape`).
        """
        raise NotImplementedError

    def decode(self, stored: torch.Tensor) -> torch.Tensor:
        """Images `(B, *padded item)` in the normalized scale from a batch of the `decoded_from` array."""
        raise NotImplementedError

    def round_trip(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstructions `(B, *item)` of normalized items, and their latents `(B, C, *latent grid)`.

        The deterministic latent decoded from what the decoder reads (`decoded_from`: VQ codes,
        MedVAE's unprojected mean), cropped from the padded grid back to the items' own.
        """
        arrays, _ = self.encode(images)
        decoded = self.decode(arrays[self.decoded_from])
        return decoded[(slice(None), *(slice(0, size) for size in images.shape[1:]))], arrays["latent"]

    def item_bytes(self, shape: list[int] | tuple[int, ...]) -> int:
        """Estimated peak activation bytes of encoding one item (2D image, 3D window or volume) of this shape."""
        raise NotImplementedError

    def budget_unit(self, shape: list[int] | tuple[int, ...]) -> tuple[int, ...]:
        """The part of an item of `shape` that `item_bytes` counts and `latents.max_memory_gb` batches."""
        return tuple(shape)

    def placed(self, device: str | torch.device) -> LatentModel:
        """The model on `device`, in eval mode (families with device-dependent settings override it)."""
        return self.to(device).eval()

    def weight_bytes(self) -> int:
        return sum(parameter.numel() * parameter.element_size() for parameter in self.parameters())

    def record(self) -> dict[str, Any]:
        """What a dataset card states about the model: family, class, library, scaling, input adaptation."""
        raise NotImplementedError


def pad_items(images: torch.Tensor, factors: tuple[int, ...]) -> tuple[torch.Tensor, Padding]:
    """`(B, *item)` -> `(B, 1, *padded)`: each axis padded at its end with the background to its factor."""
    spatial = tuple(images.shape[1:])
    padded = tuple(-(-size // factor) * factor for size, factor in zip(spatial, factors, strict=True))
    pad = [amount for size, target in reversed(list(zip(spatial, padded))) for amount in (0, target - size)]
    return F.pad(images[:, None], pad, value=BACKGROUND), Padding(spatial, padded)


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """A one-channel batch repeated to the network's input channels (gray -> RGB)."""
    return x if channels == 1 else x.expand(-1, channels, *x.shape[2:])


def to_gray(y: torch.Tensor) -> torch.Tensor:
    """`(B, C, *item)` network output -> `(B, *item)`: the mean over the channels (RGB -> gray)."""
    return y.mean(dim=1)


def channel_adaptation(channels: int) -> str:
    return (
        "one channel in and out"
        if channels == 1
        else f"gray repeated to the network's {channels} input channels; its {channels}-channel output averaged to gray"
    )


def diffusion_ready(latent: torch.Tensor, scaling: dict[str, Any] | None) -> torch.Tensor:
    """The latent a diffusion model trains on, from the stored raw posterior mean `(C, ...)`.

    `scaling` is the family's record: `scaling_factor` and `shift_factor` (SD, SDXL: shift 0;
    SD3, FLUX: `(z - shift) * scale`), or per-channel `latents_mean` / `latents_std` (Wan:
    `(z - mean) / std`).
    """
    if not scaling:
        raise ValueError("this dataset records no latent scaling (its family defines none)")
    if "latents_mean" in scaling:
        shape = (-1,) + (1,) * (latent.ndim - 1)
        mean = torch.tensor(scaling["latents_mean"], dtype=latent.dtype).view(shape)
        std = torch.tensor(scaling["latents_std"], dtype=latent.dtype).view(shape)
        return (latent - mean) / std
    return (latent - scaling.get("shift_factor", 0.0)) * scaling["scaling_factor"]
