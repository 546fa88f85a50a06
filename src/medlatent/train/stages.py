"""The training stages the loop runs: what one micro-batch and one optimiser step compute.

- `AdversarialStage`: autoencoder + PatchGAN discriminator (2D stage 1, 3D stage 2). One step
  is one global batch that updates ONE network, as in the public MedVAE training loop: before
  `disc_start` every step updates the autoencoder; from it on, even steps update the
  autoencoder and odd steps the discriminator, scored on a fresh no-grad reconstruction of
  the batch (docs/recipe.md: what a step counts).
- `ProjectionStage`: 2D stage 2, frozen autoencoder, trainable projection head.

Every optimiser is Adam with betas (0.5, 0.9), as in the public code's stage-1 and stage-2
scripts. A fix of the public code's defect: the discriminator is in train mode whenever it
trains (checked before each of its backward passes).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, Protocol

import torch

from medlatent.core.errors import ConfigError
from medlatent.models.projection import ProjectionHead
from medlatent.train import ddp
from medlatent.train.losses import Stage1Loss, last_layer_parameter, stage2_loss

ADAM_BETAS = (0.5, 0.9)
PRECISIONS = {"32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def require_train_mode(discriminator: torch.nn.Module) -> None:
    """The public code's defect: a discriminator stuck in eval mode (BatchNorm frozen) kept training."""
    stuck = [name for name, module in discriminator.named_modules() if not module.training]
    if stuck:
        raise RuntimeError(
            f"the discriminator is about to train with modules in eval mode ({stuck[:3]}...): "
            "its BatchNorm would use frozen running statistics"
        )


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

    def __init__(
        self, autoencoder: torch.nn.Module, loss: Stage1Loss, lr: float, precision: str, context: ddp.Context
    ) -> None:
        self.context = context
        self.autoencoder = autoencoder.to(context.device).train()
        self.model = ddp.wrap(self.autoencoder, context)
        self.loss = loss.to(context.device)
        self.discriminator = loss.discriminator
        ddp.broadcast_parameters(self.discriminator, context)
        trainable = [p for p in self.autoencoder.parameters() if p.requires_grad]
        self.optimizers = {
            # foreach: one fused update over all tensors; PyTorch only defaults to it on CUDA
            "generator": torch.optim.Adam(trainable, lr=lr, betas=ADAM_BETAS, foreach=True),
            "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=ADAM_BETAS, foreach=True),
        }
        self.precision = _Precision(precision, context.device, list(self.optimizers))
        self.last_layer = last_layer_parameter(self.autoencoder)

    def trains_discriminator(self, step: int) -> bool:
        """Whether `step` updates the discriminator (odd steps from disc_start on) or the autoencoder."""
        return self.loss.adversarial_active(step) and step % 2 == 1

    def micro_step(self, x: torch.Tensor, step: int, scale: float, synchronize: bool) -> dict[str, float]:
        if self.trains_discriminator(step):
            with torch.no_grad(), self.precision.autocast():
                recon, _ = self.autoencoder(x)
            with self.precision.autocast():
                d_loss, logs = self.loss.discriminator_loss(x, recon, step)
            require_train_mode(self.discriminator)
            self.precision.backward("discriminator", d_loss * scale)
            return _floats(logs)
        self.discriminator.requires_grad_(False)  # the generator's loss must not train D
        with ddp.sync_context(self.model, synchronize):
            with self.precision.autocast():
                recon, posterior = self.model(x)
                total, logs = self.loss.generator_loss(x, recon, posterior, step, self.last_layer)
            self.precision.backward("generator", total * scale)
        self.discriminator.requires_grad_(True)
        return _floats(logs)

    def optimizer_step(self, step: int) -> None:
        if self.trains_discriminator(step):
            ddp.average_gradients(self.discriminator.parameters(), self.context)
            self.precision.step("discriminator", self.optimizers["discriminator"])
        else:
            self.precision.step("generator", self.optimizers["generator"])
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
        return {
            "model": self.autoencoder.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "scalers": {n: s.state_dict() for n, s in self.precision.scalers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.autoencoder.load_state_dict(state["model"])
        self.discriminator.load_state_dict(state["discriminator"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scaler in self.precision.scalers.items():
            scaler.load_state_dict(state["scalers"][name])


class ProjectionStage:
    """2D stage 2: frozen autoencoder, trainable projection head, embedding loss."""

    def __init__(
        self,
        autoencoder: torch.nn.Module,
        projection: ProjectionHead,
        embedder: torch.nn.Module,
        lr: float,
        precision: str,
        context: ddp.Context,
    ) -> None:
        self.autoencoder = autoencoder.to(context.device).eval().requires_grad_(False)
        self.projection = projection.to(context.device).train()
        self.model = ddp.wrap(self.projection, context)
        self.embedder = embedder.to(context.device)
        self.optimizer = torch.optim.Adam(self.projection.parameters(), lr=lr, betas=ADAM_BETAS, foreach=True)
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
        return {
            "model": self.projection.state_dict(),
            "optimizers": {"projection": self.optimizer.state_dict()},
            "scalers": {n: s.state_dict() for n, s in self.precision.scalers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.projection.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizers"]["projection"])
        for name, scaler in self.precision.scalers.items():
            scaler.load_state_dict(state["scalers"][name])
