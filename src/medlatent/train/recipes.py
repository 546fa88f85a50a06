"""The per-rule training entry points of MedVAE, each building its stage and running the loop.

- stage 1 (2D): the LDM autoencoder objective (L1 + LPIPS + KL + BiomedCLIP consistency +
  PatchGAN hinge with the adaptive weight from `disc_start`). Models with
  `init: {weights: PATH}` start from natural-image KL-VAE weights and train LoRA adapters
  only; `init: scratch` with `lora:` (demo only) puts them on a random base.
- stage 2, 2D: encoder and decoder frozen, only the projection head trains (embedding loss).
- stage 2, 3D: the parent 2D model's stage-1 autoencoder inflated by kernel centring, then
  the stage-1 objective on 3D patches (LPIPS and discriminator on slices along all three
  axes, no embedding term).

`lr` of the adversarial stages is LDM's base rate and the optimiser uses lr x batch_size
(published: 4.5e-6 x per-GPU batch x GPUs x accumulation).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from medlatent.core.errors import ConfigError
from medlatent.core.hashing import file_sha256
from medlatent.core.hub import is_hub_path
from medlatent.models.card import demo_reasons, stage_record, write_card
from medlatent.models.embedder import load_embedder
from medlatent.models.families import import_family
from medlatent.models.inflate import inflate_model
from medlatent.models.ldm_layout import load_ldm_weights
from medlatent.models.lora import apply_lora
from medlatent.models.perceptual import load_perceptual
from medlatent.models.projection import MedVAE, ProjectionHead
from medlatent.models.registry import architecture, create_autoencoder, save_model
from medlatent.models.serialize import import_model, load_autoencoder, save_autoencoder
from medlatent.train.loop import Job, Outcome, finish, run
from medlatent.train.losses import Stage1Loss
from medlatent.train.stages import AdversarialStage, ProjectionStage

log = logging.getLogger(__name__)


def effective_lr(settings: dict[str, Any]) -> float:
    """lr x global batch for the adversarial stages (LDM's scaling), else lr as configured."""
    return settings["lr"] * settings["batch_size"] if settings["lr_scaled_by_batch"] else settings["lr"]


def perceptual_network(spec: dict[str, Any]) -> torch.nn.Module | None:
    """LPIPS when the stage weights it (perceptual_weight 0 trains without it)."""
    return load_perceptual(spec["perceptual"]) if spec["train"]["perceptual_weight"] else None


def _networks(embedder, perceptual) -> dict[str, tuple[str, bool] | None]:
    return {
        "embedder": None if embedder is None else (embedder.name, embedder.is_demo),
        "perceptual": None if perceptual is None else (perceptual.name, perceptual.is_demo),
    }


def adversarial_loss(
    settings: dict[str, Any], dims: int, perceptual: torch.nn.Module | None, embedder: torch.nn.Module | None
) -> Stage1Loss:
    """The stage-1 objective with the stage's weights; the embedding term only with an embedder (2D)."""
    return Stage1Loss(
        dims,
        perceptual,
        embedder,
        kl_weight=settings["kl_weight"],
        perceptual_weight=settings["perceptual_weight"],
        disc_weight=settings["disc_weight"],
        disc_start=settings["disc_start"],
        **({"embed_weight": settings["embed_weight"]} if embedder is not None else {}),
    )


def build_stage1_autoencoder(model: dict[str, Any], demo: bool) -> torch.nn.Module:
    """The autoencoder stage 1 starts from: random, or natural-image weights (+ LoRA adapters)."""
    autoencoder = create_autoencoder(model)
    init = model.get("init", "scratch")
    if isinstance(init, dict):
        load_ldm_weights(autoencoder, init["weights"])
    elif model.get("lora") and not demo:
        raise ConfigError(
            f"models[{model['id']}]: LoRA adapters on a random base make sense only in the demo; "
            "set `init: {weights: PATH}` to the natural-image KL-VAE checkpoint"
        )
    if model.get("lora"):
        lora = model["lora"]
        apply_lora(autoencoder, rank=lora["rank"], alpha=lora["alpha"], dropout=lora["dropout"])
    return autoencoder


def _write_final(
    job: Job,
    outcome: Outcome,
    parent: dict[str, Any],
    model: MedVAE,
    networks: dict,
    embedder_name: str | None,
    stage1_label: str,
    title: str,
) -> None:
    """stage2.pt (spec, demo flag, steps of both stages), card.json and the curves of a model's last stage."""
    spec = job.spec
    record = stage_record(spec, outcome.steps, outcome.final_losses, outcome.device, job.manifests, networks)
    model.spec, model.is_demo = spec["model"], parent["demo"] or bool(demo_reasons(spec, networks))
    save_model(job.weights, model, embedder_name, parent["record"]["steps"] + outcome.steps)
    write_card(job.card, spec["model"], {stage1_label: parent["record"], "stage2": record})
    finish(job, outcome, f"{spec['model']['id']} {title}")


def _embedder_name(record: dict[str, Any]) -> str | None:
    embedder = record["networks"].get("embedder")
    return None if embedder is None else embedder["name"]


def train_stage1(job: Job) -> Outcome:
    """2D stage 1; writes stage1.pt (LoRA merged), the loss CSV and PNG."""
    spec, settings = job.spec, job.settings
    model = spec["model"]
    torch.manual_seed(spec["seed"])
    autoencoder = build_stage1_autoencoder(model, spec["demo"])
    embedder, perceptual = load_embedder(spec["embedder"]), perceptual_network(spec)
    autoencoder.set_gradient_checkpointing(settings["gradient_checkpointing"])
    loss = adversarial_loss(settings, 2, perceptual, embedder)
    stage = AdversarialStage(autoencoder, loss, effective_lr(settings), settings["precision"], job.context)
    outcome = run(job, stage, 2, autoencoder.downsample_factor)
    if job.context.is_main:
        networks = _networks(embedder, perceptual)
        record = stage_record(spec, outcome.steps, outcome.final_losses, outcome.device, job.manifests, networks)
        save_autoencoder(job.weights, autoencoder, model, bool(demo_reasons(spec, networks)), record)
        finish(job, outcome, f"{model['id']} stage 1")
    return outcome


def _parent(job: Job) -> tuple[torch.nn.Module, dict[str, Any]]:
    if job.parent is None:
        raise ConfigError(f"{job.spec['model']['id']} {job.spec['stage']}: the stage-1 weights file is required")
    return load_autoencoder(job.parent)


def train_stage2_2d(job: Job) -> Outcome:
    """2D stage 2: projection head on the frozen stage-1 autoencoder; writes stage2.pt and card.json."""
    spec, settings = job.spec, job.settings
    model = spec["model"]
    autoencoder, parent = _parent(job)
    if architecture(parent["spec"]) != architecture(model):
        raise ConfigError(
            f"{job.parent} was trained for another architecture than models[{model['id']}]: rerun its stage 1"
        )
    torch.manual_seed(spec["seed"])
    projection = ProjectionHead(2, autoencoder.latent_channels)
    embedder = load_embedder(spec["embedder"])
    stage = ProjectionStage(
        autoencoder, projection, embedder, effective_lr(settings), settings["precision"], job.context
    )
    outcome = run(job, stage, 2, autoencoder.downsample_factor)
    if job.context.is_main:
        _write_final(
            job,
            outcome,
            parent,
            MedVAE(autoencoder.cpu(), projection.cpu()),
            _networks(embedder, None),
            embedder.name,
            "stage1",
            "stage 2 (projection)",
        )
    return outcome


def train_stage2_3d(job: Job) -> Outcome:
    """3D stage 2: inflate the parent's stage-1 autoencoder, train on patches; writes stage2.pt and card.json."""
    spec, settings = job.spec, job.settings
    model = spec["model"]
    autoencoder2d, parent = _parent(job)
    wanted = architecture(model)
    if {**architecture(parent["spec"]), "spatial_dims": 3} != wanted:
        raise ConfigError(
            f"models[{model['id']}] must have the architecture of its inflate_from model "
            f"{parent['spec']['id']} (ch, ch_mult, num_res_blocks, latent_channels, norm_groups)"
        )
    autoencoder = inflate_model(autoencoder2d)
    autoencoder.set_gradient_checkpointing(settings["gradient_checkpointing"])
    torch.manual_seed(spec["seed"])
    perceptual = perceptual_network(spec)
    loss = adversarial_loss(settings, 3, perceptual, None)
    stage = AdversarialStage(autoencoder, loss, effective_lr(settings), settings["precision"], job.context)
    outcome = run(job, stage, 3, autoencoder.downsample_factor)
    if job.context.is_main:
        # the 3D weights descend from a stage 1 trained with the parent's embedder
        _write_final(
            job,
            outcome,
            parent,
            MedVAE(autoencoder.cpu()),
            _networks(None, perceptual),
            _embedder_name(parent["record"]),
            f"stage1 ({parent['spec']['id']}, inflated)",
            "stage 2 (3D)",
        )
    return outcome


def import_weights(spec: dict[str, Any], weights: str | Path, out: str | Path, card: str | Path) -> None:
    """A model with released `weights:` instead of training: its final weights file and a card naming the origin.

    Args:
        spec: the model's import slice (`model`, `demo`).
        weights: the released checkpoint (a local path, or where the hub cache holds it).
        out: the final weights file to write (stage2.pt).
        card: the model card to write.
    """
    model = spec["model"]
    reasons = demo_reasons({"demo": spec["demo"]}, {})
    if model.get("family", "medvae") == "medvae":
        medvae, origin = import_model(weights, model, is_demo=spec["demo"])
        if medvae.is_demo and not spec["demo"]:
            reasons.append("the weights file is marked demo")
        origin.update(sha256=file_sha256(weights))
        save_model(out, medvae, embedder=None, steps=0)
    else:  # another family: imported as the library's class, config and state dict (medlatent.models.families)
        _, origin = import_family(weights, model, spec["demo"], out)
        origin.update(sha256=file_sha256(origin["file"]))
    origin["demo_reasons"] = reasons
    if is_hub_path(model.get("weights")):
        origin["requested"] = model["weights"]  # `path` is where the hub cache held it
    write_card(card, model, {}, weights=origin)
    log.info("imported %s from %s", model["id"], weights)
