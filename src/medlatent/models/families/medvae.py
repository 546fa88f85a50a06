"""The `medvae` family: the MedVAE-layout models this workflow trains or imports (`medlatent-model/1`).

Nothing changes for them: a 2D latent is the stage-2 projection of the posterior mean (its
unprojected mean is what the decoder reads), a 3D latent the posterior mean, both of one-channel
input padded with the background to the model's factor; 3D volumes larger than `latents.window`
are encoded window by window (`medlatent.latents.window`).
"""

from __future__ import annotations

from typing import Any

import torch

from medlatent import __version__
from medlatent.latents.memory import encoder_item_bytes
from medlatent.models.families.base import LatentModel
from medlatent.models.projection import MedVAE


class MedVAEModel(LatentModel):
    """A `MedVAE` (autoencoder + 2D projection head) behind the family protocol."""

    family = "medvae"

    def __init__(self, medvae: MedVAE) -> None:
        super().__init__(medvae.spec, medvae.is_demo)
        self.medvae = medvae
        self.dims = medvae.spatial_dims
        self.factors = (medvae.downsample_factor,) * self.dims
        self.latent_channels = medvae.latent_channels
        self.projected = medvae.projection is not None
        self.decoded_from = "mean" if self.projected else "latent"
        self.posterior_arrays = ("mean", "logvar") if self.projected else ("logvar",)
        self.windowed = self.dims == 3

    def encode(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        posterior, padding = self.medvae.autoencoder.encode_padded(images[:, None])
        arrays = {"latent": self.medvae.project(posterior.mean), "mean": posterior.mean, "logvar": posterior.logvar}
        return arrays, {"padded_shape": list(padding.padded_shape)}

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """The latent of a padded one-channel batch `(B, 1, *item)` (what windows run)."""
        return self.medvae.encode_latent(x)

    def encode_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of a padded one-channel batch."""
        posterior = self.medvae.autoencoder.encode(x)
        return posterior.mean, posterior.logvar

    def decode(self, stored: torch.Tensor) -> torch.Tensor:
        return self.medvae.decode(stored)[:, 0]

    def item_bytes(self, shape: list[int] | tuple[int, ...]) -> int:
        return encoder_item_bytes(self.medvae.autoencoder, shape)

    def weight_bytes(self) -> int:
        """The autoencoder's weights (the small projection head is not counted, as it never was)."""
        return sum(p.numel() * p.element_size() for p in self.medvae.autoencoder.parameters())

    def record(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "class": "medlatent.models.autoencoder.AutoencoderKL (LDM layout)"
            + (" + stage-2 projection head" if self.projected else ""),
            "library": {"name": "medlatent", "version": __version__},
            "scaling": None,
            "adaptation": {
                "channels": "one channel in and out",
                "intensity": "normalized [-1, 1] as is",
                "size": f"each axis padded with the background (-1) to a multiple of {self.factors[0]}",
            },
        }
