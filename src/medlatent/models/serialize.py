"""Weights files besides the final one: stage-1 autoencoders and imported released weights.

Stage 1 trains only the autoencoder, so its file holds the autoencoder alone (LoRA merged,
plain LDM layout) plus the training record the final model card repeats; it is what 2D
stage 2 starts from and what the 3D models inflate. Final weights (`stage2.pt`, format
`medlatent-model/1`) are written and read by `registry.save_model` / `registry.load_model`;
`import_model` turns a model's released `weights:` file into one.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from ..atomic import save_torch
from ..errors import InputError
from .autoencoder import AutoencoderKL
from .ldm_layout import load_ldm_weights, load_strict, read_checkpoint
from .lora import merged_state_dict
from .projection import MedVAE, ProjectionHead
from .registry import MODEL_FORMAT, architecture, create_autoencoder, load_model

STAGE1_FORMAT = "medlatent-stage1/1"


def save_autoencoder(path: str | Path, autoencoder: torch.nn.Module, spec: dict[str, Any], demo: bool,
                     record: dict[str, Any]) -> None:
    """Write a stage-1 file atomically: merged LDM-layout weights, the model entry, the record."""
    payload = {"format": STAGE1_FORMAT, "spec": spec, "autoencoder": merged_state_dict(autoencoder),
               "demo": bool(demo), "record": record}
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


def import_model(path: str | Path, spec: dict[str, Any], is_demo: bool) -> tuple[MedVAE, dict[str, Any]]:
    """A model entry with `weights: PATH`: its MedVAE and where the weights came from.

    Accepts a `medlatent-model/1` file (architecture must match the entry) or an LDM-layout
    checkpoint (strict). 2D LDM checkpoints carry no stage-2 head unless they hold
    `projection.*` tensors in our layout; otherwise the head is the identity, so the latent
    is the posterior mean, and the origin record says so.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "released weights file not found", f"put it there or fix models[{spec['id']}].weights")
    payload = _medlatent_payload(path)
    if payload is not None:
        model = load_model(path)
        if architecture(model.spec) != architecture(spec):
            raise InputError(path, f"weights are for another architecture than models[{spec['id']}]",
                             "point `weights:` at a file of this model or fix the model entry")
        model = MedVAE(model.autoencoder, model.projection, spec=spec, is_demo=is_demo or model.is_demo)
        return model, {"path": str(path), "layout": MODEL_FORMAT, "projection": "from the file"}
    autoencoder = load_ldm_weights(create_autoencoder(spec), path)
    projection, origin = None, None
    if autoencoder.spatial_dims == 2:
        heads = {k.removeprefix("projection."): v for k, v in read_checkpoint(path).items()
                 if k.startswith("projection.")}
        projection = identity_projection(autoencoder.latent_channels)
        origin = "identity (the file has no stage-2 projection)"
        if heads:
            load_strict(projection, heads, path)
            origin = "from the file"
    return MedVAE(autoencoder, projection, spec=spec, is_demo=is_demo), {"path": str(path), "layout": "ldm",
                                                                        "projection": origin}
