"""The training stages of MedVAE and the one loop that runs them.

- stage 1 (2D): the LDM autoencoder objective (L1 + LPIPS + KL + BiomedCLIP consistency +
  PatchGAN hinge with the adaptive weight from `disc_start`), Adam betas (0.5, 0.9). Models
  with `init: {weights: PATH}` start from natural-image KL-VAE weights and train LoRA
  adapters only; `init: scratch` with `lora:` (demo only) puts them on a random base.
- stage 2, 2D: encoder and decoder frozen, only the projection head trains (embedding loss).
- stage 2, 3D: the parent 2D model's stage-1 autoencoder inflated by kernel centring, then
  the stage-1 objective on 3D patches (LPIPS and discriminator on slices along all three
  axes, no embedding term).

Fixes of the public code's defects: the discriminator is in train mode whenever it trains
(checked before each of its backward passes), and gradient accumulation is applied for
real: `batch_size` is the global batch, cut into world x accumulation micro-batches
(`data.MicroBatches`), each loss weighted by its share so the summed gradient is the
gradient of the global batch mean. `lr` of the adversarial stages is LDM's base rate and the
optimiser uses lr x batch_size (published: 4.5e-6 x per-GPU batch x GPUs x accumulation).

Determinism: all randomness of a micro-batch (posterior sample, LoRA dropout) comes from the
torch generator reseeded from (seed, step, micro-batch number), and the data stream is a
function of the sample number, so a resumed run repeats an uninterrupted one exactly on the
CPU, and N processes compute what one process accumulating N micro-batches does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from medlatent.models.card import demo_reasons, stage_record, write_card
from medlatent.config import canonical_json
from medlatent.core.errors import ConfigError
from medlatent.models.embedder import load_embedder
from medlatent.models.inflate import inflate_model
from medlatent.models.ldm_layout import load_ldm_weights
from medlatent.models.lora import apply_lora
from medlatent.models.perceptual import load_perceptual
from medlatent.models.projection import MedVAE, ProjectionHead
from medlatent.models.registry import architecture, create_autoencoder, save_model
from medlatent.models.serialize import load_autoencoder, save_autoencoder
from medlatent.train import checkpoint, curves, ddp
from medlatent.train.data import CropDataset, MicroBatches, crop_size, index_shards, micro_batch, train_loader, validation_loader
from medlatent.train.losses import Stage1Loss, last_layer_parameter, stage2_loss

log = logging.getLogger(__name__)

ADAM_BETAS_GAN = (0.5, 0.9)
PRECISIONS = {"32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
#: Keys that change how often state is saved, not what is computed: not in the fingerprint.
BOOKKEEPING_KEYS = ("checkpoint_every",)

StepHook = Callable[[int, dict], None]


@dataclass
class Job:
    """One training job: its config slice, inputs, outputs and place in the process group."""

    spec: dict[str, Any]
    train_shards: Sequence[str]
    val_shards: Sequence[str]
    manifests: Sequence[str]
    checkpoints: Path
    weights: Path
    losses: Path
    curve: Path
    card: Path | None = None
    parent: Path | None = None
    context: ddp.Context = field(default_factory=ddp.setup)
    workers: int = 0
    #: Called after every optimisation step with (steps done, mean train losses).
    hooks: Sequence[StepHook] = ()

    @property
    def settings(self) -> dict[str, Any]:
        return self.spec["train"]


# ----------------------------------------------------------------------------- plan


def effective_lr(settings: dict[str, Any]) -> float:
    """lr x global batch for the adversarial stages (LDM's scaling), else lr as configured."""
    return settings["lr"] * settings["batch_size"] if settings["lr_scaled_by_batch"] else settings["lr"]


def seed_micro_batch(seed: int, step: int, number: int) -> None:
    """Reseed torch (CPU and CUDA) for micro-batch `number` of `step`."""
    torch.manual_seed(int(np.random.SeedSequence([seed, step, number]).generate_state(1)[0]))


def fingerprint(job: Job) -> str:
    """Identity of a job for resuming: its slice without bookkeeping keys, and its input files."""
    spec = {**job.spec, "train": {k: v for k, v in job.settings.items() if k not in BOOKKEEPING_KEYS}}
    inputs = [(f"{Path(p).parent.name}/{Path(p).name}", os.stat(p).st_size, os.stat(p).st_mtime_ns)
              for p in sorted(map(str, [*job.train_shards, *job.val_shards, *([job.parent] if job.parent else [])]))]
    return hashlib.sha256(canonical_json({"spec": spec, "inputs": inputs}).encode()).hexdigest()


def require_train_mode(discriminator: torch.nn.Module) -> None:
    """The public code's defect: a discriminator stuck in eval mode (BatchNorm frozen) kept training."""
    stuck = [name for name, module in discriminator.named_modules() if not module.training]
    if stuck:
        raise RuntimeError(f"the discriminator is about to train with modules in eval mode ({stuck[:3]}...): "
                           "its BatchNorm would use frozen running statistics")


# ----------------------------------------------------------------------------- stages


class Stage(Protocol):
    """What the loop needs from a training stage."""

    def micro_step(self, x: torch.Tensor, step: int, scale: float, synchronize: bool) -> dict[str, float]: ...
    def optimizer_step(self, step: int) -> None: ...
    def validate(self, x: torch.Tensor, step: int) -> dict[str, float]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class _Precision:
    """Autocast and one GradScaler per optimiser for the configured precision."""

    def __init__(self, precision: str, device: torch.device, names: Sequence[str]) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r} is not one of {sorted(PRECISIONS)}")
        self.dtype, self.device = PRECISIONS[precision], device
        self.scalers = {name: torch.amp.GradScaler(device.type, enabled=precision == "16-mixed") for name in names}

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, name: str, loss: torch.Tensor) -> None:
        self.scalers[name].scale(loss).backward()

    def step(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        self.scalers[name].step(optimizer)
        self.scalers[name].update()


def _floats(logs: dict[str, torch.Tensor]) -> dict[str, float]:
    return {key: float(value) for key, value in logs.items()}


class AdversarialStage:
    """Autoencoder + discriminator: 2D stage 1 and 3D stage 2."""

    def __init__(self, autoencoder: torch.nn.Module, loss: Stage1Loss, lr: float, precision: str,
                 context: ddp.Context) -> None:
        self.context = context
        self.autoencoder = autoencoder.to(context.device).train()
        self.model = ddp.wrap(self.autoencoder, context)
        self.loss = loss.to(context.device)
        self.discriminator = loss.discriminator
        ddp.broadcast_parameters(self.discriminator, context)
        trainable = [p for p in self.autoencoder.parameters() if p.requires_grad]
        self.optimizers = {
            # foreach: one fused update over all tensors; PyTorch only defaults to it on CUDA
            "generator": torch.optim.Adam(trainable, lr=lr, betas=ADAM_BETAS_GAN, foreach=True),
            "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=ADAM_BETAS_GAN, foreach=True),
        }
        self.precision = _Precision(precision, context.device, list(self.optimizers))
        self.last_layer = last_layer_parameter(self.autoencoder)

    def micro_step(self, x: torch.Tensor, step: int, scale: float, synchronize: bool) -> dict[str, float]:
        self.discriminator.requires_grad_(False)  # the generator's loss must not train D
        with ddp.sync_context(self.model, synchronize):
            with self.precision.autocast():
                recon, posterior = self.model(x)
                total, logs = self.loss.generator_loss(x, recon, posterior, step, self.last_layer)
            self.precision.backward("generator", total * scale)
        self.discriminator.requires_grad_(True)
        if self.loss.adversarial_active(step):
            with self.precision.autocast():
                d_loss, d_logs = self.loss.discriminator_loss(x, recon, step)
            require_train_mode(self.discriminator)
            self.precision.backward("discriminator", d_loss * scale)
            logs.update(d_logs)
        return _floats(logs)

    def optimizer_step(self, step: int) -> None:
        self.precision.step("generator", self.optimizers["generator"])
        if self.loss.adversarial_active(step):
            ddp.average_gradients(self.discriminator.parameters(), self.context)
            self.precision.step("discriminator", self.optimizers["discriminator"])
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def validate(self, x: torch.Tensor, step: int) -> dict[str, float]:
        """Posterior-mean reconstruction losses; the discriminator only scores (eval mode)."""
        self.autoencoder.eval()
        try:
            with torch.no_grad(), self.precision.autocast():
                recon, posterior = self.autoencoder(x, sample_posterior=False)
                _, logs = self.loss.generator_loss(x, recon, posterior, step, None, training=False)
        finally:
            self.autoencoder.train()
        return _floats({key: logs[key] for key in ("nll", "rec_l1", "perceptual", "kl", "embed") if key in logs})

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.autoencoder.state_dict(), "discriminator": self.discriminator.state_dict(),
                "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
                "scalers": {n: s.state_dict() for n, s in self.precision.scalers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.autoencoder.load_state_dict(state["model"])
        self.discriminator.load_state_dict(state["discriminator"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scaler in self.precision.scalers.items():
            scaler.load_state_dict(state["scalers"][name])


class ProjectionStage:
    """2D stage 2: frozen autoencoder, trainable projection head, embedding loss."""

    def __init__(self, autoencoder: torch.nn.Module, projection: ProjectionHead, embedder: torch.nn.Module,
                 lr: float, precision: str, context: ddp.Context) -> None:
        self.autoencoder = autoencoder.to(context.device).eval().requires_grad_(False)
        self.projection = projection.to(context.device).train()
        self.model = ddp.wrap(self.projection, context)
        self.embedder = embedder.to(context.device)
        self.optimizer = torch.optim.Adam(self.projection.parameters(), lr=lr, foreach=True)
        self.precision = _Precision(precision, context.device, ["projection"])

    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean, the latent the projection refines at inference too."""
        with torch.no_grad(), self.precision.autocast():
            return self.autoencoder.encode(x).mean

    def micro_step(self, x: torch.Tensor, step: int, scale: float, synchronize: bool) -> dict[str, float]:
        z = self._latent(x)
        with ddp.sync_context(self.model, synchronize):
            with self.precision.autocast():
                loss, logs = stage2_loss(self.embedder, x, self.model(z))
            self.precision.backward("projection", loss * scale)
        return _floats(logs)

    def optimizer_step(self, step: int) -> None:
        self.precision.step("projection", self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)

    def validate(self, x: torch.Tensor, step: int) -> dict[str, float]:
        z = self._latent(x)
        with torch.no_grad(), self.precision.autocast():
            _, logs = stage2_loss(self.embedder, x, self.projection(z))
        return _floats(logs)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.projection.state_dict(), "optimizers": {"projection": self.optimizer.state_dict()},
                "scalers": {n: s.state_dict() for n, s in self.precision.scalers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.projection.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizers"]["projection"])
        for name, scaler in self.precision.scalers.items():
            scaler.load_state_dict(state["scalers"][name])


# ----------------------------------------------------------------------------- the loop


@dataclass
class Outcome:
    """What a finished stage reports: steps, last losses, and where it ran."""

    steps: int
    final_losses: dict[str, dict[str, float]]
    device: dict[str, Any]
    history: list[dict] = field(repr=False, default_factory=list)


def _global_means(sums: dict[str, float], total: int, context: ddp.Context) -> dict[str, float]:
    """Sample-weighted means over the whole global batch (summed over ranks)."""
    keys = sorted(sums)
    values = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
    if context.distributed:
        values = values.to(context.device)
        torch.distributed.all_reduce(values)
    return {key: float(value) / total for key, value in zip(keys, values.cpu())}


def _validate(stage: Stage, loader, step: int, device: torch.device) -> dict[str, float] | None:
    if loader is None:
        return None
    sums: dict[str, float] = defaultdict(float)
    count = 0
    for x in loader:
        for key, value in stage.validate(x.to(device), step).items():
            sums[key] += value * len(x)
        count += len(x)
    return {key: value / count for key, value in sums.items()}


def device_record(context: ddp.Context, plan: MicroBatches) -> dict[str, Any]:
    device = context.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"type": device.type, "name": name, "processes": context.world,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "global_batch": plan.global_batch,
            "micro_batch": plan.micro_batch, "accumulation": plan.accumulation,
            "torch_threads": torch.get_num_threads()}


def run(job: Job, stage: Stage, dims: int, downsample: int) -> Outcome:
    """Train `stage` for the configured steps, resuming from the latest checkpoint of this job."""
    settings, context, seed = job.settings, job.context, job.spec["seed"]
    steps, every = settings["steps"], settings["checkpoint_every"]
    plan = MicroBatches(settings["batch_size"], micro_batch(settings), context.world)
    items = index_shards(job.train_shards, dims)
    if not items:
        raise ConfigError(f"no training images in {list(job.train_shards)} (sources {job.spec['sources']})")
    size = crop_size(items, settings["crop" if dims == 2 else "patch"], downsample, dims)
    val_items = index_shards(job.val_shards, dims) if context.is_main else []
    validation = validation_loader(val_items, size, plan.micro_batch, settings["val_batches"])
    identity = fingerprint(job)

    start, history = 0, []
    state = checkpoint.load_latest(job.checkpoints, identity)
    if state is not None:
        stage.load_state_dict(state["state"])
        start, history = state["step"], list(state["history"])
        checkpoint.set_rng_state(state["rng"])
    log.info("%s %s: %d steps from step %d, %d training items, input %s, %s", job.spec["model"]["id"],
             job.spec["stage"], steps, start, len(items), size, plan)

    loader = train_loader(CropDataset(items, size, seed, shuffle=True), plan, context.rank, start, steps,
                          job.workers, pin_memory=context.device.type == "cuda")
    batches = iter(loader)
    progress = tqdm(total=steps, initial=start, desc=f"{job.spec['model']['id']} {job.spec['stage']}",
                    file=sys.stderr, mininterval=2.0, disable=not context.is_main, ascii=True)
    for step in range(start, steps):
        sums: dict[str, float] = defaultdict(float)
        for a in range(plan.accumulation):
            x = next(batches).to(context.device, non_blocking=True)
            seed_micro_batch(seed, step, a * context.world + context.rank)
            logs = stage.micro_step(x, step, plan.loss_scale(len(x)), synchronize=a == plan.accumulation - 1)
            for key, value in logs.items():
                sums[key] += value * len(x)
        stage.optimizer_step(step)
        row = _global_means(sums, plan.global_batch, context)
        history.append({"step": step + 1, "split": "train", **row})
        done = step + 1
        if every and done % every == 0 and done < steps:
            if context.is_main:
                val = _validate(stage, validation, step, context.device)
                if val is not None:
                    history.append({"step": done, "split": "val", **val})
                checkpoint.save(job.checkpoints, done, identity,
                                {"state": stage.state_dict(), "history": history,
                                 "sampler": {"seed": seed, "next_sample": done * plan.global_batch}})
            ddp.barrier(context)
        for hook in job.hooks:
            hook(done, row)
        progress.update(1)
        progress.set_postfix({k: f"{row[k]:.3g}" for k in ("total", "rec_l1", "embed", "d_loss") if k in row},
                             refresh=False)
    progress.close()
    if context.is_main:
        val = _validate(stage, validation, steps, context.device)
        if val is not None:
            history.append({"step": steps, "split": "val", **val})
    train_rows = [r for r in history if r["split"] == "train"]
    val_rows = [r for r in history if r["split"] == "val"]
    final = {split: {k: v for k, v in rows[-1].items() if k not in ("step", "split")}
             for split, rows in (("train", train_rows), ("val", val_rows)) if rows}
    return Outcome(steps, final, device_record(context, plan), history)


def _finish(job: Job, outcome: Outcome, title: str) -> None:
    """Loss curves and checkpoint cleanup once the weights are written (rank 0)."""
    curves.write_csv(job.losses, outcome.history)
    curves.plot(job.curve, outcome.history, title)
    checkpoint.clear(job.checkpoints)


def perceptual_network(spec: dict[str, Any]) -> torch.nn.Module | None:
    """LPIPS when the stage weights it (perceptual_weight 0 trains without it)."""
    return load_perceptual(spec["perceptual"]) if spec["train"]["perceptual_weight"] else None


def _networks(embedder, perceptual) -> dict[str, tuple[str, bool] | None]:
    return {"embedder": None if embedder is None else (embedder.name, embedder.is_demo),
            "perceptual": None if perceptual is None else (perceptual.name, perceptual.is_demo)}


def adversarial_loss(settings: dict[str, Any], dims: int, perceptual: torch.nn.Module | None,
                     embedder: torch.nn.Module | None) -> Stage1Loss:
    """The stage-1 objective with the stage's weights; the embedding term only with an embedder (2D)."""
    return Stage1Loss(dims, perceptual, embedder, kl_weight=settings["kl_weight"],
                      perceptual_weight=settings["perceptual_weight"], disc_weight=settings["disc_weight"],
                      disc_start=settings["disc_start"],
                      **({"embed_weight": settings["embed_weight"]} if embedder is not None else {}))


# ----------------------------------------------------------------------------- stage entry points


def build_stage1_autoencoder(model: dict[str, Any], demo: bool) -> torch.nn.Module:
    """The autoencoder stage 1 starts from: random, or natural-image weights (+ LoRA adapters)."""
    autoencoder = create_autoencoder(model)
    init = model.get("init", "scratch")
    if isinstance(init, dict):
        load_ldm_weights(autoencoder, init["weights"])
    elif model.get("lora") and not demo:
        raise ConfigError(f"models[{model['id']}]: LoRA adapters on a random base make sense only in the demo; "
                          "set `init: {weights: PATH}` to the natural-image KL-VAE checkpoint")
    if model.get("lora"):
        lora = model["lora"]
        apply_lora(autoencoder, rank=lora["rank"], alpha=lora["alpha"], dropout=lora["dropout"])
    return autoencoder


def _write_final(job: Job, outcome: Outcome, parent: dict[str, Any], model: MedVAE, networks: dict,
                 embedder_name: str | None, stage1_label: str, title: str) -> None:
    """stage2.pt (spec, demo flag, steps of both stages), card.json and the curves of a model's last stage."""
    spec = job.spec
    record = stage_record(spec, outcome.steps, outcome.final_losses, outcome.device, job.manifests, networks)
    model.spec, model.is_demo = spec["model"], parent["demo"] or bool(demo_reasons(spec, networks))
    save_model(job.weights, model, embedder_name, parent["record"]["steps"] + outcome.steps)
    write_card(job.card, spec["model"], {stage1_label: parent["record"], "stage2": record})
    _finish(job, outcome, f"{spec['model']['id']} {title}")


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
        _finish(job, outcome, f"{model['id']} stage 1")
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
        raise ConfigError(f"{job.parent} was trained for another architecture than models[{model['id']}]: "
                          "rerun its stage 1")
    torch.manual_seed(spec["seed"])
    projection = ProjectionHead(2, autoencoder.latent_channels)
    embedder = load_embedder(spec["embedder"])
    stage = ProjectionStage(autoencoder, projection, embedder, effective_lr(settings), settings["precision"],
                            job.context)
    outcome = run(job, stage, 2, autoencoder.downsample_factor)
    if job.context.is_main:
        _write_final(job, outcome, parent, MedVAE(autoencoder.cpu(), projection.cpu()), _networks(embedder, None),
                     embedder.name, "stage1", "stage 2 (projection)")
    return outcome


def train_stage2_3d(job: Job) -> Outcome:
    """3D stage 2: inflate the parent's stage-1 autoencoder, train on patches; writes stage2.pt and card.json."""
    spec, settings = job.spec, job.settings
    model = spec["model"]
    autoencoder2d, parent = _parent(job)
    wanted = architecture(model)
    if {**architecture(parent["spec"]), "spatial_dims": 3} != wanted:
        raise ConfigError(f"models[{model['id']}] must have the architecture of its inflate_from model "
                          f"{parent['spec']['id']} (ch, ch_mult, num_res_blocks, latent_channels, norm_groups)")
    autoencoder = inflate_model(autoencoder2d)
    autoencoder.set_gradient_checkpointing(settings["gradient_checkpointing"])
    torch.manual_seed(spec["seed"])
    perceptual = perceptual_network(spec)
    loss = adversarial_loss(settings, 3, perceptual, None)
    stage = AdversarialStage(autoencoder, loss, effective_lr(settings), settings["precision"], job.context)
    outcome = run(job, stage, 3, autoencoder.downsample_factor)
    if job.context.is_main:
        # the 3D weights descend from a stage 1 trained with the parent's embedder
        _write_final(job, outcome, parent, MedVAE(autoencoder.cpu()), _networks(None, perceptual),
                     _embedder_name(parent["record"]), f"stage1 ({parent['spec']['id']}, inflated)", "stage 2 (3D)")
    return outcome
