"""`hf://` weight paths resolve from the local hub cache only; a missing file says how to get it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_fixtures import COMMIT, fill_hub_cache

from medlatent.core.errors import InputError, MedLatentError
from medlatent.core.hub import resolve
from medlatent.models.embedder import _hub_cache_files, _local_files
from medlatent.models.perceptual import load_perceptual

MEDVAE_FILE = "hf://stanfordmimi/MedVAE/model_weights/vae_4x_1c_2D.ckpt"


@pytest.fixture()
def hub_home(tmp_path, monkeypatch):
    """HF_HOME pointing at an empty folder (HF_HUB_CACHE unset): the cache is HF_HOME/hub."""
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return tmp_path / "hf-home" / "hub"


def test_a_hub_path_resolves_to_the_cached_file_as_huggingface_hub_finds_it(hub_home):
    from huggingface_hub import hf_hub_download

    snapshot = fill_hub_cache(hub_home, "stanfordmimi/MedVAE", {"model_weights/vae_4x_1c_2D.ckpt": b"weights"})
    path = resolve(MEDVAE_FILE)
    assert path == snapshot / "model_weights" / "vae_4x_1c_2D.ckpt" and path.read_bytes() == b"weights"
    oracle = hf_hub_download(
        "stanfordmimi/MedVAE", "model_weights/vae_4x_1c_2D.ckpt", cache_dir=hub_home, local_files_only=True
    )
    assert Path(oracle) == path
    assert resolve("hf://stanfordmimi/MedVAE") == snapshot and snapshot.name == COMMIT
    assert resolve("weights/local.ckpt") == Path("weights/local.ckpt")  # local paths pass through


def test_a_hub_path_to_a_folder_resolves_to_that_folder_as_snapshot_download_lays_it_out(hub_home):
    from huggingface_hub import snapshot_download

    files = {"vae/config.json": b"{}", "vae/diffusion_pytorch_model.safetensors": b"weights", "unet/x": b""}
    snapshot = fill_hub_cache(hub_home, "stabilityai/stable-diffusion-3-medium-diffusers", files)
    path = resolve("hf://stabilityai/stable-diffusion-3-medium-diffusers/vae")
    oracle = snapshot_download(
        "stabilityai/stable-diffusion-3-medium-diffusers", cache_dir=hub_home, local_files_only=True
    )
    assert path == snapshot / "vae" == Path(oracle) / "vae" and (path / "config.json").read_bytes() == b"{}"
    with pytest.raises(InputError, match="hf download"):
        resolve("hf://stabilityai/stable-diffusion-3-medium-diffusers/text_encoder")


def test_hf_hub_cache_wins_over_hf_home(hub_home, tmp_path, monkeypatch):
    fill_hub_cache(hub_home, "stanfordmimi/MedVAE", {"model_weights/vae_4x_1c_2D.ckpt": b"home"})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    with pytest.raises(InputError, match="elsewhere"):
        resolve(MEDVAE_FILE)
    fill_hub_cache(tmp_path / "elsewhere", "stanfordmimi/MedVAE", {"model_weights/vae_4x_1c_2D.ckpt": b"hub"})
    assert resolve(MEDVAE_FILE).read_bytes() == b"hub"


def test_a_missing_file_gives_the_download_command_of_the_installed_cli(hub_home):
    with pytest.raises(InputError) as error:
        resolve("hf://stanfordmimi/MedVAE/model_weights/vae_8x_1c_3D.ckpt")
    message = str(error.value)
    assert "`hf download stanfordmimi/MedVAE model_weights/vae_8x_1c_3D.ckpt`" in message and str(hub_home) in message
    # the command exists in the pinned huggingface_hub and takes REPO_ID then FILENAMES
    cli = Path(sys.executable).parent / "hf"
    usage = subprocess.run(
        [str(cli), "download", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=120,
    )
    assert usage.returncode == 0 and "download [OPTIONS] REPO_ID [FILENAMES]" in usage.stdout


def test_embedder_and_lpips_inputs_resolve_hub_paths(hub_home, tmp_path):
    repo = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    fill_hub_cache(hub_home, repo, {"open_clip_config.json": b"{}", "open_clip_pytorch_model.bin": b"x"})
    config, weights = _hub_cache_files(f"hf-hub:{repo}")
    assert (config.name, weights.name) == ("open_clip_config.json", "open_clip_pytorch_model.bin")
    assert config.parent.name == COMMIT
    assert _local_files(resolve(f"hf://{repo}")) == (config, weights)  # `embedder.path: hf://OWNER/REPO`
    fill_hub_cache(hub_home, "someone/vgg", {"vgg16-397923af.pth": b"x"})  # found: the LPIPS heads are not
    with pytest.raises(MedLatentError, match="hf download someone/lpips vgg.pth"):
        load_perceptual(
            {
                "kind": "lpips_vgg",
                "vgg_weights": "hf://someone/vgg/vgg16-397923af.pth",
                "lpips_weights": "hf://someone/lpips/vgg.pth",
            }
        )
