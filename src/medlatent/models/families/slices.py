"""`apply: slices`: a 2D model on 3D sources, slice by slice along the last (axial, RAS) axis.

As MediBench applies 2D VAEs to volumes: each slice of the normalized `(X, Y, Z)` volume is
encoded as a 2D image and the slice latents are stacked. MedLatent keeps its channels-first,
RAS-ordered latent layout: the latent is `(C, X/f, Y/f, Z)` (the slice axis last and not
downsampled, factors `(f, f, 1)`); MediBench's `(D, C, h, w)` is `latent.permute(3, 0, 1, 2)`.
VQ codes are `(X/f, Y/f, Z)`. Slices are encoded `slices_per_forward` at a time.
"""

from __future__ import annotations

from typing import Any

import torch

from medlatent.models.families.base import LatentModel


def slicewise_factors(factors: tuple[int, ...]) -> tuple[int, ...]:
    """A 2D model's factors on volumes: the slice axis (last) keeps its length."""
    return (*factors, 1)


class SliceWise(LatentModel):
    """A 2D `LatentModel` applied to every slice of a volume."""

    slices_per_forward = 1

    def __init__(self, model: LatentModel) -> None:
        super().__init__(model.spec, model.is_demo)
        self.model = model
        self.family = model.family
        self.dims = 3
        self.factors = slicewise_factors(model.factors)
        self.latent_channels = model.latent_channels
        self.decoded_from = model.decoded_from
        self.method = model.method
        self.posterior_arrays = tuple(name for name in model.posterior_arrays if name != "mean")
        self.extra_arrays = model.extra_arrays

    def encode(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        volumes, info = [], {}
        for volume in images:
            parts = [self.model.encode(chunk) for chunk in volume.movedim(-1, 0).split(self.slices_per_forward)]
            volumes.append(
                {name: torch.cat([arrays[name] for arrays, _ in parts]).movedim(0, -1) for name in parts[0][0]}
            )
            info = {"padded_shape": [*parts[0][1]["padded_shape"], volume.shape[-1]], "slice_axis": 2}
        return {name: torch.stack([arrays[name] for arrays in volumes]) for name in volumes[0]}, info

    def decode(self, stored: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [
                torch.cat(
                    [self.model.decode(chunk) for chunk in latent.movedim(-1, 0).split(self.slices_per_forward)]
                ).movedim(0, -1)
                for latent in stored
            ]
        )

    def item_bytes(self, shape: list[int] | tuple[int, ...]) -> int:
        """Bytes of one slice: the unit `slices_per_forward` counts."""
        return self.model.item_bytes(shape[:2])

    def budget_unit(self, shape: list[int] | tuple[int, ...]) -> tuple[int, ...]:
        return tuple(shape[:2])

    def weight_bytes(self) -> int:
        return self.model.weight_bytes()

    def placed(self, device: str | torch.device) -> LatentModel:
        self.model.placed(device)
        return self.eval()

    def record(self) -> dict[str, Any]:
        inner = self.model.record()
        return {
            **inner,
            "apply": "slices",
            "adaptation": {
                **inner["adaptation"],
                "slices": "each slice along the last (axial) axis encoded as a 2D image; latent (C, X/f, Y/f, Z)",
            },
        }
