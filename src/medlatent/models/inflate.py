"""Kernel-centering inflation of a 2D autoencoder into its 3D twin (MedVAE's 3D initialisation).

Each 2D conv kernel (O, I, k, k) becomes a 3D kernel (O, I, k, k, k) that is zero except its
middle slice along the LAST kernel axis, which holds the 2D kernel (1x1 -> 1x1x1). Biases and
GroupNorm parameters are copied. With this rule every layer acts on each slice along the last
spatial axis independently of its neighbours, so on a volume whose slices along that axis are
identical the inflated model reproduces the 2D model slice by slice (GroupNorm statistics and
the mid-block softmax attention are unchanged by repeating identical slices).
"""

from __future__ import annotations

import torch

from medlatent.models.autoencoder import AutoencoderKL


def inflate_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(O, I, kh, kw) -> (O, I, kh, kw, kw), the 2D kernel in the centre slice of the last axis."""
    depth = weight.shape[-1]
    inflated = weight.new_zeros((*weight.shape, depth))
    inflated[..., depth // 2] = weight
    return inflated


def inflate_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inflate every 4-D (2D conv) tensor; copy everything else unchanged."""
    return {name: inflate_kernel(t) if t.ndim == 4 else t.clone() for name, t in state_dict.items()}


def inflate_model(model: AutoencoderKL) -> AutoencoderKL:
    """A new 3D ``AutoencoderKL`` with the same configuration, initialised from the 2D ``model``."""
    if model.spatial_dims != 2:
        raise ValueError(f"inflate_model needs a 2D model, got spatial_dims={model.spatial_dims}")
    model3d = AutoencoderKL(**{**model.config, "spatial_dims": 3})
    model3d.load_state_dict(inflate_state_dict(model.state_dict()), strict=True)
    return model3d.to(next(model.parameters()).device)
