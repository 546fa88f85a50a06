"""Model configurations are data: one builder turns a config entry into an ``AutoencoderKL``.

timm-style: the six published MedVAE models (and the undocumented f16 C4 the authors also
released) are entries of ``PUBLISHED`` (documentation and tests), not builders; ``RELEASED``
names the file of each on the Hugging Face hub. ``create_autoencoder`` reads only the architecture keys of a
``models:`` entry (``dims, f, latent_channels, ch, ch_mult, num_res_blocks, norm_groups``) and
checks that the compression factor ``f`` really is what ``ch_mult`` and ``dims`` give.
``save_model`` / ``load_model`` write and read the final weights file of a model
(``results/models/{model}/stage2.pt``, format ``medlatent-model/1``, see docs/contracts.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medlatent.core.atomic import save_torch
from medlatent.core.errors import ConfigError, InputError
from medlatent.models.autoencoder import AutoencoderKL
from medlatent.models.ldm_layout import load_strict
from medlatent.models.lora import merged_state_dict
from medlatent.models.projection import MedVAE, ProjectionHead

MODEL_FORMAT = "medlatent-model/1"

#: Defaults of the schema for keys a config entry may omit.
DEFAULTS = {"ch": 128, "num_res_blocks": 2, "norm_groups": 32, "in_channels": 1}

#: The published MedVAE family (paper + public code): all ch=128, 2 res blocks, 1-channel in/out.
PUBLISHED: dict[str, dict[str, Any]] = {
    "f16_c1": {"dims": 2, "f": 16, "latent_channels": 1, "ch_mult": [1, 2, 4]},
    "f16_c3": {"dims": 2, "f": 16, "latent_channels": 3, "ch_mult": [1, 2, 4]},
    "f64_c1": {"dims": 2, "f": 64, "latent_channels": 1, "ch_mult": [1, 2, 4, 4]},
    "f64_c4": {"dims": 2, "f": 64, "latent_channels": 4, "ch_mult": [1, 2, 4, 4]},
    "f64_c1_3d": {"dims": 3, "f": 64, "latent_channels": 1, "ch_mult": [1, 2, 4]},
    "f512_c1_3d": {"dims": 3, "f": 512, "latent_channels": 1, "ch_mult": [1, 2, 4, 4]},
    # released but undocumented (vae_4x_4c_2D.ckpt): f16 by its name, ch_mult as the other f16 models
    "f16_c4": {"dims": 2, "f": 16, "latent_channels": 4, "ch_mult": [1, 2, 4]},
}

#: The released checkpoints (hub repo ``RELEASED_REPO``, folder ``model_weights/``) by ``PUBLISHED`` name.
RELEASED_REPO = "stanfordmimi/MedVAE"
RELEASED: dict[str, str] = {
    "f16_c1": "model_weights/vae_4x_1c_2D.ckpt",
    "f16_c3": "model_weights/vae_4x_3c_2D.ckpt",
    "f64_c1": "model_weights/vae_8x_1c_2D.ckpt",
    "f64_c4": "model_weights/vae_8x_4c_2D.ckpt",
    "f64_c1_3d": "model_weights/vae_4x_1c_3D.ckpt",
    "f512_c1_3d": "model_weights/vae_8x_1c_3D.ckpt",
    "f16_c4": "model_weights/vae_4x_4c_2D.ckpt",
}


def compression_factor(dims: int, ch_mult: list[int]) -> int:
    """Pixels (2D) or voxels (3D) per latent position: (2 ** (levels - 1)) ** dims."""
    return (2 ** (len(ch_mult) - 1)) ** dims


def published_spec(name: str) -> dict[str, Any]:
    """A full config entry for one of the published models (``PUBLISHED`` keys)."""
    if name not in PUBLISHED:
        raise ConfigError(f"unknown published model {name!r}; choose one of {sorted(PUBLISHED)}")
    return {"id": name, **DEFAULTS, **PUBLISHED[name]}


def architecture(spec: dict[str, Any]) -> dict[str, Any]:
    """Validated ``AutoencoderKL`` keyword arguments for a config entry; ConfigError names the model."""
    name = spec.get("id", "<unnamed model>")
    missing = [key for key in ("dims", "f", "latent_channels", "ch_mult") if key not in spec]
    if missing:
        raise ConfigError(f"model {name!r}: missing keys {missing}")
    full = {**DEFAULTS, **spec}
    dims, ch_mult, groups = full["dims"], list(full["ch_mult"]), full["norm_groups"]
    if dims not in (2, 3):
        raise ConfigError(f"model {name!r}: dims must be 2 or 3, got {dims!r}")
    if len(ch_mult) < 1:
        raise ConfigError(f"model {name!r}: ch_mult must list at least one level")
    expected = compression_factor(dims, ch_mult)
    if full["f"] != expected:
        per_axis = 2 ** (len(ch_mult) - 1)
        raise ConfigError(
            f"model {name!r}: f={full['f']} does not match ch_mult={ch_mult} in {dims}D "
            f"({len(ch_mult)} levels halve each axis {len(ch_mult) - 1} times: /{per_axis} per axis, "
            f"f = {per_axis}**{dims} = {expected}); fix f or ch_mult"
        )
    widths = sorted({full["ch"] * m for m in ch_mult} | {full["ch"]})
    bad = [w for w in widths if w % groups]
    if bad:
        raise ConfigError(
            f"model {name!r}: norm_groups={groups} must divide every channel width, not {bad} "
            f"(widths are ch x ch_mult = {widths}); pick norm_groups dividing ch={full['ch']}"
        )
    if full["latent_channels"] < 1:
        raise ConfigError(f"model {name!r}: latent_channels must be >= 1")
    return {
        "spatial_dims": dims,
        "in_channels": full["in_channels"],
        "ch": full["ch"],
        "ch_mult": ch_mult,
        "num_res_blocks": full["num_res_blocks"],
        "latent_channels": full["latent_channels"],
        "norm_groups": groups,
    }


def create_autoencoder(spec: dict[str, Any]) -> AutoencoderKL:
    """Build the (randomly initialised) autoencoder a ``models:`` config entry describes."""
    return AutoencoderKL(**architecture(spec))


def build_medvae(spec: dict[str, Any], is_demo: bool = False) -> MedVAE:
    """Untrained ``MedVAE`` for a config entry: 2D models get the stage-2 projection head, 3D none."""
    autoencoder = create_autoencoder(spec)
    projection = ProjectionHead(2, autoencoder.latent_channels) if autoencoder.spatial_dims == 2 else None
    return MedVAE(autoencoder, projection, spec=spec, is_demo=is_demo)


def save_model(path: str | Path, model: MedVAE, embedder: str, steps: int) -> None:
    """Write the final weights file atomically; LoRA adapters are merged into the LDM layout."""
    payload = {
        "format": MODEL_FORMAT,
        "spec": model.spec,
        "autoencoder": merged_state_dict(model.autoencoder),
        "projection": None if model.projection is None else model.projection.state_dict(),
        "demo": bool(model.is_demo),
        "embedder": embedder,
        "steps": int(steps),
    }
    save_torch(path, payload)


def load_model(path: str | Path) -> MedVAE:
    """The one loader of final weights files: a ``MedVAE`` in eval mode on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "model weights file not found", "run the training rule for this model first")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise InputError(
            path,
            f"not a {MODEL_FORMAT} weights file",
            "pass results/models/<model>/stage2.pt; for LDM checkpoints use models.ldm_layout",
        )
    model = build_medvae(payload["spec"], is_demo=payload["demo"])
    load_strict(model.autoencoder, payload["autoencoder"], path)
    if (payload["projection"] is None) != (model.projection is None):
        raise InputError(path, "projection head present/absent unlike the model's dims", "re-run stage 2")
    if model.projection is not None:
        load_strict(model.projection, payload["projection"], path)
    return model.eval()
