"""Stage-1 / stage-2 losses: LDM hinge, adaptive GAN weight, disc_start, LoRA fallback,
discriminator mode and the embedding terms (3D: test_losses_3d.py)."""

from __future__ import annotations

import pytest
import torch

from medlatent.models.embedder import load_embedder
from medlatent.models.lora import apply_lora
from medlatent.models.perceptual import load_perceptual
from medlatent.models.projection import ProjectionHead
from medlatent.models.registry import create_autoencoder
from medlatent.train.losses import (
    Stage1Loss,
    adaptive_weight,
    embedding_distance,
    hinge_d_loss,
    last_layer_parameter,
    stage2_loss,
)

TINY = {
    "id": "tiny",
    "dims": 2,
    "f": 4,
    "latent_channels": 1,
    "ch": 32,
    "ch_mult": [1, 2],
    "num_res_blocks": 1,
    "norm_groups": 8,
}


@pytest.fixture(scope="module")
def perceptual():
    return load_perceptual({"kind": "demo"})


def tiny(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return create_autoencoder({**TINY, **overrides})


def images(shape=(2, 1, 32, 32), seed: int = 1) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_hinge_loss_on_known_logits():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, .5, 2] -> 5/6; relu(1 + fake) = [0, 1, 2] -> 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 1))
    assert hinge_d_loss(torch.full((4,), 3.0), torch.full((4,), -3.0)).item() == 0.0


def test_adaptive_weight_matches_a_hand_computation():
    weight = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    a = torch.tensor([[3.0, 0.0], [4.0, 0.0]])
    nll = (weight * a).sum()  # d/dW = a, norm 5
    g_loss = weight.pow(2).sum()  # d/dW = 2W
    expected = 5.0 / (2 * torch.linalg.norm(weight.detach()).item() + 1e-4) * 0.5
    value, adaptive = adaptive_weight(nll, g_loss, weight, disc_weight=0.5)
    assert adaptive and value.item() == pytest.approx(expected, rel=1e-6)
    flat, _ = adaptive_weight((weight * a).sum(), (weight * 0).sum(), weight, disc_weight=0.5)
    assert flat.item() == pytest.approx(1e4 * 0.5)  # clamped at 1e4


def test_stage1_adaptive_weight_on_a_tiny_model_is_the_gradient_norm_ratio(perceptual):
    model = tiny()
    loss = Stage1Loss(2, perceptual, disc_start=0)
    x = images()
    recon, posterior = model(x)
    last = last_layer_parameter(model)
    assert last is model.decoder.conv_out.weight
    total, logs = loss.generator_loss(x, recon, posterior, step=0, last_layer=last)
    nll = ((x - recon).abs() + perceptual(x, recon).view(-1, 1, 1, 1)).sum() / 2
    nll_grad = torch.autograd.grad(nll, last, retain_graph=True)[0]
    g_grad = torch.autograd.grad(-loss.discriminator.logits(recon).mean(), last, retain_graph=True)[0]
    expected = (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, 1e4) * 0.5
    assert logs["nll"].item() == pytest.approx(nll.item(), rel=1e-5)
    assert logs["adaptive"].item() == 1.0
    assert logs["d_weight"].item() == pytest.approx(expected.item(), rel=1e-3)
    total.backward()
    assert model.decoder.conv_out.weight.grad is not None


def test_nll_is_summed_per_pixel_and_kl_averaged_over_the_batch():
    model = tiny()
    loss = Stage1Loss(2, None, perceptual_weight=0.0, kl_weight=1e-6, disc_start=10)
    x = images()
    recon, posterior = model(x)
    total, logs = loss.generator_loss(x, recon, posterior, step=0, last_layer=None)
    nll = (x - recon).abs().sum() / 2
    kl = posterior.kl().sum() / 2
    assert logs["nll"].item() == pytest.approx(nll.item(), rel=1e-6)
    assert logs["kl"].item() == pytest.approx(kl.item(), rel=1e-6)
    assert total.item() == pytest.approx((nll + 1e-6 * kl).item(), rel=1e-6)


def test_adversarial_terms_are_off_before_disc_start(perceptual):
    model = tiny()
    loss = Stage1Loss(2, perceptual, disc_start=5)
    x = images()
    recon, posterior = model(x)
    assert not loss.adversarial_active(4) and loss.adversarial_active(5)
    calls = []
    loss.discriminator.register_forward_hook(lambda *_: calls.append(1))
    total, logs = loss.generator_loss(x, recon, posterior, step=4, last_layer=last_layer_parameter(model))
    assert logs["g_adv"].item() == 0.0 and logs["d_weight"].item() == 0.0 and not calls
    assert total.item() == pytest.approx((logs["nll"] + 1e-6 * logs["kl"]).item(), rel=1e-6)
    d_loss, d_logs = loss.discriminator_loss(x, recon, step=4)
    assert d_loss.item() == 0.0 and not calls
    _, logs = loss.generator_loss(x, recon, posterior, step=5, last_layer=last_layer_parameter(model))
    d_loss, _ = loss.discriminator_loss(x, recon, step=5)
    assert logs["g_adv"].item() != 0.0 and logs["d_weight"].item() > 0 and d_loss.item() > 0


def test_lora_model_gets_a_finite_adaptive_weight(perceptual):
    model = apply_lora(tiny(), rank=4, alpha=4, dropout=0.1)
    last = last_layer_parameter(model)
    assert last is model.decoder.up[0].block[-1].conv2.lora_B["default"].weight
    loss = Stage1Loss(2, perceptual, disc_start=0)
    x = images()
    recon, posterior = model(x)
    total, logs = loss.generator_loss(x, recon, posterior, step=0, last_layer=last)
    assert logs["adaptive"].item() == 1.0
    assert torch.isfinite(logs["d_weight"]) and 0 < logs["d_weight"].item() < 0.5e4
    total.backward()
    assert last.grad is not None and torch.isfinite(last.grad).all()


def test_fully_frozen_decoder_falls_back_to_disc_weight(perceptual, caplog):
    model = tiny()
    for parameter in model.decoder.parameters():
        parameter.requires_grad_(False)
    assert last_layer_parameter(model) is None
    loss = Stage1Loss(2, perceptual, disc_start=0, disc_weight=0.5)
    x = images()
    recon, posterior = model(x)
    with caplog.at_level("WARNING"):
        _, logs = loss.generator_loss(x, recon, posterior, step=0, last_layer=None)
    assert logs["d_weight"].item() == 0.5 and logs["adaptive"].item() == 0.0
    assert "disc_weight=0.5 alone" in caplog.text


def test_discriminator_is_in_train_mode_whenever_its_training_loss_runs(perceptual):
    loss = Stage1Loss(2, perceptual, disc_start=0)
    modes = []
    loss.discriminator.register_forward_hook(lambda module, *_: modes.append(module.training))
    model = tiny()
    x = images()
    recon, posterior = model(x)
    loss.eval()  # e.g. left over from a validation pass
    loss.discriminator_loss(x, recon, step=0)
    loss.eval()
    loss.generator_loss(x, recon, posterior, step=0, last_layer=last_layer_parameter(model))
    assert modes and all(modes)
    modes.clear()
    with torch.no_grad():
        loss.discriminator_loss(x, recon, step=0, training=False)
    assert modes == [False, False]
    assert not loss.perceptual.training  # frozen networks never switch to train mode
    loss.train()
    assert not loss.perceptual.training


def test_discriminator_is_the_ldm_patchgan():
    discriminator = Stage1Loss(2, None, perceptual_weight=0.0).discriminator
    # LDM NLayerDiscriminator(input_nc=1, ndf=64, n_layers=3): 1->64->128->256->512->1, BatchNorm
    assert sum(p.numel() for p in discriminator.parameters()) == 2_763_585
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in discriminator.modules()) == 3
    assert discriminator(torch.zeros(2, 1, 32, 32))[-1].shape == (2, 1, 2, 2)
    with pytest.raises(ValueError, match="at least 24 pixels"):
        discriminator.logits(torch.zeros(1, 1, 16, 16))


def test_embedding_consistency_term(perceptual):
    embedder = load_embedder({"kind": "demo"})
    model = tiny()
    loss = Stage1Loss(2, perceptual, embedder, disc_start=10, embed_weight=100.0)
    x = images()
    recon, posterior = model(x)
    total, logs = loss.generator_loss(x, recon, posterior, step=0, last_layer=None)
    expected = ((embedder(x) - embedder(recon)) ** 2).sum(1).mean()
    assert logs["embed"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert total.item() == pytest.approx((logs["nll"] + 1e-6 * logs["kl"] + 100 * expected).item(), rel=1e-5)


def test_stage2_loss_trains_only_the_projection():
    embedder = load_embedder({"kind": "demo"})
    model = tiny(latent_channels=3)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    head = ProjectionHead(2, 3)
    x = images()
    z_bar = head(model.encode(x).mean)
    loss, logs = stage2_loss(embedder, x, z_bar)
    expected = embedding_distance(embedder(x), embedder.embed_unit((z_bar / 4.6).mean(1, keepdim=True)))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and logs["embed"].item() == loss.item()
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())
    assert all(p.grad is None for p in model.parameters())
