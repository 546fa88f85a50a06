"""Stage-1 (autoencoder) and stage-2 (projection head) losses of the MedVAE recipe.

Stage 1 follows LDM's ``LPIPSWithDiscriminator`` as used by the public MedVAE code:
  nll   = sum over pixels of (|x - x_hat| + perceptual_weight * LPIPS(x, x_hat)) / batch
          (LDM's learnable log-variance is never in the autoencoder optimiser, so it stays 0
          and is left out),
  kl    = sum over latent positions of KL(q(z|x) || N(0, I)) / batch, weight 1e-6,
  embed = ||E(x) - E(x_hat)||^2 summed over embedding dims / batch, weight 100 (public code),
  adv   = -mean D(x_hat), weighted by disc_weight x the adaptive weight
          ||grad nll|| / (||grad adv|| + 1e-4) (clamped to [0, 1e4]) at the decoder's last
          trainable layer, and only from step ``disc_start`` on (never with disc_weight 0).
The discriminator (``train.discriminator``) is trained with LDM's hinge loss
0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))), written out here (MONAI's
``PatchAdversarialLoss('hinge')`` squashes logits with tanh first).
3D (stage 2 of the 3D models), as in the public code: LPIPS runs on every slice along depth,
height and width, and its mean over all those slices is the perceptual term of every voxel of
the volume; D(.) is the element-wise mean of the logit maps of all slices of the three axes
(``Discriminator.logits``), and the hinge and the generator term are taken on that map.

Deliberate deviations from the public code (docs/recipe.md lists them with the same reasons):
  - the discriminator's mode is set on every call from the ``training`` flag: the public code
    leaves the loss module in eval mode after the first validation, so its discriminator then
    trains with frozen BatchNorm statistics (a defect);
  - the adaptive weight uses the last TRAINABLE decoder parameter: under LoRA the public code
    asks for the gradient of the frozen ``conv_out`` and fails (a defect);
  - the BiomedCLIP term is on in 2D stage 1: the paper trains with it, the public configs
    leave ``use_biomedclip_loss`` False (paper and code disagree; the paper is the recipe);
  - 2D stage 2 feeds the projection the posterior mean, not a sample: the latent datasets
    hold the posterior mean, so the head trains on what it refines at inference (the public
    code samples at inference too, which makes its latents non-deterministic).

Stage 2 (2D): ||E(x) - E(z_bar)||^2 per sample, averaged, where z_bar is the projected
latent, scaled by 1/4.6 and averaged over channels before the embedder (public code).
"""

from __future__ import annotations

import logging

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from medlatent.models.autoencoder import AutoencoderKL, DiagonalGaussian
from medlatent.models.embedder import Embedder
from medlatent.models.perceptual import LPIPS
from medlatent.models.projection import CLASSIFICATION_SCALE
from medlatent.train.discriminator import Discriminator

log = logging.getLogger(__name__)

#: Weight of the BiomedCLIP consistency term in the public MedVAE code.
EMBED_WEIGHT = 100.0
ADAPTIVE_EPS = 1e-4
ADAPTIVE_MAX = 1e4


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """LDM hinge: 0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))."""
    return 0.5 * (torch.relu(1.0 - logits_real).mean() + torch.relu(1.0 + logits_fake).mean())


def embedding_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared L2 distance summed over embedding dims, averaged over the batch."""
    return (a - b).pow(2).sum(dim=1).mean()


def last_layer_parameter(autoencoder: AutoencoderKL) -> nn.Parameter | None:
    """The decoder's last trainable weight for the adaptive GAN weight.

    ``decoder.conv_out.weight`` when it trains (LDM); under LoRA, where conv_out is frozen,
    the LoRA up-projection of the last res block's conv2; None when neither trains.
    """
    decoder = autoencoder.decoder
    for module in (decoder.conv_out, decoder.up[0].block[-1].conv2):
        if isinstance(module, LoraLayer):
            weights = [module.lora_B[name].weight for name in module.active_adapters]
            parameter = weights[-1] if weights else module.get_base_layer().weight
        else:
            parameter = module.weight
        if parameter.requires_grad:
            return parameter
    return None


def adaptive_weight(
    nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor | None, disc_weight: float
) -> tuple[torch.Tensor, bool]:
    """disc_weight x clamp(||d nll/dW|| / (||d g_loss/dW|| + 1e-4), 0, 1e4); (weight, adaptive?).

    Without a usable trainable last layer the weight is ``disc_weight`` alone.
    """
    if last_layer is not None and nll.requires_grad and g_loss.requires_grad:
        nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True, allow_unused=True)[0]
        g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True, allow_unused=True)[0]
        if nll_grad is not None and g_grad is not None:
            ratio = torch.norm(nll_grad) / (torch.norm(g_grad) + ADAPTIVE_EPS)
            return ratio.clamp(0.0, ADAPTIVE_MAX).detach() * disc_weight, True
    return torch.tensor(float(disc_weight), device=nll.device), False


class Stage1Loss(nn.Module):
    """Generator and discriminator losses of stage 1 (and of 3D stage 2); holds the discriminator."""

    def __init__(
        self,
        spatial_dims: int,
        perceptual: LPIPS | None,
        embedder: Embedder | None = None,
        *,
        kl_weight: float = 1e-6,
        perceptual_weight: float = 1.0,
        disc_weight: float = 0.5,
        disc_start: int = 0,
        embed_weight: float = EMBED_WEIGHT,
        disc_channels: int = 64,
        disc_layers: int = 3,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if spatial_dims == 3 and embedder is not None:
            raise ValueError("the embedding-consistency term is 2D only (the recipe has none in 3D)")
        if perceptual is None and perceptual_weight:
            raise ValueError("perceptual_weight > 0 needs a perceptual network")
        self.spatial_dims = spatial_dims
        self.perceptual = perceptual
        self.embedder = embedder
        self.kl_weight = kl_weight
        self.perceptual_weight = perceptual_weight
        self.disc_weight = disc_weight
        self.disc_start = disc_start
        self.embed_weight = embed_weight
        self._warned_fixed_weight = False
        self.discriminator = Discriminator(disc_channels, disc_layers, in_channels)

    def adversarial_active(self, step: int) -> bool:
        """Whether the GAN terms are on at ``step``: from ``disc_start`` on, unless disc_weight is 0."""
        return bool(self.disc_weight) and step >= self.disc_start

    def set_discriminator_mode(self, training: bool) -> None:
        """Put the discriminator (its BatchNorm) in train or eval mode explicitly."""
        self.discriminator.train(training)

    def generator_loss(
        self,
        x: torch.Tensor,
        recon: torch.Tensor,
        posterior: DiagonalGaussian,
        step: int,
        last_layer: torch.Tensor | None,
        training: bool = True,
    ) -> tuple[torch.Tensor, dict]:
        """Autoencoder objective and its named terms (detached) for logging.

        ``last_layer``: see ``last_layer_parameter``. With ``training=False`` (validation) the
        adversarial term is reported but weighted 0, as in LDM (no graph for the adaptive weight).
        """
        self.set_discriminator_mode(training)
        batch = x.shape[0]
        rec = (x - recon).abs()
        perceptual = torch.zeros(batch, device=x.device)
        if self.perceptual_weight:
            perceptual = self.perceptual(x, recon)
        per_pixel = rec + self.perceptual_weight * perceptual.view(batch, *([1] * (x.ndim - 1)))
        nll = per_pixel.sum() / batch
        kl = posterior.kl().sum() / batch
        total = nll + self.kl_weight * kl
        terms = {"nll": nll, "rec_l1": rec.mean(), "perceptual": perceptual.mean(), "kl": kl}
        if self.embedder is not None and self.embed_weight:
            with torch.no_grad():
                target = self.embedder(x)
            embed = embedding_distance(target, self.embedder(recon))
            total = total + self.embed_weight * embed
            terms["embed"] = embed
        zero = torch.zeros((), device=x.device)
        g_loss, d_weight, adaptive = zero, zero, False
        if self.adversarial_active(step):
            g_loss = -self.discriminator.logits(recon).mean()
            if training and torch.is_grad_enabled():
                d_weight, adaptive = adaptive_weight(nll, g_loss, last_layer, self.disc_weight)
                if not adaptive and not self._warned_fixed_weight:
                    log.warning(
                        "adaptive GAN weight unavailable (no trainable last decoder layer in the "
                        "graph): using disc_weight=%s alone",
                        self.disc_weight,
                    )
                    self._warned_fixed_weight = True
            total = total + d_weight * g_loss
        terms.update(g_adv=g_loss, d_weight=d_weight, adaptive=torch.tensor(float(adaptive)), total=total)
        return total, {name: value.detach() for name, value in terms.items()}

    def discriminator_loss(
        self, x: torch.Tensor, recon: torch.Tensor, step: int, training: bool = True
    ) -> tuple[torch.Tensor, dict]:
        """Hinge loss of the discriminator on real ``x`` vs detached ``recon`` (zero before disc_start)."""
        self.set_discriminator_mode(training)
        if not self.adversarial_active(step):
            zero = torch.zeros((), device=x.device)
            return zero, {"d_loss": zero}
        real = self.discriminator.logits(x.detach())
        fake = self.discriminator.logits(recon.detach())
        d_loss = hinge_d_loss(real, fake)
        terms = {"d_loss": d_loss, "logits_real": real.mean(), "logits_fake": fake.mean()}
        return d_loss, {name: value.detach() for name, value in terms.items()}


def stage2_loss(embedder: Embedder, x: torch.Tensor, z_bar: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """||E(x) - E(z_bar)||^2 per sample, averaged: trains the projection head (2D)."""
    with torch.no_grad():
        target = embedder(x)
    latent = (z_bar / CLASSIFICATION_SCALE).mean(dim=1, keepdim=True)
    loss = embedding_distance(target, embedder.embed_unit(latent))
    return loss, {"embed": loss.detach(), "total": loss.detach()}
