"""Windowed encoding of 3D volumes too large for one encoder pass, stitched in latent space.

The mid-block self-attention of the encoder is quadratic in voxels (the public MedVAE code
once asked for 931 GiB on a whole volume), so volumes larger than `latents.window` are cut
into overlapping windows. MONAI's `sliding_window_inference` runs the encoder on each window
and blends the window latents: it supports predictors whose output is smaller than their
input (it scales every window position by output size / `roi_size` and resizes the blending
weights with nearest neighbours). Stitching is exact in geometry only when every window
starts on a multiple of the downsampling factor, so `check_window` requires the window and
its stride (`int(window * (1 - overlap))`, MONAI's formula) to be multiples of it.

Blending: overlapping latents are averaged with weights from MONAI's importance map
(`gaussian`: windows count less near their borders, where the encoder saw zero-padded
context; `constant`: plain mean). The result is NOT the whole-volume latent: attention and
GroupNorm statistics are global per pass, so a window's latent depends on what else is in
the window. A volume that fits into one window is encoded in one pass, exactly as the whole
volume; the windowed latent approaches it as windows grow.

`latents.window: medvae` applies the public MedVAE rule (`medvae.utils.extras.roi_size_calc`
as `MVAE` calls it): per volume, an axis longer than 160 voxels gets the window
`size // 2**k` for the smallest k that brings it under 160; shorter axes are not windowed.
With overlap 0.25 and gaussian blending this reproduces `MVAE._process_3d` (posterior mean)
wherever that window and its stride fall on the latent grid; where they do not (the public
code then stitches latents at fractional positions), the window is shrunk to the nearest
size that does, and the shard's encoding record names both.
"""

from __future__ import annotations

import torch

from medlatent.core.errors import ConfigError
from medlatent.models.autoencoder import pad_to_multiple
from medlatent.normalize import BACKGROUND

#: `MVAE(gpu_dim=160)`: the largest window side the public MedVAE code encodes in one pass.
MEDVAE_GPU_DIM = 160
MEDVAE_RULE = "medvae"


def medvae_window(shape: list[int], target: int = MEDVAE_GPU_DIM) -> list[int]:
    """`roi_size_calc` of the public MedVAE code: halve an axis longer than `target` until it is below."""
    window = []
    for size in shape:
        power = 1
        while size > target and size // power >= target:
            power *= 2
        window.append(size // power if size > target else size)
    return window


def on_grid(size: int, overlap: float, factor: int) -> int:
    """The largest window <= size whose side and stride are multiples of `factor`."""
    while size > factor and (size % factor or int(size * (1 - overlap)) % factor):
        size -= 1
    return size


def check_window(window: list[int], overlap: float, factor: int) -> None:
    """Raise ConfigError unless windows and their stride fall on the latent grid."""
    stride = [int(size * (1 - overlap)) for size in window]
    if any(size % factor for size in window) or any(step % factor for step in stride):
        raise ConfigError(
            f"latents.window={list(window)} with latents.overlap={overlap} gives window stride {stride} voxels; "
            f"window and stride must be multiples of the model's downsampling factor {factor} so windows start "
            f"on the latent grid (e.g. window 160 and overlap 0.25: stride 120)"
        )


def encode_volume(
    model: torch.nn.Module,
    volume: torch.Tensor,
    window: list[int] | str,
    overlap: float,
    blend: str = "gaussian",
    sw_batch_size: int = 1,
) -> tuple[torch.Tensor, dict]:
    """Latent (C, x, y, z) of one (X, Y, Z) or (C, X, Y, Z) volume, on the CPU; plus how it was encoded.

    The volume is padded at the end of each axis with the background value to a multiple of
    `model.downsample_factor` (as `encode_latent_padded` does); axes no longer than the
    window are not windowed. `window` is voxels per axis or `"medvae"` (the public code's rule).
    """
    factor = model.downsample_factor
    device = next(model.parameters()).device
    batch = volume[None, None] if volume.ndim == 3 else volume[None]
    padded, padding = pad_to_multiple(batch.to(device), factor)
    shape = list(padded.shape[2:])
    rule = {}
    if window == MEDVAE_RULE:
        authors = medvae_window(shape)
        window = [size if size == n else on_grid(size, overlap, factor) for size, n in zip(authors, shape)]
        rule = {"rule": MEDVAE_RULE, **({"medvae_window": authors} if window != authors else {})}
        check_window([size for size, n in zip(window, shape) if size < n], overlap, factor)  # whole axes: any size
    else:
        check_window(window, overlap, factor)
    roi = [min(size, n) for size, n in zip(window, shape)]
    info = {"padded_shape": list(padding.padded_shape), "window": roi, "overlap": overlap, "blend": blend, **rule}
    with torch.inference_mode():
        if roi == list(padded.shape[2:]):
            return model.encode_latent(padded)[0].cpu(), {**info, "windows": 1}
        from monai.inferers import sliding_window_inference  # here: importing MONAI costs seconds

        latent = sliding_window_inference(
            padded,
            roi,
            sw_batch_size,
            model.encode_latent,
            overlap=overlap,
            mode=blend,
            cval=BACKGROUND,
            sw_device=device,
            device=torch.device("cpu"),
        )
    windows = 1
    for size, n in zip(roi, padded.shape[2:]):
        stride = int(size * (1 - overlap)) if size < n else size
        windows *= -(-(n - size) // stride) + 1
    return latent[0], {**info, "windows": windows}
