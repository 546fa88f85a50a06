"""The stage-2 projection head and ``MedVAE``: a frozen autoencoder plus that head.

Head, as in the public MedVAE code: z -> conv1x1(C->64) -> ReLU -> conv3x3(64->64) -> ReLU ->
conv1x1(64->C), added to z, then conv1x1(C->C). ``MedVAE.encode_latent`` returns the
projected posterior MEAN (the public code samples; the mean makes latent datasets
deterministic). ``decode`` always decodes the UNPROJECTED latent, as the public code does:
the projection only shapes what classifiers see.

The released MedVAE checkpoints name the head's tensors ``channel_ds.{0,2,4}.*`` (the body)
and ``channel_proj.*`` (the last 1x1 conv); ``RELEASED_PROJECTION_KEYS`` maps them onto ours.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medlatent.models.autoencoder import AutoencoderKL, Padding, conv_nd

#: Latents are divided by this empirical scale before classification (public MedVAE code).
CLASSIFICATION_SCALE = 4.6
#: Hidden width of the projection head (published value).
PROJECTION_WIDTH = 64
#: Key prefixes of the head in the released checkpoints -> ours (same modules, same order).
RELEASED_PROJECTION_KEYS = {"channel_ds.": "body.", "channel_proj.": "out.", "projection.": ""}


class ProjectionHead(nn.Module):
    """Residual latent refinement z -> out(z + body(z)); output has the shape of z."""

    def __init__(self, spatial_dims: int, channels: int, width: int = PROJECTION_WIDTH) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_nd(spatial_dims, channels, width, 1),
            nn.ReLU(),
            conv_nd(spatial_dims, width, width, 3, 1, 1),
            nn.ReLU(),
            conv_nd(spatial_dims, width, channels, 1),
        )
        self.out = conv_nd(spatial_dims, channels, channels, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(z + self.body(z))


def projection_tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The head's tensors of a checkpoint under ``ProjectionHead`` names (empty when it has none)."""
    found = {}
    for key, tensor in state_dict.items():
        for theirs, ours in RELEASED_PROJECTION_KEYS.items():
            if key.startswith(theirs):
                found[ours + key[len(theirs) :]] = tensor
    return found


class MedVAE(nn.Module):
    """Autoencoder (+ projection head for 2D models) with the latent API the later stages use."""

    def __init__(
        self,
        autoencoder: AutoencoderKL,
        projection: ProjectionHead | None = None,
        spec: dict[str, Any] | None = None,
        is_demo: bool = False,
    ) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.projection = projection
        self.spec = dict(spec or {})
        self.is_demo = is_demo

    @property
    def downsample_factor(self) -> int:
        return self.autoencoder.downsample_factor

    @property
    def latent_channels(self) -> int:
        return self.autoencoder.latent_channels

    @property
    def spatial_dims(self) -> int:
        return self.autoencoder.spatial_dims

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """z_bar: the projected latent (identity when the model has no head, e.g. 3D)."""
        return z if self.projection is None else self.projection(z)

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Projected posterior mean; sizes must be multiples of ``downsample_factor``."""
        return self.project(self.autoencoder.encode(x).mean)

    def encode_latent_padded(self, x: torch.Tensor) -> tuple[torch.Tensor, Padding]:
        """Projected posterior mean of ``x`` padded with background; plus how it was padded."""
        posterior, padding = self.autoencoder.encode_padded(x)
        return self.project(posterior.mean), padding

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image from an UNPROJECTED latent (posterior mean or sample)."""
        return self.autoencoder.decode(z)
