"""Windowed 3D encoding: exact where one window covers the volume, exact stitching geometry,
and honest about the rest (global attention and GroupNorm make windowed latents differ)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from latent_fixtures import CC0, extract_per_split, extract_spec, index_spec, tiny_model, write_source

from medlatent.core.errors import ConfigError
from medlatent.latents.index import write_dataset_files
from medlatent.latents.window import check_window, encode_volume
from medlatent.models.registry import build_medvae


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    spec = {
        "id": "t3",
        "dims": 3,
        "f": 64,
        "latent_channels": 1,
        "ch": 16,
        "ch_mult": [1, 2, 2],
        "num_res_blocks": 1,
        "norm_groups": 8,
    }
    return build_medvae(spec).eval()


@pytest.fixture(scope="module")
def volume() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    noise = torch.rand(1, 1, 32, 32, 32, generator=generator) * 2 - 1
    return (F.avg_pool3d(noise, 5, 1, 2) * 3).clamp(-1, 1)[0, 0]


class PoolEncoder(torch.nn.Module):
    """A purely local stand-in with MedVAE's latent interface: each latent voxel sees only its own block."""

    downsample_factor = 4

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.cat([F.avg_pool3d(x, 4), F.max_pool3d(x, 4)], dim=1)


def test_a_window_covering_the_volume_is_exactly_the_whole_volume_latent(model, volume):
    latent, info = encode_volume(model, volume, [32, 32, 32], overlap=0.5)
    with torch.inference_mode():
        whole = model.encode_latent(volume[None, None])[0]
    assert info["windows"] == 1
    assert torch.equal(latent, whole)


def test_uneven_volume_is_padded_with_background_like_encode_latent_padded(model, volume):
    part = volume[:30, :29, :32]
    latent, info = encode_volume(model, part, [160, 160, 160], overlap=0.25)
    with torch.inference_mode():
        whole, padding = model.encode_latent_padded(part[None, None])
    assert info["padded_shape"] == list(padding.padded_shape) == [32, 32, 32]
    assert torch.equal(latent, whole[0])


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_stitching_places_every_window_on_the_latent_grid(volume, blend):
    encoder = PoolEncoder()
    latent, info = encode_volume(encoder, volume, [16, 16, 16], overlap=0.5, blend=blend, sw_batch_size=4)
    whole = encoder.encode_latent(volume[None, None])[0]
    assert info["windows"] == 27 and latent.shape == whole.shape == (2, 8, 8, 8)
    torch.testing.assert_close(latent, whole.detach(), rtol=1e-5, atol=1e-6)


def test_smaller_windows_differ_from_the_whole_volume_and_approach_it_as_they_grow(model, volume):
    with torch.inference_mode():
        whole = model.encode_latent(volume[None, None])[0]

    def relative_error(window: int, overlap: float) -> float:
        latent, _ = encode_volume(model, volume, [window] * 3, overlap=overlap, sw_batch_size=4)
        assert latent.shape == whole.shape and torch.isfinite(latent).all()
        return float((latent - whole).pow(2).mean().sqrt() / whole.std())

    small, large = relative_error(16, 0.5), relative_error(24, 2 / 3)  # both with an 8-voxel stride
    assert 0 < large < small


def test_windows_off_the_latent_grid_are_refused_with_the_config_keys():
    with pytest.raises(ConfigError, match="latents.window"):
        check_window([20, 20, 20], 0.25, 8)
    with pytest.raises(ConfigError, match="stride \\[12, 12, 12\\]"):
        check_window([16, 16, 16], 0.25, 8)
    check_window([160, 160, 160], 0.25, 8)


def test_3d_shards_are_extracted_through_the_windows(tmp_path):
    weights = tiny_model(tmp_path / "m" / "stage2.pt", dims=3, latent_channels=1, model_id="tiny3d")
    folder, manifest = write_source(tmp_path, "vol", {"train-000": 2, "test-000": 1}, (24, 24, 20))
    parts, _ = extract_per_split(
        extract_spec("tiny3d", "vol", dims=3),
        folder,
        ["train-000", "test-000"],
        manifest,
        weights,
        tmp_path / "ds",
        tmp_path / "parts",
    )
    index = write_dataset_files(
        index_spec("tiny3d", "vol", CC0, dims=3), parts, weights.parent / "card.json", tmp_path / "ds"
    )
    from medlatent import load_latents

    latent, _, meta = next(iter(load_latents(tmp_path / "ds", split="test")))
    assert tuple(latent.shape) == (1, 12, 12, 10) and index["latent"]["shape"] == [1, 12, 12, 10]
    assert meta["encoding"]["windows"] == 8 and meta["encoding"]["window"] == [16, 16, 16]
    assert meta["affine"][0][0] == 2.0 and meta["encoding"]["projection"] is False
