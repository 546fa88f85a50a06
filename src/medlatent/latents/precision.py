"""`latents.precision`: the encoder under autocast, and how far its latents fall from float32.

fp32 runs the model as it is; bf16 and fp16 run it under `torch.autocast` (matmuls and
convolutions in the lower precision, normalisations kept in float32 by autocast's op lists; both
supported on CPU as well as CUDA). The error is measured per shard on its first batch, encoded a
second time in float32: the maximum absolute difference of the classifier latent, and that
maximum over the largest absolute float32 value (a relative figure that does not blow up where
the latent crosses zero).
"""

from __future__ import annotations

import contextlib

import torch

from medlatent.core.errors import ConfigError

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Significant digits kept of an error figure (canonical JSON, readable cards).
ERROR_DIGITS = 3


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context the encoder runs under for `latents.precision`."""
    if precision not in AUTOCAST:
        raise ConfigError(f"latents.precision {precision!r} is not one of {sorted(AUTOCAST)}")
    dtype = AUTOCAST[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def latent_error(latent: torch.Tensor, reference: torch.Tensor) -> dict:
    """max_abs and max_rel (max_abs / max |reference|) of a latent against its float32 reference."""
    difference = (latent.float() - reference.float()).abs().max().item()
    scale = reference.float().abs().max().item()
    return {
        "max_abs": float(f"{difference:.{ERROR_DIGITS}g}"),
        "max_rel": float(f"{difference / scale if scale else 0.0:.{ERROR_DIGITS}g}"),
    }
