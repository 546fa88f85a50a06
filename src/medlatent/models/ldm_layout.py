"""Load checkpoints in the LDM AutoencoderKL key layout from a local file, strictly.

Accepted files: ``.ckpt`` / ``.pt`` / ``.pth`` / ``.bin`` (torch pickles, with or without a
top-level ``"state_dict"``) and ``.safetensors``. LDM training checkpoints also carry the
loss module (``loss.*``: discriminator and LPIPS) and full latent-diffusion checkpoints hold
the VAE under ``first_stage_model.``; only the autoencoder's own keys are kept. The load is
strict: a missing, unexpected or differently shaped tensor is an error that lists the keys.

Natural-image weights (kl-f4, kl-f8, SD VAE) are RGB; MedVAE models are gray. ``conv_in``
input kernels are SUMMED over R, G, B (a gray image replicated to RGB gives the same
activations) and ``conv_out`` output kernels and biases AVERAGED (the gray output is the
mean of the RGB outputs). 2D checkpoints loaded into a 3D model are kernel-centre inflated.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from medlatent.core.errors import InputError
from medlatent.models.autoencoder import AutoencoderKL
from medlatent.models.inflate import inflate_state_dict

AUTOENCODER_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
FULL_MODEL_PREFIX = "first_stage_model."
RGB = 3
_LISTED = 12


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a local checkpoint file (the ``state_dict`` entry when there is one).

    Pickles load with ``weights_only=True`` unless ``trust_pickle``: a Lightning checkpoint
    that stores Python objects besides tensors needs the caller to vouch for the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint file not found", "put the weights file there or fix the path in config.yaml")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise InputError(
                path,
                "reading .safetensors needs the safetensors package",
                "pip install safetensors, or convert the file to .pt",
            ) from None
        return load_file(str(path), device="cpu")
    try:
        data = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise InputError(
            path,
            f"cannot read the checkpoint ({type(error).__name__}: {str(error).splitlines()[0]})",
            "if it holds Python objects besides tensors and you trust it, load it with "
            "trust_pickle=True, or re-save only its state_dict / convert it to .safetensors",
        ) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not any(isinstance(v, torch.Tensor) for v in data.values()):
        raise InputError(path, "no state_dict of tensors inside", "pass a checkpoint holding model weights")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


def autoencoder_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep only autoencoder keys: drops ``loss.*`` etc.; unwraps ``first_stage_model.``."""
    if any(k.startswith(FULL_MODEL_PREFIX) for k in state_dict):
        state_dict = {k[len(FULL_MODEL_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(FULL_MODEL_PREFIX)}
    return {k: v for k, v in state_dict.items() if k.startswith(AUTOENCODER_PREFIXES)}


def adapt_channels(state_dict: dict[str, torch.Tensor], in_channels: int, out_channels: int) -> dict[str, torch.Tensor]:
    """RGB -> gray where the model wants one channel: sum ``conv_in`` inputs, average ``conv_out`` outputs."""
    adapted = dict(state_dict)
    conv_in = adapted.get("encoder.conv_in.weight")
    if conv_in is not None and conv_in.shape[1] == RGB and in_channels == 1:
        adapted["encoder.conv_in.weight"] = conv_in.sum(dim=1, keepdim=True)
    conv_out = adapted.get("decoder.conv_out.weight")
    if conv_out is not None and conv_out.shape[0] == RGB and out_channels == 1:
        adapted["decoder.conv_out.weight"] = conv_out.mean(dim=0, keepdim=True)
        adapted["decoder.conv_out.bias"] = adapted["decoder.conv_out.bias"].mean(dim=0, keepdim=True)
    return adapted


def load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path) -> None:
    """``load_state_dict(strict=True)`` with an error naming the file and every mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if state_dict[k].shape != expected[k].shape
    )
    groups = (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong))
    problems = [
        f"{label} ({len(keys)}): {keys[:_LISTED]}{' ...' if len(keys) > _LISTED else ''}"
        for label, keys in groups
        if keys
    ]
    if problems:
        raise InputError(
            source,
            "weights do not match the model architecture; " + "; ".join(problems),
            "check the model's ch, ch_mult, num_res_blocks and latent_channels against the checkpoint",
        )
    model.load_state_dict(state_dict, strict=True)


def fit_to_model(
    model: AutoencoderKL, state_dict: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Autoencoder weights made to fit ``model``: RGB folded to gray, 2D inflated for 3D; what changed."""
    config = model.config
    fitted = adapt_channels(state_dict, config["in_channels"], config["out_channels"])
    changes = [
        f"{name} {tuple(state_dict[key].shape)} -> {tuple(fitted[key].shape)} ({how})"
        for name, key, how in (
            ("conv_in", "encoder.conv_in.weight", "summed over input channels"),
            ("conv_out", "decoder.conv_out.weight", "averaged over output channels"),
        )
        if key in state_dict and fitted[key].shape != state_dict[key].shape
    ]
    if model.spatial_dims == 3 and fitted.get("encoder.conv_in.weight", torch.empty(0)).ndim == 4:
        fitted = inflate_state_dict(fitted)
        changes.append("2D kernels inflated to 3D (kernel centring)")
    return fitted, changes


def load_ldm_weights(model: AutoencoderKL, path: str | Path, trust_pickle: bool = False) -> AutoencoderKL:
    """Load an LDM-layout checkpoint into ``model`` (gray-adapted, inflated for 3D), strictly."""
    state_dict, _ = fit_to_model(model, autoencoder_state_dict(read_checkpoint(path, trust_pickle)))
    load_strict(model, state_dict, path)
    return model
