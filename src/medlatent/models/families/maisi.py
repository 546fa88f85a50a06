"""The `maisi` family: MONAI's `AutoencoderKlMaisi` (the VAE of MAISI CT generation), 3D only.

The network is the released CT configuration (`RELEASED_CT`, MONAI model zoo
`maisi_ct_generative/configs/inference.json`) unless `models[].network` overrides keys of it;
the weights are a plain state dict (e.g. `nvidia/NV-Generate-CT` `models/autoencoder_v1.pt`).
Input: MAISI maps CT HU [-1000, 1000] to [0, 1], so the normalized [-1, 1] item becomes
`(x + 1) / 2` and the decoder output goes back by `2y - 1`; every axis is padded with the
background to a multiple of 4 (the network floors other sizes). The latent is the posterior
mean `encode(x)[0]` (MAISI's own `encode_stage_2_inputs` samples). `num_splits` / `dim_split`
split every convolution along one axis (exact; memory; on an axis too short for the splits MONAI
silently returns a smaller latent, which is refused here), and `norm_float16` is turned off on a
CPU, where half-precision group norms fail; both are recorded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from medlatent.core.errors import ConfigError, InputError
from medlatent.latents.memory import ACTIVATION_FACTOR, activation_bytes
from medlatent.models.families.base import LatentModel, pad_items

#: The released MAISI CT autoencoder (MONAI model zoo maisi_ct_generative, inference.json).
RELEASED_CT: dict[str, Any] = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 1,
    "latent_channels": 4,
    "num_channels": [64, 128, 256],
    "num_res_blocks": [2, 2, 2],
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
    "attention_levels": [False, False, False],
    "with_encoder_nonlocal_attn": False,
    "with_decoder_nonlocal_attn": False,
    "use_checkpointing": False,
    "use_convtranspose": False,
    "norm_float16": True,
    "num_splits": 2,
    "dim_split": 1,
}


def network(spec: dict[str, Any]) -> dict[str, Any]:
    """The network arguments of a model entry: the released CT configuration with `network:` on top."""
    return {**RELEASED_CT, **(spec.get("network") or {})}


def _legacy_keys(state_dict: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Keys of checkpoints saved before MONAI wrapped the convolutions once more.

    `x.conv.weight` -> `x.conv.conv.weight`.
    The MAISI tutorials' `load_autoencoder_ckpt` applies the same renaming; a key is renamed only
    when the model has no such key and has the one with one more `.conv` level.
    """
    renamed = {}
    for key, value in state_dict.items():
        deeper = re.sub(r"\.(weight|bias)$", r".conv.\1", key)
        renamed[deeper if key not in expected and deeper in expected else key] = value
    return renamed


def build(arguments: dict[str, Any]) -> torch.nn.Module:
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi

    return AutoencoderKlMaisi(**arguments, print_info=False, save_mem=False)


def weights_file(path: Path) -> Path:
    """The file the card's sha256 is of: the state dict itself."""
    return path


def read_weights(path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """`{"class", "config", "state_dict"}` of a MAISI state-dict file for the entry's network."""
    arguments = network(spec)
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    autoencoder = build(arguments)
    for candidate in (state_dict, _legacy_keys(state_dict, set(autoencoder.state_dict()))):
        missing, unexpected = autoencoder.load_state_dict(candidate, strict=False)
        if not missing and not unexpected:
            return {"class": "AutoencoderKlMaisi", "config": arguments, "state_dict": autoencoder.state_dict()}
    raise InputError(
        path,
        f"not an AutoencoderKlMaisi state dict for network {arguments} ({len(missing)} missing keys, e.g. "
        f"{sorted(missing)[:3]}; {len(unexpected)} unexpected, e.g. {sorted(unexpected)[:3]})",
        "point `weights:` at the MAISI autoencoder file, or set `network:` to the architecture it was trained with",
    )


def geometry(name: str, arguments: dict[str, Any]) -> tuple[tuple[int, ...], int]:
    """Factor per axis and latent channels of the network (`name` is always AutoencoderKlMaisi)."""
    return (2 ** (len(arguments["num_channels"]) - 1),) * 3, arguments["latent_channels"]


class MaisiModel(LatentModel):
    """MONAI's `AutoencoderKlMaisi` behind the family protocol."""

    family = "maisi"
    windowed = True

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(payload["spec"], payload["demo"])
        self.arguments = dict(payload["config"])
        self.autoencoder = build(self.arguments)
        self.autoencoder.load_state_dict(payload["state_dict"], strict=True)
        self.dims = 3
        self.factors, self.latent_channels = geometry(payload["class"], self.arguments)

    def placed(self, device: str | torch.device) -> LatentModel:
        """On a CPU the half-precision group norms are turned off (they fail on float32 there)."""
        if torch.device(device).type == "cpu":
            for module in self.autoencoder.modules():
                if hasattr(module, "norm_float16"):
                    module.norm_float16 = False
            self.arguments["norm_float16"] = False
        return self.to(device).eval()

    def encode_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of a padded normalized batch `(B, 1, X, Y, Z)`."""
        mean, sigma = self.autoencoder.encode((x + 1) / 2)
        expected = [size // self.factors[0] for size in x.shape[2:]]
        if list(mean.shape[2:]) != expected:  # MONAI's split convolutions lose positions on short axes
            raise ConfigError(
                f"MAISI model {self.spec.get('id')!r}: a {list(x.shape[2:])} input gave a latent of "
                f"{list(mean.shape[2:])}, not {expected}: num_splits={self.arguments['num_splits']} is too many "
                f"for axis {self.arguments['dim_split']} of this size; lower models[].network.num_splits"
            )
        return mean, 2 * torch.log(sigma)

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_posterior(x)[0]

    def encode(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        x, padding = pad_items(images, self.factors)
        mean, logvar = self.encode_posterior(x)
        return {"latent": mean, "logvar": logvar}, {"padded_shape": list(padding.padded_shape)}

    def decode(self, stored: torch.Tensor) -> torch.Tensor:
        return 2 * self.autoencoder.decode(stored)[:, 0] - 1

    def item_bytes(self, shape: list[int] | tuple[int, ...]) -> int:
        # split convolutions hold their input pieces and the joined output besides the maps of a res block:
        # two copies more (bench_families: 0.45 GB measured against 0.38 GB with the default at 64^3)
        return activation_bytes(
            self.arguments["num_channels"], 3, shape, self.factors[0], attention=False, copies=ACTIVATION_FACTOR + 2
        )

    def record(self) -> dict[str, Any]:
        import monai

        return {
            "family": self.family,
            "class": "monai.apps.generation.maisi.networks.autoencoderkl_maisi.AutoencoderKlMaisi",
            "library": {"name": "monai", "version": monai.__version__},
            "scaling": None,
            "network": {key: self.arguments[key] for key in ("num_splits", "dim_split", "norm_float16")},
            "adaptation": {
                "channels": "one channel in and out",
                "intensity": "normalized [-1, 1] mapped to MAISI's [0, 1] by (x + 1) / 2; decoded back by 2y - 1",
                "size": f"each axis padded with the background (-1) to a multiple of {self.factors[0]}",
            },
        }
