"""Weights files besides the final one: stage-1 autoencoders and imported released weights.

Stage 1 trains only the autoencoder, so its file holds the autoencoder alone (LoRA merged,
plain LDM layout) plus the training record the final model card repeats; it is what 2D
stage 2 starts from and what the 3D models inflate. Final weights (`stage2.pt`, format
`medlatent-model/1`) are written and read by `registry.save_model` / `registry.load_model`;
`import_model` turns a model's released `weights:` file into one and returns a record of what
was loaded (projection, merged LoRA layers, folded channels, discarded extras) for the card.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from medlatent.core.atomic import save_torch
from medlatent.core.errors import InputError
from medlatent.models.autoencoder import AutoencoderKL
from medlatent.models.ldm_layout import (
    AUTOENCODER_PREFIXES,
    FULL_MODEL_PREFIX,
    fit_to_model,
    load_strict,
    read_checkpoint,
)
from medlatent.models.lora import RELEASED_LORA_SCALE, merge_lora_pairs, merged_state_dict
from medlatent.models.projection import RELEASED_PROJECTION_KEYS, MedVAE, ProjectionHead, projection_tensors
from medlatent.models.registry import MODEL_FORMAT, architecture, create_autoencoder, load_model

STAGE1_FORMAT = "medlatent-stage1/1"
LOSS_PREFIX = "loss."


def save_autoencoder(
    path: str | Path, autoencoder: torch.nn.Module, spec: dict[str, Any], demo: bool, record: dict[str, Any]
) -> None:
    """Write a stage-1 file atomically: merged LDM-layout weights, the model entry, the record."""
    payload = {
        "format": STAGE1_FORMAT,
        "spec": spec,
        "autoencoder": merged_state_dict(autoencoder),
        "demo": bool(demo),
        # through JSON: pickle writes a string seen twice as a back-reference, so a record whose
        # strings come partly from a resumed checkpoint would pickle to other bytes than an
        # uninterrupted run's; JSON gives the same object graph for the same content
        "record": json.loads(json.dumps(record)),
    }
    save_torch(path, payload)


def load_autoencoder(path: str | Path) -> tuple[AutoencoderKL, dict[str, Any]]:
    """The plain (adapter-free) autoencoder of a stage-1 file and the file's payload."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "stage-1 weights not found", "run the train_stage1 rule of this model first")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != STAGE1_FORMAT:
        raise InputError(path, f"not a {STAGE1_FORMAT} file", "pass results/models/<2D model>/stage1.pt")
    autoencoder = create_autoencoder(payload["spec"])
    load_strict(autoencoder, payload["autoencoder"], path)
    return autoencoder, payload


def identity_projection(channels: int) -> ProjectionHead:
    """A projection head that returns its input: z + 0, then the identity 1x1 conv."""
    head = ProjectionHead(2, channels)
    with torch.no_grad():
        last = head.body[-1]
        last.weight.zero_()
        last.bias.zero_()
        head.out.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
        head.out.bias.zero_()
    return head


def _medlatent_payload(path: Path) -> dict[str, Any] | None:
    """The file's dict when it is a `medlatent-model/1` file, else None (an LDM checkpoint)."""
    if path.suffix == ".safetensors":
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError):
        return None  # not a plain tensor pickle: read_checkpoint explains what to do with it
    return payload if isinstance(payload, dict) and payload.get("format") == MODEL_FORMAT else None


def _discard_known_extras(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Drop what a checkpoint may carry besides the model, counted by kind for the card.

    Full latent-diffusion checkpoints hold the autoencoder under ``first_stage_model.`` beside
    the diffusion network; LDM training checkpoints carry the loss module (``loss.*``:
    discriminator and LPIPS). Neither is part of the autoencoder.
    """
    discarded = {}
    if any(key.startswith(FULL_MODEL_PREFIX) for key in tensors):
        outside = [key for key in tensors if not key.startswith(FULL_MODEL_PREFIX)]
        if outside:
            discarded[f"outside {FULL_MODEL_PREFIX}* (the diffusion model)"] = len(outside)
        tensors = {key[len(FULL_MODEL_PREFIX) :]: v for key, v in tensors.items() if key.startswith(FULL_MODEL_PREFIX)}
    loss = [key for key in tensors if key.startswith(LOSS_PREFIX)]
    if loss:
        discarded[f"{LOSS_PREFIX}* (training loss: discriminator, LPIPS)"] = len(loss)
    return {key: v for key, v in tensors.items() if not key.startswith(LOSS_PREFIX)}, discarded


def _projection_from_file(
    head: dict[str, torch.Tensor], autoencoder: AutoencoderKL, path: Path
) -> tuple[ProjectionHead | None, str | None]:
    """The stage-2 head a model gets from a file's head tensors, and what the card says about it.

    2D: the file's head, or the identity when it has none. 3D: the public MedVAE code returns
    the UNPROJECTED posterior for 3D models although their files carry a (3D) head, so the
    head is checked for shape and left unapplied, and the card says so.
    """
    channels = autoencoder.latent_channels
    if autoencoder.spatial_dims == 2:
        if not head:
            return identity_projection(channels), "identity (the file has no stage-2 projection)"
        projection = ProjectionHead(2, channels)
        load_strict(projection, head, path)
        return projection, "from the file (channel_ds/channel_proj: stage-2 head applied to the latent)"
    if not head:
        return None, None
    load_strict(ProjectionHead(head["body.0.weight"].ndim - 2, channels), head, path)
    return None, (
        "not applied: the file's 3D stage-2 head (channel_ds/channel_proj) was read and checked; "
        "the authors' 3D latent is the unprojected posterior, so this one is too"
    )


def import_ldm_checkpoint(path: str | Path, spec: dict[str, Any], is_demo: bool) -> tuple[MedVAE, dict[str, Any]]:
    """A released LDM-layout checkpoint (e.g. MedVAE's `vae_*.ckpt`) as a MedVAE, with nothing lost silently.

    LoRA pairs are merged, the stage-2 head is mapped onto ours, 3-channel ``conv_in`` /
    ``conv_out`` are folded to gray. Every tensor of the file must be used or be a known extra
    (counted in the record); otherwise InputError lists the unused keys.
    """
    path = Path(path)
    tensors = read_checkpoint(path)
    kept, discarded = _discard_known_extras(tensors)
    merged, lora_layers = merge_lora_pairs(kept)
    head = projection_tensors(merged)
    unused = sorted(
        key
        for key in merged
        if ".lora_" in key  # half of a pair: nothing to merge it with
        or not key.startswith((*AUTOENCODER_PREFIXES, *RELEASED_PROJECTION_KEYS))
    )
    if unused:
        raise InputError(
            path,
            f"{len(unused)} tensors of the file would not be used: {unused[:24]}{' ...' if len(unused) > 24 else ''}",
            "point `weights:` at an LDM AutoencoderKL / MedVAE checkpoint, or remove those tensors",
        )
    autoencoder = create_autoencoder(spec)
    fitted, changes = fit_to_model(
        autoencoder, {key: v for key, v in merged.items() if key.startswith(AUTOENCODER_PREFIXES)}
    )
    load_strict(autoencoder, fitted, path)
    projection, projection_origin = _projection_from_file(head, autoencoder, path)
    record = {
        "path": str(path),
        "layout": "ldm",
        "tensors": len(tensors),
        "projection": projection_origin,
        "lora": (
            {"merged_layers": len(lora_layers), "scale": RELEASED_LORA_SCALE, "rule": "W + scale * lora_up @ lora_down"}
            if lora_layers
            else None
        ),
        "adapted": changes,
        "discarded": discarded,
    }
    return MedVAE(autoencoder, projection, spec=spec, is_demo=is_demo), record


def import_model(path: str | Path, spec: dict[str, Any], is_demo: bool) -> tuple[MedVAE, dict[str, Any]]:
    """A model entry with `weights: PATH`: its MedVAE and where the weights came from.

    Accepts a `medlatent-model/1` file (architecture must match the entry) or an LDM-layout
    checkpoint such as the released MedVAE files (``import_ldm_checkpoint``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "released weights file not found", f"put it there or fix models[{spec['id']}].weights")
    payload = _medlatent_payload(path)
    if payload is None:
        return import_ldm_checkpoint(path, spec, is_demo)
    model = load_model(path)
    if architecture(model.spec) != architecture(spec):
        raise InputError(
            path,
            f"weights are for another architecture than models[{spec['id']}]",
            "point `weights:` at a file of this model or fix the model entry",
        )
    model = MedVAE(model.autoencoder, model.projection, spec=spec, is_demo=is_demo or model.is_demo)
    return model, {"path": str(path), "layout": MODEL_FORMAT, "projection": "from the file"}
