"""3D stage-2 losses against a slice-by-slice reference of the public MedVAE code's formulas.

The reference is written from the public code's documented behaviour (StanfordMIMI/MedVAE at
27f165f, docs/recipe.md), not from this package: a plain MONAI PatchDiscriminator (ordinary
BatchNorm2d) called on ONE slice at a time along depth, height and width, its logit maps
averaged element-wise before the hinge / generator term; LPIPS on every slice, its mean over
all slices and the batch added to every voxel's L1. Its 2D building blocks are the plain
MONAI network and this package's 2D LPIPS distance (the 2D terms are tested in
test_losses.py and tests/models). Float64, a discriminator with trained-like BatchNorm
statistics and logits beyond +-1, in train and in eval mode.
"""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import PatchDiscriminator
from train_helpers import (
    TINY_2D,
    TINY_3D,
    make_config,
    one_thread,  # noqa: F401 (autouse fixture)
)

from medlatent.config import train_slice
from medlatent.core.errors import ConfigError
from medlatent.models.perceptual import load_perceptual
from medlatent.models.registry import create_autoencoder
from medlatent.train.discriminator import Discriminator
from medlatent.train.losses import Stage1Loss, last_layer_parameter

#: A 3D autoencoder small enough for float64 on one thread (f=8: 2x per axis).
AUTOENCODER_3D = {
    "id": "tiny3d",
    "dims": 3,
    "f": 8,
    "latent_channels": 1,
    "ch": 4,
    "ch_mult": [1, 2],
    "num_res_blocks": 1,
    "norm_groups": 2,
}
#: 2 discriminator layers: 12-pixel slices suffice, so 16^3 patches (LPIPS needs 16 per side).
DISC = {"disc_channels": 8, "disc_layers": 2}
AXES = (2, 3, 4)
TOLERANCE = 1e-5
WARM_UP = 50


def relative_error(ours, reference) -> float:
    """max |ours - reference| / max |reference|, over one tensor or a sequence of gradients."""
    if not isinstance(ours, torch.Tensor):
        ours, reference = (torch.cat([g.flatten() for g in grads]) for grads in (ours, reference))
    return ((ours - reference).abs().max() / reference.abs().max()).item()


def volumes(shape=(2, 1, 16, 16, 16), seed: int = 1) -> torch.Tensor:
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1).detach()


def plain_copy(discriminator: Discriminator) -> PatchDiscriminator:
    """The public code's network: the same weights and statistics in a MONAI PatchDiscriminator with plain BatchNorm."""
    plain = PatchDiscriminator(spatial_dims=2, channels=8, in_channels=1, num_layers_d=2, norm="BATCH").double()
    plain.load_state_dict(discriminator.state_dict())
    assert not any(type(m).__name__ == "SliceBatchNorm2d" for m in plain.modules())
    return plain


def reference_slice_maps(network: torch.nn.Module, volume: torch.Tensor) -> list[torch.Tensor]:
    """The 2D network on one slice at a time: depth, then height, then width."""
    return [network(volume.select(axis, j))[-1] for axis in AXES for j in range(volume.shape[axis])]


def reference_logits(network: torch.nn.Module, volume: torch.Tensor) -> torch.Tensor:
    return torch.stack(reference_slice_maps(network, volume)).mean(dim=0)


def reference_hinge(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.relu(1 - real).mean() + torch.relu(1 + fake).mean())


def reference_perceptual(lpips, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """LPIPS of every slice along the three axes, averaged over all slices and the batch: one scalar."""
    per_slice = [lpips.distance_2d(x.select(a, j), recon.select(a, j)) for a in AXES for j in range(x.shape[a])]
    return torch.stack(per_slice).mean()


def reference_generator(lpips, network, x, recon, posterior, last_layer) -> torch.Tensor:
    """nll + 1e-6 kl + d_weight * g, d_weight = 0.5 x the clamped gradient-norm ratio (none without last_layer)."""
    batch = x.shape[0]
    nll = ((x - recon).abs() + reference_perceptual(lpips, x, recon)).sum() / batch
    kl = 0.5 * (posterior.mean.pow(2) + posterior.logvar.exp() - 1 - posterior.logvar).sum() / batch
    g_loss = -reference_logits(network, recon).mean()
    d_weight = torch.zeros(())
    if last_layer is not None:
        nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
        g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        d_weight = (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, 1e4).detach() * 0.5
    return nll + 1e-6 * kl + d_weight * g_loss, g_loss


@pytest.fixture(scope="module")
def lpips():
    return load_perceptual({"kind": "demo"}).double()


def trained_like_loss(lpips, disc_start: int = 0) -> Stage1Loss:
    """A float64 3D loss whose discriminator has non-trivial running statistics and logits beyond +-1."""
    torch.manual_seed(3)
    loss = Stage1Loss(3, lpips, disc_start=disc_start, **DISC).double()
    with torch.no_grad():
        loss.discriminator.final_conv.conv.weight.mul_(15.0)
        for step in range(WARM_UP):  # running statistics near those of the data, as after training
            loss.discriminator(torch.rand(4, 1, 16, 16, dtype=torch.float64) * 2 - 1 + 0.002 * step)
    norms = [m for m in loss.discriminator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.running_mean.abs().max() > 1e-3 and (m.running_var - 1).abs().max() > 1e-3 for m in norms)
    return loss


def buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.named_buffers()}


@pytest.mark.parametrize("training", [True, False])
def test_3d_logits_and_batchnorm_statistics_equal_slice_by_slice_calls(lpips, training):
    discriminator = trained_like_loss(lpips).discriminator.train(training)
    plain = plain_copy(discriminator).train(training)
    volume = volumes()
    ours = discriminator.logits(volume)
    maps = reference_slice_maps(plain, volume)
    assert relative_error(ours, torch.stack(maps).mean(0)) < TOLERANCE
    assert max(m.abs().max().item() for m in maps) > 1.0 and ours.abs().max() > 1.0
    ours_buffers, reference_buffers = buffers(discriminator), buffers(plain)
    for name, value in reference_buffers.items():
        if name.endswith("num_batches_tracked"):
            assert torch.equal(ours_buffers[name], value)
        else:
            assert relative_error(ours_buffers[name], value) < TOLERANCE, name
    if training:  # one running-statistics update per slice: 3 x 16 on top of the warm-up calls
        assert all(v.item() == WARM_UP + 48 for k, v in ours_buffers.items() if k.endswith("num_batches_tracked"))
    # per-slice BatchNorm: a batch of all slices (the old way) normalises differently in train mode
    stacked = plain_copy(discriminator).train(training)(volume.movedim(2, 1).flatten(0, 1))[-1]
    assert torch.allclose(stacked, torch.stack(maps[:16], 1).flatten(0, 1)) != training


@pytest.mark.parametrize("training", [True, False])
def test_3d_stage2_and_discriminator_losses_and_gradients_equal_the_public_formulas(lpips, training):
    torch.manual_seed(0)
    model = create_autoencoder(AUTOENCODER_3D).double()
    loss = trained_like_loss(lpips)
    plain = plain_copy(loss.discriminator)
    loss.discriminator.train(training)
    plain.train(training)
    x = volumes()
    autoencoder = [p for p in model.parameters() if p.requires_grad]
    last = last_layer_parameter(model)

    recon, posterior = model(x, sample_posterior=False)
    total, logs = loss.generator_loss(x, recon, posterior, step=0, last_layer=last, training=training)
    ours_grads = torch.autograd.grad(total, autoencoder, retain_graph=True)
    expected, g_loss = reference_generator(lpips, plain, x, recon, posterior, last if training else None)
    expected_grads = torch.autograd.grad(expected, autoencoder, retain_graph=True)
    assert relative_error(total, expected) < TOLERANCE
    assert relative_error(logs["g_adv"], g_loss) < TOLERANCE
    assert relative_error(ours_grads, expected_grads) < TOLERANCE
    if training:
        assert 0 < logs["d_weight"].item() < 0.5e4  # adaptive, not clamped
    else:  # validation weighs the adversarial term 0; its gradient through the eval-mode network still matches
        g_ours = torch.autograd.grad(-loss.discriminator.logits(recon).mean(), autoencoder, retain_graph=True)
        g_expected = torch.autograd.grad(g_loss, autoencoder)
        assert relative_error(g_ours, g_expected) < TOLERANCE

    recon = recon.detach()
    d_loss, d_logs = loss.discriminator_loss(x, recon, step=0, training=training)
    real, fake = reference_logits(plain, x), reference_logits(plain, recon)
    d_expected = reference_hinge(real, fake)
    assert relative_error(d_loss, d_expected) < TOLERANCE
    assert (real.abs() > 1).any() and (fake.abs() > 1).any()  # the hinge clips: where it is taken matters
    d_grads = torch.autograd.grad(d_loss, list(loss.discriminator.parameters()))
    d_expected_grads = torch.autograd.grad(d_expected, list(plain.parameters()))
    assert relative_error(d_grads, d_expected_grads) < TOLERANCE
    ours_buffers = buffers(loss.discriminator)
    for name, value in buffers(plain).items():
        assert torch.allclose(ours_buffers[name].double(), value.double(), rtol=TOLERANCE, atol=0), name


def test_non_cubic_patches_weigh_every_slice_equally_and_refuse_the_adversarial_term(lpips):
    x, y = volumes((2, 1, 16, 24, 32), seed=2), volumes((2, 1, 16, 24, 32), seed=3)
    ours = lpips(x, y)
    per_axis = [
        torch.stack([lpips.distance_2d(x.select(a, j), y.select(a, j)) for j in range(x.shape[a])]) for a in AXES
    ]
    assert ours.shape == (2,) and relative_error(ours, torch.cat(per_axis).mean(0)) < TOLERANCE
    assert relative_error(ours, torch.stack([d.mean(0) for d in per_axis]).mean(0)) > 1e-3  # not a mean of axis means

    torch.manual_seed(0)
    model = create_autoencoder(AUTOENCODER_3D).double()
    recon, posterior = model(x)
    loss = Stage1Loss(3, lpips, disc_start=1, **DISC).double()
    total, logs = loss.generator_loss(x, recon, posterior, step=0, last_layer=last_layer_parameter(model))
    assert torch.isfinite(total) and logs["perceptual"].item() > 0
    with pytest.raises(ValueError, match="cubic patches"):
        loss.generator_loss(x, recon, posterior, step=1, last_layer=last_layer_parameter(model))
    without_gan = Stage1Loss(3, lpips, disc_start=0, disc_weight=0.0, **DISC).double()
    assert not without_gan.adversarial_active(10)
    without_gan.generator_loss(x, recon, posterior, step=10, last_layer=last_layer_parameter(model))
    with pytest.raises(ValueError, match="2D only"):
        Stage1Loss(3, lpips, torch.nn.Identity())


def test_the_configuration_refuses_non_cubic_3d_patches_with_the_adversarial_term(tmp_path):
    stage1 = {"steps": 1, "batch_size": 1, "lr": 1e-4}
    stage2 = {"steps": 1, "batch_size": 1, "lr": 1e-4, "patch": [16, 24, 32]}
    models = [{**TINY_2D, "stage1": stage1}, {**TINY_3D, "stage2": stage2}]
    with pytest.raises(ConfigError, match=r"tiny3d\]\.stage2\.patch \[16, 24, 32\] is not a cube.*disc_weight: 0"):
        train_slice(make_config(tmp_path, models), "tiny3d", "stage2")
    models[1]["stage2"] = {**stage2, "disc_weight": 0.0}
    assert train_slice(make_config(tmp_path, models), "tiny3d", "stage2")["train"]["patch"] == [16, 24, 32]
