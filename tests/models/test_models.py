"""Model layer: LDM layout and numerics, registry, checkpoint loading, inflation, LoRA,
projection head / MedVAE file format, embedders and the perceptual network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from medlatent.core.errors import ConfigError, InputError, MedLatentError
from medlatent.models import autoencoder
from medlatent.models.autoencoder import AutoencoderKL, chunked_attention, pad_to_multiple
from medlatent.models.embedder import load_embedder
from medlatent.models.inflate import inflate_model, inflate_state_dict
from medlatent.models.ldm_layout import load_ldm_weights, load_strict
from medlatent.models.lora import apply_lora, lora_layers, merged_state_dict
from medlatent.models.perceptual import load_perceptual, slice_batches, unit_features
from medlatent.models.projection import CLASSIFICATION_SCALE, MedVAE, ProjectionHead
from medlatent.models.registry import (
    PUBLISHED,
    build_medvae,
    compression_factor,
    create_autoencoder,
    load_model,
    published_spec,
    save_model,
)

LAYOUT = json.loads((Path(__file__).parents[1] / "data" / "ldm_autoencoderkl_layout.json").read_text())
#: Which architecture each reference layout is (RGB natural-image VAEs and MedVAE gray models).
LAYOUT_MODELS = {
    "ldm_kl_f4_rgb_C3": {**published_spec("f16_c3"), "in_channels": 3},
    "ldm_kl_f8_rgb_C4": {**published_spec("f64_c4"), "in_channels": 3},
    "medvae_f16_C1_gray": published_spec("f16_c1"),
    "medvae_f64_C1_gray": published_spec("f64_c1"),
}
TINY = {
    "id": "tiny",
    "dims": 2,
    "f": 4,
    "latent_channels": 2,
    "ch": 32,
    "ch_mult": [1, 2],
    "num_res_blocks": 1,
    "norm_groups": 8,
}


def tiny(seed: int = 0, **overrides) -> AutoencoderKL:
    torch.manual_seed(seed)
    return create_autoencoder({**TINY, **overrides})


def meta_model(spec: dict) -> AutoencoderKL:
    """Full-size architecture without allocating or initialising its weights."""
    with torch.device("meta"):
        return create_autoencoder(spec)


def shapes(state_dict: dict) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in state_dict.items()}


def layout_state_dict(name: str, device: str = "cpu") -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        k: (torch.randn(s, generator=generator) if device == "cpu" else torch.empty(s, device=device))
        for k, s in LAYOUT[name].items()
    }


# --- LDM layout -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LAYOUT_MODELS))
def test_state_dict_is_exactly_the_ldm_layout_in_2d_and_3d(name):
    spec = LAYOUT_MODELS[name]
    expected = {k: tuple(s) for k, s in LAYOUT[name].items()}
    assert shapes(meta_model(spec).state_dict()) == expected
    expected_3d = {k: (*s, s[-1]) if len(s) == 4 else s for k, s in expected.items()}
    spec_3d = {**spec, "dims": 3, "f": compression_factor(3, spec["ch_mult"])}
    assert shapes(meta_model(spec_3d).state_dict()) == expected_3d


def test_kl_f8_count_matches_the_published_size():
    assert len(LAYOUT["ldm_kl_f8_rgb_C4"]) == 248
    model = meta_model(LAYOUT_MODELS["ldm_kl_f8_rgb_C4"])
    assert sum(p.numel() for p in model.parameters()) == 83_653_863


def test_sd_vae_checkpoint_loads_strictly_into_the_gray_f64_model(tmp_path):
    rgb = layout_state_dict("ldm_kl_f8_rgb_C4")
    ckpt = tmp_path / "sd_vae_kl_f8.ckpt"
    extra = {"loss.discriminator.main.0.weight": torch.zeros(64, 3, 4, 4), "loss.logvar": torch.zeros(())}
    torch.save({"state_dict": {**rgb, **extra}, "global_step": 840000}, ckpt)
    expected = {
        "decoder.mid.attn_1.q.weight": rgb["decoder.mid.attn_1.q.weight"],
        "encoder.conv_in.weight": rgb["encoder.conv_in.weight"].sum(1, keepdim=True),
        "decoder.conv_out.weight": rgb["decoder.conv_out.weight"].mean(0, keepdim=True),
        "decoder.conv_out.bias": rgb["decoder.conv_out.bias"].mean(0, keepdim=True),
    }
    del rgb  # keep peak memory to one copy of the weights plus the model
    model = meta_model(published_spec("f64_c4")).to_empty(device="cpu")
    load_ldm_weights(model, ckpt)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in expected.items())


@pytest.mark.parametrize("name,target", [("medvae_f16_C1_gray", "f64_c1_3d"), ("medvae_f64_C1_gray", "f512_c1_3d")])
def test_2d_layout_strict_loads_into_the_3d_model_by_inflation(name, target):
    model3d = meta_model(published_spec(target))
    load_strict(model3d, inflate_state_dict(layout_state_dict(name, device="meta")), name)


def test_strict_load_names_missing_and_unexpected_keys_and_the_file(tmp_path):
    model = tiny()
    state = model.state_dict()
    state.pop("decoder.conv_out.bias")
    state["decoder.up.0.block.9.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(InputError) as error:
        load_ldm_weights(tiny(), path)
    message = str(error.value)
    assert str(path) in message and "decoder.conv_out.bias" in message and "block.9" in message


def test_safetensors_and_full_ldm_checkpoints_load(tmp_path):
    from safetensors.torch import save_file

    source = tiny(seed=1)
    save_file(source.state_dict(), tmp_path / "vae.safetensors")
    torch.save(
        {"state_dict": {f"first_stage_model.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "ldm.ckpt"
    )
    for name in ("vae.safetensors", "ldm.ckpt"):
        target = load_ldm_weights(tiny(seed=2), tmp_path / name)
        assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values()))


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_ldm_weights(tiny(), tmp_path / "absent.ckpt")


def test_rgb_weights_adapted_to_gray_keep_the_function_on_gray_images(tmp_path):
    rgb = tiny(seed=3, in_channels=3)
    torch.save({"state_dict": rgb.state_dict()}, tmp_path / "rgb.ckpt")
    gray = load_ldm_weights(tiny(seed=4), tmp_path / "rgb.ckpt").eval()
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(gray.encode(x).mean, rgb.eval().encode(x.expand(-1, 3, -1, -1)).mean, atol=1e-5)
        z = torch.randn(2, 2, 8, 8)
        assert torch.allclose(gray.decode(z), rgb.decode(z).mean(1, keepdim=True), atol=1e-5)


# --- numerics and API -------------------------------------------------------------------------


def test_attention_matches_the_ldm_bmm_softmax_formula():
    attn = tiny().encoder.mid.attn_1
    x = torch.randn(2, 64, 4, 6)
    h = attn.norm(x)
    q, k, v = attn.q(h).flatten(2), attn.k(h).flatten(2), attn.v(h).flatten(2)
    w = torch.softmax(torch.bmm(q.permute(0, 2, 1), k) * 64**-0.5, dim=2)
    reference = x + attn.proj_out(torch.bmm(v, w.permute(0, 2, 1)).reshape(x.shape))
    assert torch.allclose(attn(x), reference, atol=1e-5)


def test_chunked_attention_equals_whole_attention_and_the_softmax_formula():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 1, 50, 8) for _ in range(3))
    plain = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1) @ v
    whole = F.scaled_dot_product_attention(q, k, v)
    row_bytes = 2 * 50 * 4  # batch x keys x float32: one query row of scores
    for rows in (1, 7, 49):
        chunked = chunked_attention(q, k, v, max_score_bytes=rows * row_bytes)
        assert torch.allclose(chunked, whole, atol=1e-5) and torch.allclose(chunked, plain, atol=1e-5)
    assert torch.equal(chunked_attention(q, k, v, max_score_bytes=50 * row_bytes), whole)  # fits: one fused call


def test_attention_block_is_unchanged_when_its_queries_are_chunked(monkeypatch):
    attn = tiny().encoder.mid.attn_1
    x = torch.randn(2, 64, 4, 6)
    whole = attn(x)
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(autoencoder.F, "scaled_dot_product_attention", lambda *a: calls.append(a) or sdpa(*a))
    monkeypatch.setattr(autoencoder, "ATTENTION_SCORE_BYTES", 5 * 2 * 24 * 4)  # five query rows of 24 keys
    assert torch.allclose(attn(x), whole, atol=1e-5) and len(calls) == 5  # 24 queries in chunks of 5


def test_ldm_block_conventions():
    model = tiny()
    norm = model.encoder.norm_out
    assert norm.eps == 1e-6 and norm.affine and norm.num_groups == 8
    down = model.encoder.down[0].downsample
    x = torch.randn(1, 32, 8, 8)
    assert torch.allclose(down(x), down.conv(F.pad(x, (0, 1, 0, 1))), atol=1e-6)
    assert down.conv.stride == (2, 2) and down.conv.padding == (0, 0)
    assert len(model.decoder.up[0].block) == TINY["num_res_blocks"] + 1
    assert model.encoder.conv_out.out_channels == 2 * TINY["latent_channels"]


def test_forward_shapes_posterior_and_factor():
    model = tiny().eval()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    recon, posterior = model(x, generator=torch.Generator().manual_seed(0))
    assert recon.shape == x.shape and posterior.mean.shape == (2, 2, 16, 16)
    assert model.downsample_factor == 2 and posterior.kl().shape == (2,)
    again = posterior.sample(torch.Generator().manual_seed(0))
    assert torch.equal(again, posterior.sample(torch.Generator().manual_seed(0)))
    with torch.no_grad():
        model.quant_conv.bias[2:] = 1e3  # logvar half of the moments
    assert model.encode(x).logvar.max().item() == 20.0
    with pytest.raises(ValueError, match="encode_padded"):
        model.encode(torch.zeros(1, 1, 31, 32))


def test_encode_padded_pads_with_background_and_crops_back():
    x = torch.rand(1, 1, 13, 10)
    padded, padding = pad_to_multiple(x, 4)
    assert padded.shape[2:] == (16, 12) and torch.all(padded[..., 13:, :] == -1.0)
    assert torch.all(padded[..., :, 10:] == -1.0) and torch.equal(padding.crop(padded), x)
    model = tiny()
    posterior, padding = model.encode_padded(torch.rand(1, 1, 13, 10))
    assert posterior.mean.shape[2:] == (7, 5)
    assert padding.crop(model.decode(posterior.mean)).shape[2:] == (13, 10)


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients():
    model = tiny(seed=10)
    x = torch.rand(1, 1, 16, 16) * 2 - 1
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        model.set_gradient_checkpointing(enabled)
        recon, _ = model(x, sample_posterior=False)
        recon.pow(2).mean().backward()
        grads.append((recon.detach(), model.encoder.conv_in.weight.grad.clone()))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)


# --- registry ---------------------------------------------------------------------------------


def test_published_models_validate_and_mismatched_f_names_the_model():
    assert {spec["f"] for spec in PUBLISHED.values()} == {16, 64, 512}
    for name in PUBLISHED:
        meta_model(published_spec(name))
    with pytest.raises(ConfigError, match="my_model.*f=16"):
        create_autoencoder({**published_spec("f64_c1"), "id": "my_model", "f": 16})
    with pytest.raises(ConfigError, match="norm_groups"):
        create_autoencoder({**TINY, "norm_groups": 12})


# --- inflation --------------------------------------------------------------------------------


def test_inflated_model_reproduces_the_2d_model_slice_by_slice():
    model2d = tiny(seed=5, ch_mult=[1, 2, 2], f=16).eval()
    with torch.no_grad():
        for module in model2d.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    model3d = inflate_model(model2d).eval()
    assert model3d.spatial_dims == 3 and model3d.config["ch_mult"] == [1, 2, 2]
    x2d = torch.rand(2, 1, 16, 16) * 2 - 1
    x3d = x2d.unsqueeze(-1).expand(-1, -1, -1, -1, 8).contiguous()
    with torch.no_grad():
        mean2d, mean3d = model2d.encode(x2d).mean, model3d.encode(x3d).mean
        assert mean3d.shape[-1] == 2
        for s in range(mean3d.shape[-1]):
            assert torch.allclose(mean3d[..., s], mean2d, atol=1e-4)
        z3d = mean2d.unsqueeze(-1).expand(-1, -1, -1, -1, 2).contiguous()
        out2d, out3d = model2d.decode(mean2d), model3d.decode(z3d)
        for s in range(out3d.shape[-1]):
            assert torch.allclose(out3d[..., s], out2d, atol=1e-4)


def test_inflated_kernel_is_centred_on_the_last_axis():
    model3d = inflate_model(tiny())
    w2d = tiny().encoder.conv_in.weight
    w3d = model3d.encoder.conv_in.weight
    assert w3d.shape == (*w2d.shape, 3)
    assert torch.equal(w3d[..., 1], w2d) and not w3d[..., 0].any() and not w3d[..., 2].any()


# --- LoRA -------------------------------------------------------------------------------------


def test_lora_freezes_base_starts_at_base_and_trains_only_adapters():
    base = tiny(seed=6)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        reference = base.eval()(x, sample_posterior=False)[0]
    model = apply_lora(base, rank=4, alpha=4, dropout=0.1)
    layers = lora_layers(model)
    # every res-block conv (2 per block + shortcuts) and the 4 convs of each mid attention
    expected = {
        n
        for n, _ in tiny().named_modules()
        if n.rsplit(".", 1)[-1] in {"conv1", "conv2", "nin_shortcut", "q", "k", "v", "proj_out"}
    }
    assert set(layers) == expected and "decoder.conv_out" not in layers
    layer = layers["encoder.mid.attn_1.q"]
    assert layer.r["default"] == 4 and layer.scaling["default"] == 1.0
    assert not layer.lora_B["default"].weight.any()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    with torch.no_grad():
        assert torch.equal(model.eval()(x, sample_posterior=False)[0], reference)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    loss = (model(x, sample_posterior=False)[0] - x).pow(2).mean()
    loss.backward()
    optimizer.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    assert any(not torch.equal(params[n], v) for n, v in adapters.items() if "lora_B" in n)


def test_merged_lora_state_dict_is_plain_ldm_layout_and_same_function():
    model = apply_lora(tiny(seed=7), rank=4, alpha=4, dropout=0.1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    merged = merged_state_dict(model)
    plain = tiny(seed=8)
    assert set(merged) == set(plain.state_dict())
    plain.load_state_dict(merged, strict=True)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x, False)[0], model.eval()(x, False)[0], atol=1e-5)


def test_lora_wraps_3d_convs():
    model = apply_lora(tiny(dims=3, f=8), rank=4, alpha=4, dropout=0.1)
    assert type(lora_layers(model)["encoder.mid.attn_1.q"]).__name__ == "Conv3d"


# --- projection head and MedVAE file ----------------------------------------------------------


def test_projection_head_is_residual_and_keeps_the_shape():
    head = ProjectionHead(2, 3)
    assert [type(m).__name__ for m in head.body] == ["Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d"]
    assert head.body[0].out_channels == 64 and head.body[2].kernel_size == (3, 3)
    z = torch.randn(2, 3, 8, 8)
    assert torch.allclose(head(z), head.out(z + head.body(z)))
    assert ProjectionHead(3, 1)(torch.randn(1, 1, 4, 4, 4)).shape == (1, 1, 4, 4, 4)
    assert CLASSIFICATION_SCALE == 4.6


def test_medvae_latent_is_projected_mean_and_decode_uses_unprojected_z():
    model = build_medvae(TINY).eval()
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        mean = model.autoencoder.encode(x).mean
        assert torch.equal(model.encode_latent(x), model.projection(mean))
        assert torch.equal(model.encode_latent(x), model.encode_latent(x))
        assert torch.equal(model.decode(mean), model.autoencoder.decode(mean))
    assert build_medvae({**TINY, "dims": 3, "f": 8}).projection is None


def test_saved_model_round_trips_with_lora_merged(tmp_path):
    autoencoder = apply_lora(tiny(seed=9), rank=4, alpha=4, dropout=0.1)
    with torch.no_grad():
        for name, parameter in autoencoder.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    model = MedVAE(autoencoder, ProjectionHead(2, 2), spec=TINY, is_demo=True).eval()
    path = tmp_path / "stage2.pt"
    save_model(path, model, embedder="demo-cnn", steps=3)
    loaded = load_model(path)
    assert loaded.is_demo and loaded.spec == TINY and not loaded.training
    x = torch.rand(1, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded.encode_latent(x), model.encode_latent(x), atol=1e-5)
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="medlatent-model/1"):
        load_model(tmp_path / "other.pt")


# --- embedders --------------------------------------------------------------------------------


def test_demo_embedder_is_frozen_seeded_labelled_and_passes_gradients():
    embedder = load_embedder({"kind": "demo"})
    assert embedder.is_demo and "demo" in embedder.name
    assert not any(p.requires_grad for p in embedder.parameters())
    embedder.train()
    assert not embedder.training
    x = (torch.rand(2, 1, 40, 30) * 2 - 1).requires_grad_()
    out = embedder(x)
    out.sum().backward()
    assert out.shape == (2, 128) and x.grad.abs().sum() > 0
    assert torch.equal(load_embedder({"kind": "demo"})(x.detach()), out.detach())


def test_biomedclip_without_weights_explains_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(MedLatentError, match="embedder.path.*kind: demo"):
        load_embedder(
            {
                "kind": "biomedclip",
                "path": None,
                "hub_id": "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
            }
        )
    with pytest.raises(MedLatentError, match="open_clip_config.json"):
        load_embedder({"kind": "biomedclip", "path": str(tmp_path / "nowhere")})


def test_biomedclip_image_tower_loads_from_an_open_clip_directory(tmp_path):
    """Same files as the hub repo, with a tiny ViT so the test stays small."""
    from open_clip.model import _build_vision_tower

    vision_cfg = {
        "timm_model_name": "vit_tiny_patch16_224",
        "timm_model_pretrained": False,
        "timm_pool": "",
        "timm_proj": "linear",
        "image_size": 224,
    }
    (tmp_path / "open_clip_config.json").write_text(
        json.dumps(
            {
                "model_cfg": {"embed_dim": 16, "vision_cfg": vision_cfg, "text_cfg": {"hf_model_name": "unused"}},
                "preprocess_cfg": {
                    "mean": [0.48145466, 0.4578275, 0.40821073],
                    "std": [0.26862954, 0.26130258, 0.27577711],
                },
            }
        )
    )
    torch.manual_seed(0)
    tower = _build_vision_tower(16, vision_cfg).eval()
    weights = {f"visual.{k}": v for k, v in tower.state_dict().items()}
    weights["text.transformer.embeddings.weight"] = torch.zeros(2, 2)
    torch.save(weights, tmp_path / "open_clip_pytorch_model.bin")
    embedder = load_embedder({"kind": "biomedclip", "path": str(tmp_path)})
    assert not embedder.is_demo and embedder.input_size == 224
    x = torch.rand(1, 1, 224, 224) * 2 - 1
    with torch.no_grad():
        normalised = ((x + 1) / 2).expand(-1, 3, -1, -1)
        expected = tower((normalised - embedder.mean) / embedder.std)
        assert torch.allclose(embedder(x), expected, atol=1e-5)


# --- perceptual network -----------------------------------------------------------------------


def test_demo_lpips_is_a_frozen_distance_in_2d_and_over_all_3d_slices():
    lpips = load_perceptual({"kind": "demo"})
    assert lpips.is_demo and "demo" in lpips.name and not any(p.requires_grad for p in lpips.parameters())
    lpips.train()
    assert not lpips.training
    x, y = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    assert torch.all(lpips(x, x) == 0) and torch.all(lpips(x, y) > 0) and lpips(x, y).shape == (2,)
    a, b = torch.rand(2, 1, 16, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16, 16) * 2 - 1
    per_axis = []
    for axis in (2, 3, 4):
        slices = [lpips(a.select(axis, i), b.select(axis, i)) for i in range(16)]
        per_axis.append(torch.stack(slices).mean(0))
    assert torch.allclose(lpips(a, b), torch.stack(per_axis).mean(0), atol=1e-5)
    assert [s.shape for s in slice_batches(a)] == [(32, 1, 16, 16)] * 3


def test_lpips_divides_features_by_their_norm_plus_1e_10():
    features = torch.tensor([[3.0, 4.0], [3e-11, 4e-11]]).view(2, 2, 1, 1)  # norms 5 and 5e-11
    expected = torch.tensor([[0.6, 0.8], [3e-11 / 1.5e-10, 4e-11 / 1.5e-10]]).view(2, 2, 1, 1)
    assert torch.allclose(unit_features(features), expected, rtol=1e-6, atol=0)
    assert not torch.allclose(torch.nn.functional.normalize(features, dim=1, eps=1e-10), expected)


def test_lpips_vgg_loads_local_weight_files(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["D"])
    vgg = {f"features.{k}": v for k, v in features.state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(2, 2)
    torch.save(vgg, tmp_path / "vgg16.pth")
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(heads, tmp_path / "lpips_vgg.pth")
    lpips = load_perceptual(
        {
            "kind": "lpips_vgg",
            "vgg_weights": str(tmp_path / "vgg16.pth"),
            "lpips_weights": str(tmp_path / "lpips_vgg.pth"),
        }
    )
    assert not lpips.is_demo
    assert torch.equal(lpips.features[28].weight, features[28].weight)
    assert torch.equal(lpips.lin3.model[1].weight, heads["lin3.model.1.weight"])
    with pytest.raises(MedLatentError, match="vgg_weights.*kind: demo"):
        load_perceptual({"kind": "lpips_vgg", "vgg_weights": None, "lpips_weights": None})
