"""The `diffusers` family: a diffusers folder (`config.json` + `diffusion_pytorch_model.safetensors`).

The class is the folder's `_class_name`, loaded with diffusers' own `from_pretrained` (which also
renames legacy attention keys of older checkpoints) and rebuilt from its config and state dict:
- `AutoencoderKL` (SD 1.x/2.x, SDXL, SD3, FLUX VAEs): the latent is `encode(x).latent_dist.mean`,
  the raw posterior mean; the card records `scaling_factor` / `shift_factor`, and
  `load_latents(..., scaled=True)` gives the diffusion-ready `(z - shift) * scale`;
- `VQModel`: `indices.npy` holds the codes of `quantize(encode(x).latents)` (int16, or int32
  for codebooks over 32,768 entries), `latent.npy` the quantized latent for classifiers; the
  decoder reads the codes.
- `AutoencoderKLWan` (Wan 2.1) and `AutoencoderKLCogVideoX` on volumes (`apply: volumes`): the
  slice axis (last, axial) is time, as Foundation-VAE feeds CT; depth is padded with the
  background to the class's frame rule (`FRAME_STEP`) and the latent is stored `(C, X/8, Y/8, K)`
  (K latent frames last, like the slice axis). The whole depth goes through the encoder at once:
  the libraries run it in causal chunks of frames with a feature cache (exact; memory follows the
  chunk), so no depth windows are cut. Wan scales per channel (`latents_mean` / `latents_std`).
Input: normalized [-1, 1] is what these VAEs take; gray is repeated to RGB and sizes are padded
with the background to the factor (`medlatent.models.families.base`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from medlatent.core.errors import InputError
from medlatent.latents.memory import FLOAT32_BYTES, activation_bytes, padded_shape
from medlatent.models.families.base import LatentModel, channel_adaptation, pad_items, to_channels, to_gray
from medlatent.normalize import BACKGROUND

#: `_class_name` -> the dims of the items it encodes; any other class is refused.
SUPPORTED = {"AutoencoderKL": 2, "VQModel": 2, "AutoencoderKLWan": 3, "AutoencoderKLCogVideoX": 3}
#: Video VAEs: depth is time, padded to `1 + step * k` frames, the only lengths that come back whole
#: (measured on tiny instances: Wan keeps 1 + 4k frames and drops the rest, CogVideoX decodes
#: 8k + 1 frames back to themselves but 13 to 16); and the frames each encoder pass holds.
FRAME_STEP = {"AutoencoderKLWan": 4, "AutoencoderKLCogVideoX": 8}
FRAMES_PER_PASS = {"AutoencoderKLWan": 4, "AutoencoderKLCogVideoX": 8}
#: Copies of the whole adapted volume (in_channels x frames) a video VAE call holds besides its frame
#: passes: the background-padded gray volume, its channel repeat and the library's own slices of it.
#: bench_families --full, Wan 2.1 on 160 slices of 256^2: the encode rose 1.50 GB over the loaded
#: model, 1.12 GB of it the frame passes' estimate; 3 copies of the 3-channel volume are the other 0.38 GB.
VOLUME_COPIES = 3
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _folder(path: Path) -> Path:
    """The diffusers folder of a `weights:` path: the folder itself, or the folder of its weights file."""
    folder = path if path.is_dir() else path.parent
    if not (folder / "config.json").is_file():
        raise InputError(
            path,
            "not a diffusers model folder (no config.json beside the weights)",
            "point `weights:` at the folder holding config.json and diffusion_pytorch_model.safetensors, "
            "e.g. hf://stabilityai/sdxl-vae or hf://black-forest-labs/FLUX.1-schnell/vae",
        )
    return folder


def class_name(path: Path) -> str:
    """The folder's `_class_name`; InputError with the supported list for any other class."""
    folder = _folder(path)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    name = config.get("_class_name")
    if name not in SUPPORTED:
        raise InputError(
            folder / "config.json",
            f"_class_name {name!r} is not a supported diffusers autoencoder",
            f"use a folder of one of {sorted(SUPPORTED)}",
        )
    if config.get("patch_size"):  # Wan 2.2: patchified 12-channel input and 16x16 in plane, not built here
        raise InputError(
            folder / "config.json",
            f"{name} with patch_size {config['patch_size']} (Wan 2.2's VAE) is not supported yet",
            "use the Wan 2.1 VAE (hf://Wan-AI/Wan2.1-T2V-1.3B-Diffusers/vae)",
        )
    return name


def weights_file(path: Path) -> Path:
    """The weights file of a diffusers folder (what the card's sha256 is of)."""
    folder = _folder(path)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise InputError(folder, f"holds none of {list(WEIGHT_FILES)}", "copy the model's weights file beside config.json")


def read_weights(path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """`{"class", "config", "state_dict"}` of a diffusers folder, loaded by diffusers itself.

    `spec` is not read: the folder's config says everything about the architecture.
    """
    import diffusers

    name = class_name(path)
    vae = getattr(diffusers, name).from_pretrained(_folder(path))
    config = {key: value for key, value in vae.config.items() if not key.startswith("_")}  # private: where it came from
    return {"class": name, "config": config, "state_dict": vae.state_dict()}


def geometry(name: str, config: Mapping[str, Any]) -> tuple[tuple[int, ...], int]:
    """Factor per item axis and latent channels of a `name` network with this (complete) config.

    Video VAEs: in plane, then time (the slice axis, last); VQ: the quantized latent's channels.
    """
    if name == "AutoencoderKLWan":
        in_plane = 2 ** (len(config["dim_mult"]) - 1)
        return (in_plane, in_plane, 2 ** sum(config["temperal_downsample"])), config["z_dim"]
    in_plane = 2 ** (len(config["block_out_channels"]) - 1)
    temporal = (int(config.get("temporal_compression_ratio") or 1),) if name in FRAME_STEP else ()
    channels = (config.get("vq_embed_dim") if name == "VQModel" else None) or config["latent_channels"]
    return (in_plane, in_plane, *temporal), channels


class DiffusersModel(LatentModel):
    """A diffusers `AutoencoderKL` or `VQModel` behind the family protocol."""

    family = "diffusers"

    def __init__(self, payload: dict[str, Any]) -> None:
        import diffusers

        super().__init__(payload["spec"], payload["demo"])
        self.class_name = payload["class"]
        self.vae = getattr(diffusers, self.class_name).from_config(payload["config"])
        self.vae.load_state_dict(payload["state_dict"], strict=True)
        config = self.vae.config
        self.dims = SUPPORTED[self.class_name]
        self.frame_step = FRAME_STEP.get(self.class_name)
        self.factors, self.latent_channels = geometry(self.class_name, config)
        if self.class_name == "AutoencoderKLWan":
            self.widths = [config.base_dim * mult for mult in config.dim_mult]
        else:
            self.widths = list(config.block_out_channels)
        self.in_channels = config.get("in_channels", 3)
        self.is_vq = self.class_name == "VQModel"
        if self.is_vq:
            self.decoded_from, self.method = "indices", "vector_quantized"
            self.posterior_arrays, self.extra_arrays = (), ("indices",)
            self.index_dtype = torch.int16 if config.num_vq_embeddings <= 2**15 else torch.int32

    def frames(self, depth: int) -> int:
        """Frames a depth is padded to: the smallest `1 + frame_step * k` not below it."""
        return 1 + self.frame_step * -(-(depth - 1) // self.frame_step)

    def adapt(self, images: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Normalized `(B, H, W)` -> the network's input `(B, in_channels, H', W')` and the padded shape.

        Volumes `(B, X, Y, Z)` of a video VAE -> `(B, in_channels, T, X', Y')`, depth as time, T the frame rule's.
        """
        if not self.frame_step:
            x, padding = pad_items(images, self.factors)
            return to_channels(x, self.in_channels), list(padding.padded_shape)
        x, padding = pad_items(images, (*self.factors[:2], 1))
        frames = self.frames(images.shape[-1])
        x = F.pad(x, (0, frames - images.shape[-1]), value=BACKGROUND).permute(0, 1, 4, 2, 3)
        return to_channels(x, self.in_channels), [*padding.padded_shape[:2], frames]

    def encode(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        x, padded_shape = self.adapt(images)
        if self.is_vq:
            quantized, _, (_, _, codes) = self.vae.quantize(self.vae.encode(x).latents)
            indices = codes.reshape(quantized.shape[0], *quantized.shape[2:]).to(self.index_dtype)
            return {"latent": quantized, "indices": indices}, {"padded_shape": padded_shape}
        posterior = self.vae.encode(x).latent_dist
        arrays = {"latent": posterior.mean, "logvar": posterior.logvar}
        if self.frame_step:  # (B, C, K, x, y) -> (B, C, x, y, K): latent frames last, as the slice axis was
            arrays = {name: values.permute(0, 1, 3, 4, 2) for name, values in arrays.items()}
            return arrays, {"padded_shape": padded_shape, "frames": padded_shape[-1]}
        return arrays, {"padded_shape": padded_shape}

    def decode(self, stored: torch.Tensor) -> torch.Tensor:
        if self.frame_step:
            return to_gray(self.vae.decode(stored.permute(0, 1, 4, 2, 3)).sample).permute(0, 2, 3, 1)
        if not self.is_vq:
            return to_gray(self.vae.decode(stored).sample)
        codes = stored.long()
        shape = (*codes.shape, self.latent_channels)
        if self.vae.config.lookup_from_codebook:  # decode looks the codes up itself
            return to_gray(self.vae.decode(codes.flatten(), force_not_quantize=True, shape=shape).sample)
        quantized = self.vae.quantize.get_codebook_entry(codes.flatten(), shape)
        return to_gray(self.vae.decode(quantized, force_not_quantize=True).sample)

    def item_bytes(self, shape: list[int] | tuple[int, ...]) -> int:
        """One 2D image; for a video VAE a whole volume: one slice's maps times the frames an encoder
        pass holds with its feature cache, plus `VOLUME_COPIES` of the adapted volume."""
        if not self.frame_step:
            return activation_bytes(self.widths, 2, shape, self.factors[0], attention=True)
        per_frame = activation_bytes(self.widths, 2, shape[:2], self.factors[0], attention=False)
        in_plane = math.prod(padded_shape(shape[:2], self.factors[0]))
        volume = VOLUME_COPIES * self.in_channels * in_plane * self.frames(shape[2]) * FLOAT32_BYTES
        return 2 * FRAMES_PER_PASS[self.class_name] * per_frame + volume

    def scaling(self) -> dict[str, Any] | None:
        """How diffusion models scale this VAE's raw latent (None for VQ codes)."""
        config = self.vae.config
        if self.is_vq:
            return None
        if config.get("latents_mean") and config.get("latents_std"):
            return {"latents_mean": list(config.latents_mean), "latents_std": list(config.latents_std)}
        scale = config.scaling_factor
        if config.get("invert_scale_latents"):  # CogVideoX 1.5: the pipeline divides by the factor
            scale = 1 / scale
        return {"scaling_factor": scale, "shift_factor": config.get("shift_factor") or 0.0}

    def codebook(self) -> dict[str, Any] | None:
        """Size and sha256 of a VQ codebook (the float32 bytes of `quantize.embedding.weight`)."""
        if not self.is_vq:
            return None
        weight = self.vae.quantize.embedding.weight.detach().float().contiguous()
        return {
            "entries": int(weight.shape[0]),
            "dim": int(weight.shape[1]),
            "sha256": hashlib.sha256(weight.numpy().tobytes()).hexdigest(),
        }

    def record(self) -> dict[str, Any]:
        import diffusers

        return {
            "family": self.family,
            "class": f"diffusers.{self.class_name}",
            "library": {"name": "diffusers", "version": diffusers.__version__},
            "scaling": self.scaling(),
            "codebook": self.codebook(),
            "adaptation": {
                "channels": channel_adaptation(self.in_channels),
                "intensity": "normalized [-1, 1] as is (the range these VAEs take)",
                "size": f"each in-plane axis padded with the background (-1) to a multiple of {self.factors[0]}",
                **(
                    {
                        "depth": f"the slice axis (last) fed as time, padded with the background to 1 + "
                        f"{self.frame_step}k frames (the lengths this class returns whole); encoded whole "
                        f"(the library's causal frame chunks); latent (C, X/{self.factors[0]}, Y/{self.factors[0]}, K)"
                    }
                    if self.frame_step
                    else {}
                ),
            },
        }
