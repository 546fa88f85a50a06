"""The autoencoder families against their libraries' own classes (diffusers, MONAI), as oracles.

Each model is a tiny random-weight instance saved in its library's format, imported through
`import_family` and loaded with `load_latent_model`, as the workflow does. The oracle is the
library's own deterministic encoding of the input the family is documented to build (gray
repeated to RGB, background padding to the factor, MAISI's (x + 1) / 2), written here
independently of the family code; a deliberately wrong adapter fails the same checks.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from family_fixtures import autoencoder_kl, maisi_model, save_diffusers, save_maisi, video_vae, vq_model

from medlatent import config as mlconfig
from medlatent.core.errors import ConfigError, InputError
from medlatent.models.families import diffusers as diffusers_family
from medlatent.models.families import import_family, load_latent_model, maisi, weights_geometry
from medlatent.models.families.base import diffusion_ready


def normalized(*shape: int, seed: int = 0) -> torch.Tensor:
    """Items as normalization writes them: values in [-1, 1]."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def padded(images: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, *item) -> (B, 1, *padded): the end of each axis filled with -1 up to a multiple of factor."""
    pad = []
    for size in reversed(images.shape[1:]):
        pad += [0, -size % factor]
    return F.pad(images[:, None], pad, value=-1.0)


def imported(tmp_path, entry: dict, weights):
    """The model as extraction loads it; its geometry as the efficiency job reads it (from the config
    alone, no network built) must be the built model's, which each test holds to the library's latents."""
    entry = {"license": {"name": "test"}, **entry}
    model, record = import_family(weights, entry, False, tmp_path / f"{entry['id']}.pt")
    loaded = load_latent_model(tmp_path / f"{entry['id']}.pt")
    assert weights_geometry(tmp_path / f"{entry['id']}.pt") == (loaded.factors, loaded.latent_channels, False)
    return loaded, record


def diffusers_entry(name: str, folder, **extra) -> dict:
    return {"id": name, "family": "diffusers", "weights": str(folder), "apply": "images", "dims": 2, **extra}


def maisi_entry(name: str, path, **network) -> dict:
    from family_fixtures import MAISI_TINY

    return {"id": name, "family": "maisi", "weights": str(path), "apply": "volumes", "dims": 3,
            "network": {**MAISI_TINY, **network}}  # fmt: skip


def assert_kl_parity(model, vae, images: torch.Tensor) -> None:
    """The family's latent and decode equal diffusers' on gray repeated to RGB, padded with -1."""
    with torch.inference_mode():
        arrays, info = model.encode(images)
        x = padded(images, 4).repeat(1, 3, 1, 1)
        posterior = vae.encode(x).latent_dist
        torch.testing.assert_close(arrays["latent"], posterior.mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(arrays["logvar"], posterior.logvar, rtol=1e-5, atol=1e-6)
        assert info["padded_shape"] == list(x.shape[2:])
        decoded = model.decode(arrays["latent"])
        torch.testing.assert_close(decoded, vae.decode(posterior.mean).sample.mean(dim=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", ["sd", "sd3"])
def test_autoencoder_kl_latent_and_decode_are_diffusers_own(tmp_path, shape):
    vae = autoencoder_kl(shape, seed=1)
    save_diffusers(vae, tmp_path / "vae")
    model, record = imported(tmp_path, diffusers_entry("kl", tmp_path / "vae"), tmp_path / "vae")
    assert model.factors == (4, 4) and model.latent_channels == vae.config.latent_channels
    assert record["file"].endswith("diffusion_pytorch_model.safetensors")
    assert_kl_parity(model, vae, normalized(2, 30, 26))  # odd sizes: padded, never floored
    scaling = model.record()["scaling"]
    assert scaling == {"scaling_factor": vae.config.scaling_factor, "shift_factor": vae.config.shift_factor or 0.0}


@pytest.mark.parametrize(
    "wrong",
    [
        lambda x, channels: x,  # no channel repeat
        lambda x, channels: torch.cat([x, torch.zeros_like(x).repeat(1, channels - 1, 1, 1)], 1),  # gray in red only
        lambda x, channels: ((x + 1) / 2).expand(-1, channels, -1, -1),  # MAISI's intensity map on an SD VAE
    ],
    ids=["no-repeat", "red-only", "unit-range"],
)
def test_a_wrong_diffusers_adapter_fails_the_parity_check(tmp_path, monkeypatch, wrong):
    vae = autoencoder_kl("sd", seed=2)
    save_diffusers(vae, tmp_path / "vae")
    model, _ = imported(tmp_path, diffusers_entry("kl", tmp_path / "vae"), tmp_path / "vae")
    monkeypatch.setattr(diffusers_family, "to_channels", wrong)
    with pytest.raises((AssertionError, RuntimeError)):  # RuntimeError: 1 channel into a 3-channel conv
        assert_kl_parity(model, vae, normalized(2, 16, 16))


def test_vq_codes_latent_and_decode_are_diffusers_own(tmp_path):
    vq = vq_model(seed=3)
    save_diffusers(vq, tmp_path / "vq")
    model, _ = imported(tmp_path, diffusers_entry("vq", tmp_path / "vq"), tmp_path / "vq")
    images = normalized(2, 13, 16)
    with torch.inference_mode():
        arrays, _ = model.encode(images)
        h = vq.encode(padded(images, 2).repeat(1, 3, 1, 1)).latents
        quantized, _, (_, _, codes) = vq.quantize(h)
        torch.testing.assert_close(arrays["latent"], quantized)
        assert arrays["indices"].dtype == torch.int16 and arrays["indices"].shape == (2, 7, 8)
        assert torch.equal(arrays["indices"].long().flatten(), codes.flatten())
        assert len(codes.unique()) > 1
        decoded = model.decode(arrays["indices"].float())  # as decode reads indices.npy back
        torch.testing.assert_close(decoded, vq.decode(h).sample.mean(dim=1), rtol=1e-5, atol=1e-5)
    assert model.record()["codebook"]["entries"] == 32 and model.decoded_from == "indices"


def assert_maisi_parity(model, autoencoder, volumes: torch.Tensor) -> None:
    """The family's latent and decode equal MONAI's on (x + 1) / 2 of the volume padded with -1."""
    with torch.inference_mode():
        arrays, info = model.encode(volumes)
        x = (padded(volumes, 4) + 1) / 2
        mean, sigma = autoencoder.encode(x)
        torch.testing.assert_close(arrays["latent"], mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(arrays["logvar"], 2 * torch.log(sigma), rtol=1e-5, atol=1e-5)
        assert info["padded_shape"] == list(x.shape[2:])
        decoded = model.decode(arrays["latent"])
        torch.testing.assert_close(decoded, 2 * autoencoder.decode(mean)[:, 0] - 1, rtol=1e-5, atol=1e-5)


def test_maisi_latent_and_decode_are_monais_own_and_num_splits_is_exact(tmp_path):
    autoencoder = maisi_model(seed=4)
    weights = save_maisi(autoencoder, tmp_path / "autoencoder.pt")
    model, record = imported(tmp_path, maisi_entry("maisi", weights), weights)
    model.placed("cpu")
    volumes = normalized(1, 18, 16, 14)  # 18 and 14: padded to 20 and 16, not floored
    assert_maisi_parity(model, autoencoder, volumes)
    assert record["geometry"] == {"factors": [4, 4, 4], "latent_channels": 4}
    split, _ = imported(tmp_path, maisi_entry("split", weights, num_splits=2, dim_split=1), weights)
    long = normalized(1, 16, 32, 12)  # 32 along the split axis: each half keeps its positions
    with torch.inference_mode():
        torch.testing.assert_close(split.encode(long)[0]["latent"], model.encode(long)[0]["latent"])
        with pytest.raises(ConfigError, match="num_splits"):  # MONAI would silently halve a 16-voxel axis
            split.encode(normalized(1, 16, 16, 16))
    assert split.record()["network"]["num_splits"] == 2


def test_a_wrong_maisi_intensity_map_fails_the_parity_check(tmp_path, monkeypatch):
    autoencoder = maisi_model(seed=5)
    weights = save_maisi(autoencoder, tmp_path / "autoencoder.pt")
    model, _ = imported(tmp_path, maisi_entry("maisi", weights), weights)
    monkeypatch.setattr(maisi.MaisiModel, "encode_posterior", lambda self, x: self.autoencoder.encode(x))
    with pytest.raises(AssertionError):  # [-1, 1] fed as is, where MAISI expects [0, 1]
        assert_maisi_parity(model, autoencoder, normalized(1, 16, 16, 16))


def test_a_maisi_latent_larger_than_the_window_is_decoded_window_by_window(tmp_path):
    from monai.inferers import sliding_window_inference

    from medlatent.latents.decode import decode_item

    autoencoder = maisi_model(seed=10)
    weights = save_maisi(autoencoder, tmp_path / "autoencoder.pt")
    model, _ = imported(tmp_path, maisi_entry("maisi", weights), weights)
    latent = torch.randn(4, 6, 6, 6, generator=torch.Generator().manual_seed(0))  # 4 channels, window 16 / 4 = 4
    index = {"dims": 3, "encoding": {"window": [16, 16, 16], "overlap": 0.5, "blend": "gaussian"}}
    image = decode_item(model, latent, {"item_id": "x", "encoding": {"normalized_shape": [22, 24, 21]}}, index, "t")
    with torch.inference_mode():  # MAISI decodes large latents with MONAI's sliding window too
        oracle = sliding_window_inference(
            latent[None], [4, 4, 4], 1, lambda z: 2 * autoencoder.decode(z) - 1, overlap=0.5, mode="gaussian"
        )[0, 0, :22, :24, :21]
    assert image.shape == (22, 24, 21)
    torch.testing.assert_close(torch.from_numpy(image), oracle, atol=1e-5, rtol=1e-5)


def test_maisi_released_config_is_the_default_and_legacy_keys_load(tmp_path):
    assert maisi.network({})["num_channels"] == [64, 128, 256] and maisi.network({})["latent_channels"] == 4
    autoencoder = maisi_model(seed=6)
    # as saved before MONAI wrapped the convolutions once more: one `.conv` level less at the end
    legacy = {re.sub(r"\.conv\.(weight|bias)$", r".\1", key) if ".conv.conv." in key else key: value
              for key, value in autoencoder.state_dict().items()}  # fmt: skip
    assert legacy.keys() != autoencoder.state_dict().keys()
    torch.save(legacy, tmp_path / "legacy.pt")
    model, _ = imported(tmp_path, maisi_entry("legacy", tmp_path / "legacy.pt"), tmp_path / "legacy.pt")
    assert_maisi_parity(model, autoencoder, normalized(1, 8, 8, 8))
    torch.save({"encoder.wrong": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(InputError, match="network"):
        imported(tmp_path, maisi_entry("wrong", tmp_path / "wrong.pt"), tmp_path / "wrong.pt")


def test_slices_of_a_volume_are_the_2d_models_latents_stacked_on_the_last_axis(tmp_path):
    vae = autoencoder_kl("sd", seed=7)
    save_diffusers(vae, tmp_path / "vae")
    entry = diffusers_entry("kl_slices", tmp_path / "vae", apply="slices", dims=3)
    model, _ = imported(tmp_path, entry, tmp_path / "vae")
    model.slices_per_forward = 2  # 5 slices: chunks of 2, 2, 1
    volumes = normalized(1, 14, 12, 5)
    with torch.inference_mode():
        arrays, info = model.encode(volumes)
        expected = vae.encode(padded(volumes[0].permute(2, 0, 1), 4).repeat(1, 3, 1, 1)).latent_dist.mean
        torch.testing.assert_close(arrays["latent"][0], expected.permute(1, 2, 3, 0), rtol=1e-5, atol=1e-6)
        assert arrays["latent"].shape == (1, 4, 4, 3, 5) and info["padded_shape"] == [16, 12, 5]
        decoded = model.decode(arrays["latent"])
        torch.testing.assert_close(
            decoded[0], vae.decode(expected).sample.mean(1).permute(1, 2, 0), atol=1e-5, rtol=1e-5
        )
    assert model.factors == (4, 4, 1) and model.dims == 3
    assert model.budget_unit((14, 12, 5)) == (14, 12)  # latents.max_memory_gb counts slices per forward


@pytest.mark.parametrize(
    ("class_name", "depth", "frames"),
    [
        ("AutoencoderKLWan", 13, 13),  # 1 + 4k already
        ("AutoencoderKLWan", 36, 37),  # Wan alone would give back 33 of 36 slices
        ("AutoencoderKLCogVideoX", 13, 17),  # CogVideoX alone would give back 16 frames for 13
        ("AutoencoderKLCogVideoX", 36, 41),
    ],
)
def test_video_vaes_take_depth_as_time_padded_to_their_frame_rule(tmp_path, class_name, depth, frames):
    vae = video_vae(class_name, seed=9)
    save_diffusers(vae, tmp_path / "vae")
    entry = diffusers_entry("video", tmp_path / "vae", apply="volumes", dims=3)
    model, _ = imported(tmp_path, entry, tmp_path / "vae")
    volumes = normalized(1, 8, 6, depth)  # in-plane 8 x 6: padded to 8 x 8
    with torch.inference_mode():
        arrays, info = model.encode(volumes)
        x = F.pad(padded(volumes, 8)[..., :depth], (0, frames - depth), value=-1.0)
        posterior = vae.encode(x.permute(0, 1, 4, 2, 3).repeat(1, 3, 1, 1, 1)).latent_dist
        torch.testing.assert_close(arrays["latent"], posterior.mean.permute(0, 1, 3, 4, 2), rtol=1e-5, atol=1e-6)
        assert info == {"padded_shape": [8, 8, frames], "frames": frames}
        decoded = model.decode(arrays["latent"])
        assert decoded.shape == (1, 8, 8, frames)  # every padded frame comes back: no slice dropped
        oracle = vae.decode(posterior.mean).sample.mean(dim=1).permute(0, 2, 3, 1)
        torch.testing.assert_close(decoded, oracle, rtol=1e-5, atol=1e-5)
    assert model.factors == (8, 8, 4) and model.windowed is False
    # the whole volume is one call: latents.max_memory_gb budgets it, its adapted copies growing with depth
    assert model.budget_unit((8, 6, depth)) == (8, 6, depth)
    assert model.item_bytes((8, 6, depth + 8)) > model.item_bytes((8, 6, depth))
    if class_name == "AutoencoderKLWan":
        assert model.record()["scaling"]["latents_std"] == list(vae.config.latents_std)
    with pytest.raises(InputError, match="apply: volumes"):
        imported(tmp_path, diffusers_entry("video2d", tmp_path / "vae"), tmp_path / "vae")


def test_another_diffusers_class_is_refused_with_the_supported_ones(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderTiny"}))
    with pytest.raises(InputError, match=r"AutoencoderKL.*VQModel"):
        imported(tmp_path, diffusers_entry("tiny", folder), folder)
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLWan", "patch_size": 2}))
    with pytest.raises(InputError, match="Wan 2.2"):
        imported(tmp_path, diffusers_entry("wan22", folder), folder)


def test_user_values_must_agree_with_the_weights(tmp_path):
    save_diffusers(autoencoder_kl("sd", seed=8), tmp_path / "vae")
    with pytest.raises(InputError, match="latent_channels"):
        imported(tmp_path, diffusers_entry("kl", tmp_path / "vae", latent_channels=16), tmp_path / "vae")
    with pytest.raises(InputError, match="apply: volumes"):
        imported(tmp_path, diffusers_entry("kl", tmp_path / "vae", apply="volumes", dims=3), tmp_path / "vae")
    model, _ = imported(tmp_path, diffusers_entry("kl", tmp_path / "vae", latent_channels=4, f=16), tmp_path / "vae")
    assert model.latent_channels == 4


def test_family_entries_in_the_config(demo_config):
    config = demo_config
    base = {"id": "sdxl", "family": "diffusers", "weights": "hf://stabilityai/sdxl-vae"}
    checked = mlconfig.validate({**config, "models": [*config["models"], dict(base)]})
    entry = mlconfig.model_entry(checked, "sdxl")
    assert entry["dims"] == 2 and entry["apply"] == "images" and "ch" not in entry and "init" not in entry
    family = {"id": "sdxl", "kind": "family", "model": "sdxl"}  # no f: the jobs read it from the weights
    assert family in mlconfig.recon_methods(checked, 2) and family not in mlconfig.recon_methods(checked, 3)
    task = next(t["id"] for t in config["cad_tasks"] if t["dims"] == 2)
    every_model = {
        **checked,
        "evaluation": {**checked["evaluation"], "cad": {**checked["evaluation"]["cad"], "models": None}},
    }
    assert family in mlconfig.cad_methods(every_model, task)
    interpolations = [m for m in mlconfig.recon_methods(checked, 2) if m["kind"] == "interpolation"]
    assert interpolations == [m for m in mlconfig.recon_methods(config, 2) if m["kind"] == "interpolation"]
    assert mlconfig.efficiency_slice(checked)["f_2d"] == sorted(
        {m["f"] for m in config["models"] if m["dims"] == 2 and m["family"] == "medvae"}
    )
    assert mlconfig.efficiency_slice(checked)["families"] == ["demo_sd_kl", "demo_maisi", "sdxl"]  # at their geometry
    without = mlconfig.validate({**checked, "evaluation": {**checked["evaluation"], "recon": {
        **checked["evaluation"]["recon"], "methods": ["interpolation", "medvae"]}}})  # fmt: skip
    assert family not in mlconfig.recon_methods(without, 2)
    for bad, message in [
        ({k: v for k, v in base.items() if k != "weights"}, "weights"),
        ({**base, "family": "maisi", "apply": "slices"}, "apply must be volumes"),
        ({**base, "apply": "slices", "dims": 2}, "contradicts"),
        ({"id": "m", "dims": 2, "f": 16, "latent_channels": 1}, "ch_mult"),
    ]:
        with pytest.raises(ConfigError, match=message):
            mlconfig.validate({**config, "models": [*config["models"], bad]})


def test_a_family_entry_that_states_an_isotropic_f_adds_the_interpolation_baselines_at_it(demo_config):
    entries = [
        {"id": "kl16", "family": "diffusers", "weights": "hf://x/kl16", "f": 256},  # 16 x 16: a square
        {"id": "kl_slices", "family": "diffusers", "weights": "hf://x/kl", "apply": "slices", "f": 16},  # 4 x 4 x 1
        {"id": "wan", "family": "diffusers", "weights": "hf://x/wan", "apply": "volumes", "f": 256},  # 8 x 8 x 4
        {"id": "maisi8", "family": "maisi", "weights": "/w/maisi.pt", "f": 8},  # 2 x 2 x 2: a cube
        {"id": "maisi", "family": "maisi", "weights": "/w/maisi.pt"},  # f left to the weights
    ]
    config = mlconfig.validate({**demo_config, "models": [*demo_config["models"], *entries]})

    def interpolation_fs(methods: list[dict]) -> list[int]:
        return sorted({m["f"] for m in methods if m["kind"] == "interpolation"})

    before = {dims: interpolation_fs(mlconfig.recon_methods(demo_config, dims)) for dims in (2, 3)}
    assert before == {2: [16, 64], 3: [64, 512]}
    assert interpolation_fs(mlconfig.recon_methods(config, 2)) == [16, 64, 256]
    assert interpolation_fs(mlconfig.recon_methods(config, 3)) == [8, 64, 512]  # 16 and 256 are not cubes
    assert {"id": "bicubic_f256", "kind": "interpolation", "mode": "bicubic", "f": 256} in mlconfig.recon_methods(
        config, 2
    )
    every_model = {
        **config,
        "evaluation": {**config["evaluation"], "cad": {**config["evaluation"]["cad"], "models": None}},
    }
    for task in config["cad_tasks"]:
        assert interpolation_fs(mlconfig.cad_methods(every_model, task["id"])) == (
            [16, 64, 256] if task["dims"] == 2 else [8, 64, 512]
        )


def test_diffusion_ready_latents_follow_each_familys_scaling():
    z = torch.randn(4, 3, 3)
    sd3 = diffusion_ready(z, {"scaling_factor": 1.5305, "shift_factor": 0.0609})
    torch.testing.assert_close(sd3, (z - 0.0609) * 1.5305)
    mean, std = [0.1, -0.2, 0.3, 0.0], [1.0, 2.0, 0.5, 4.0]
    wan = diffusion_ready(z, {"latents_mean": mean, "latents_std": std})
    torch.testing.assert_close(wan[1], (z[1] + 0.2) / 2.0)


def test_the_demos_generated_family_weights_are_their_librarys_and_import_as_demo_weights(tmp_path, demo_config):
    """The demo's tiny AutoencoderKL and MAISI: the libraries load the generated files themselves, the
    import through the family protocol encodes as they do, and card and model say demo weights."""
    from diffusers import AutoencoderKL
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi

    from medlatent.demo.autoencoders import write_demo_weights
    from medlatent.train.recipes import import_weights

    def monai_own(entry, path):
        autoencoder = AutoencoderKlMaisi(**maisi.network(entry))
        autoencoder.load_state_dict(torch.load(path, weights_only=True))
        return autoencoder.eval()

    oracles = {
        "diffusers": (lambda entry, path: AutoencoderKL.from_pretrained(path).eval(), assert_kl_parity, (2, 20, 16)),
        "maisi": (monai_own, assert_maisi_parity, (1, 12, 8, 8)),
    }
    seed = mlconfig.project_seed(demo_config)
    for family, (load_own, assert_parity, shape) in oracles.items():
        (model_id,) = mlconfig.demo_weights_models(demo_config, family)  # generated, never trained
        entry = mlconfig.model_entry(demo_config, model_id)
        weights = tmp_path / mlconfig.demo_weights_path(demo_config, family, model_id)
        write_demo_weights(entry, seed, weights)
        out, card = tmp_path / model_id / "stage2.pt", tmp_path / model_id / "card.json"
        import_weights(mlconfig.import_weights_slice(demo_config, model_id), weights, out, card)
        model = load_latent_model(out).placed("cpu")
        assert model.is_demo and json.loads(card.read_text())["demo"] is True
        assert weights_geometry(out).demo_weights  # the efficiency table's rows of it say demo weights
        assert_parity(model, load_own(entry, weights), normalized(*shape))
        again = tmp_path / "again" / weights.name
        write_demo_weights(entry, seed, again)  # a fixed seed: the same weights in every demo run
        assert [p.read_bytes() for p in sorted(again.rglob("*")) or [again]] == [
            p.read_bytes() for p in sorted(weights.rglob("*")) or [weights]
        ]
    real = mlconfig.validate({**demo_config, "project": {**demo_config["project"], "demo": False, "salt": None}})
    assert mlconfig.demo_weights_models(real, "diffusers") == []  # outside the demo nothing is generated
