"""Autoencoder families: one module per family behind one protocol (`base.LatentModel`).

Where to add a family: a module here with `read_weights(path, spec) -> {"class", "config",
"state_dict"}`, `weights_file(path)` (the file whose sha256 the card records), `geometry(class,
config) -> (factors, latent_channels)` (what the model sets them from, and what the efficiency
job reads without building the network) and a `LatentModel` subclass built from that payload,
registered in `FAMILIES`, and the name in the schema's `models[].family` enum. A family model is
imported, never trained: `import_family` turns its `weights:` into the final weights file
(`FAMILY_FORMAT`: the library's class name, its own config and state dict, the model entry), and
`load_latent_model` is the one loader extraction and decoding use, for trained MedVAE models
too.

Architecture facts (dims, factor per axis, latent channels) come from the weights' own config;
values the entry gives (`f`, `latent_channels`) must agree with them (`check_entry`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import torch

from medlatent.core.atomic import save_torch
from medlatent.core.errors import InputError
from medlatent.models.families import diffusers, maisi
from medlatent.models.families.base import FAMILY_FORMAT, LatentModel
from medlatent.models.families.medvae import MedVAEModel
from medlatent.models.families.slices import SliceWise, slicewise_factors
from medlatent.models.registry import MODEL_FORMAT, load_model

#: Imported families: name -> (module reading the weights, `LatentModel` class).
FAMILIES = {"diffusers": (diffusers, diffusers.DiffusersModel), "maisi": (maisi, maisi.MaisiModel)}


class Geometry(NamedTuple):
    """What a family model's latent is, read from its weights' config: factor per item axis, latent
    channels, and whether the weights are demo weights (every output they touch says so)."""

    factors: tuple[int, ...]
    latent_channels: int
    demo_weights: bool


def from_payload(payload: dict[str, Any]) -> LatentModel:
    """The model of a `FAMILY_FORMAT` payload, slice-wise when its entry says `apply: slices`."""
    model = FAMILIES[payload["family"]][1](payload)
    return SliceWise(model) if payload["spec"].get("apply") == "slices" else model


def payload_geometry(payload: dict[str, Any]) -> Geometry:
    """Factor per item axis, latent channels and demo flag of a `FAMILY_FORMAT` payload, from its config
    alone: what `from_payload(payload)` has as `factors`, `latent_channels` and `is_demo`, without
    building the network."""
    factors, channels = FAMILIES[payload["family"]][0].geometry(payload["class"], payload["config"])
    if payload["spec"].get("apply") == "slices":
        factors = slicewise_factors(factors)
    return Geometry(factors, channels, bool(payload["demo"]))


def weights_geometry(path: str | Path) -> Geometry:
    """`payload_geometry` of a family model's final weights file; the file is memory-mapped, so its
    tensors are never read (an SDXL-size VAE costs no weight memory)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "model weights file not found", "run the import rule for this model first")
    payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not (isinstance(payload, dict) and payload.get("format") == FAMILY_FORMAT):
        raise InputError(path, f"not a {FAMILY_FORMAT} file (a family model's final weights)", "rerun its import rule")
    return payload_geometry(payload)


def check_entry(model: LatentModel, spec: dict[str, Any], path: Path) -> None:
    """The entry's `apply`, `f` and `latent_channels` must fit what the weights are."""
    inner = model.model if isinstance(model, SliceWise) else model
    expected = {"images": inner.dims == 2, "slices": inner.dims == 2, "volumes": inner.dims == 3}[spec["apply"]]
    if not expected:
        raise InputError(
            path,
            f"models[{spec['id']}] has apply: {spec['apply']}, but these weights are a {inner.dims}D model",
            "use apply: images or slices for 2D models and apply: volumes for 3D models",
        )
    facts = {"f": math.prod(model.factors), "latent_channels": model.latent_channels}
    wrong = {key: (spec[key], value) for key, value in facts.items() if spec.get(key) not in (None, value)}
    if wrong:
        raise InputError(
            path,
            "models[{}] says {} but the weights' config gives {}".format(
                spec["id"], {k: v[0] for k, v in wrong.items()}, {k: v[1] for k, v in wrong.items()}
            ),
            "remove those keys from the entry (they are read from the weights) or fix them",
        )


def import_family(path: str | Path, spec: dict[str, Any], is_demo: bool, out: str | Path) -> tuple[LatentModel, dict]:
    """Write the final weights file of a family model from its `weights:`; the model and the card's origin record."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "weights not found", f"put them there or fix models[{spec['id']}].weights")
    module = FAMILIES[spec["family"]][0]
    payload = {"format": FAMILY_FORMAT, "family": spec["family"], "spec": spec, "demo": bool(is_demo)}
    payload.update(module.read_weights(path, spec))
    model = from_payload(payload)
    check_entry(model, spec, path)
    save_torch(out, payload)
    record = {
        "path": str(path),
        "file": str(module.weights_file(path)),
        "layout": f"{spec['family']} {payload['class']}",
        "tensors": len(payload["state_dict"]),
        "autoencoder": model.record(),
        "geometry": {"factors": list(model.factors), "latent_channels": model.latent_channels},
        "license": spec.get("license"),
    }
    return model, record


def load_latent_model(path: str | Path) -> LatentModel:
    """The one loader of final weights for extraction and decoding: any family, in eval mode on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "model weights file not found", "run the training or import rule for this model first")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(payload, dict) and payload.get("format") == FAMILY_FORMAT:
        return from_payload(payload).eval()
    if isinstance(payload, dict) and payload.get("format") == MODEL_FORMAT:
        return MedVAEModel(load_model(path)).eval()
    raise InputError(path, f"neither a {MODEL_FORMAT} nor a {FAMILY_FORMAT} file", "rerun the model's rule")
