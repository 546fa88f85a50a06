"""How many items one encoder forward may hold within `latents.max_memory_gb`.

The estimate for one item (one 2D image, or one 3D window) is

    ACTIVATION_FACTOR x widest feature map (channels x positions of the largest encoder level)
    x bytes per value + the mid-block attention scores (tokens^2, at most ATTENTION_SCORE_BYTES
    since larger matrices are computed in query chunks),

and the model's weights are taken off the budget once. In inference mode a res block holds its
input, the normalised/activated copy, the conv output and the residual sum of the widest map at
once; ACTIVATION_FACTOR = 6 leaves room for the allocator's slack on top of those four.
Measured (`benchmarks/bench_latents.py::full_size_peak`, CPU, float32): one 1024x1024 image
through the released-layout f16 encoder peaks at 3.36 GB RSS (process included) against an
estimate of 3.46 GB; four 512x512 images in one forward peak at 3.24 GB against 4.21 GB.
"""

from __future__ import annotations

import math

from medlatent.core.errors import ConfigError
from medlatent.models import autoencoder as ae

ACTIVATION_FACTOR = 6
FLOAT32_BYTES = 4


def padded_shape(shape: list[int] | tuple[int, ...], factor: int) -> list[int]:
    """Each axis rounded up to the downsampling factor, as `encode_padded` pads it."""
    return [math.ceil(size / factor) * factor for size in shape]


def activation_bytes(
    widths: list[int],
    dims: int,
    shape: list[int] | tuple[int, ...],
    factor: int,
    attention: bool,
    copies: int = ACTIVATION_FACTOR,
) -> int:
    """Estimated peak activation bytes (float32) of an encoder with these level widths on one item.

    `factor`: the item is padded to a multiple of it per axis; `attention`: the deepest level
    has a self-attention block over all its positions (scores capped as the chunked attention does);
    `copies`: widest feature maps alive at once.
    """
    positions = math.prod(padded_shape(shape, factor))
    value_bytes = FLOAT32_BYTES
    widest = max(width * positions // 2 ** (level * dims) for level, width in enumerate(widths))
    tokens = positions // 2 ** ((len(widths) - 1) * dims)
    scores = min(tokens * tokens * value_bytes, ae.ATTENTION_SCORE_BYTES) if attention else 0
    return copies * widest * value_bytes + scores


def encoder_item_bytes(autoencoder: ae.AutoencoderKL, shape: list[int] | tuple[int, ...]) -> int:
    """Estimated peak activation bytes of encoding one item of this spatial shape (float32)."""
    config = autoencoder.config
    widths = [config["ch"] * mult for mult in config["ch_mult"]]
    return activation_bytes(widths, config["spatial_dims"], shape, autoencoder.downsample_factor, attention=True)


def fitting_items(
    weight_bytes: int, item_bytes: int, shape: list[int] | tuple[int, ...], max_memory_gb: float, cap: int, knobs: str
) -> int:
    """Items of `shape` per forward within the budget, at most `cap`; ConfigError if not even one fits.

    `knobs` names the settings that make an item smaller or the budget larger (for the message).
    """
    fitting = int((max_memory_gb * 2**30 - weight_bytes) // item_bytes)
    if fitting < 1:
        raise ConfigError(
            f"encoding one item of shape {list(shape)} needs about {(weight_bytes + item_bytes) / 2**30:.1f} GB "
            f"(weights + activations), over latents.max_memory_gb = {max_memory_gb}: raise {knobs}"
        )
    return min(cap, fitting)


def budget_batch_size(
    autoencoder: ae.AutoencoderKL, shape: list[int] | tuple[int, ...], max_memory_gb: float, cap: int, knobs: str
) -> int:
    """`fitting_items` for a MedVAE-layout autoencoder (its weights and `encoder_item_bytes`)."""
    weight_bytes = sum(parameter.numel() * parameter.element_size() for parameter in autoencoder.parameters())
    return fitting_items(weight_bytes, encoder_item_bytes(autoencoder, shape), shape, max_memory_gb, cap, knobs)
