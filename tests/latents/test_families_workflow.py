"""Other autoencoder families through the real workflow: the README sources, the autoencoders preset.

The preset's SDXL-VAE entries (2D images, and slice-wise on volumes) and MAISI, served from a
temporary hub cache as tiny random-weight instances saved by their libraries (`save_pretrained`,
a MAISI state dict; MAISI at test width through `network:`): `snakemake latents` writes latents
equal to the libraries' own encoding of the normalized items, and `medlatent decode` brings them back.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from byo_sources import readme_sources, run_readme_latents, run_readme_targets, write_readme_sources
from family_fixtures import MAISI_TINY, autoencoder_kl, maisi_model, save_diffusers, save_maisi
from hub_fixtures import fill_hub_cache
from workflow_helpers import REPO, planned_jobs, snakemake

from medlatent import config as mlconfig
from medlatent.core.errors import InputError
from medlatent.evaluate.recon import psnr
from medlatent.io.h5 import ShardReader
from medlatent.latents.decode import decode_dataset
from medlatent.latents.extract import extract_shards
from medlatent.latents.loader import load_latents
from medlatent.models.families.diffusers import DiffusersModel

pytestmark = pytest.mark.workflow
PRESET = REPO / "workflow" / "presets" / "autoencoders.yaml"
FULL_CONFIG = REPO / "config.yaml"
MODELS = {"sdxl_vae": "my_xrays", "sdxl_vae_slices": "my_mri", "maisi_ct": "my_mri"}


def background_padded(images: torch.Tensor, factor: int) -> torch.Tensor:
    pad = []
    for size in reversed(images.shape[1:]):
        pad += [0, -size % factor]
    return F.pad(images[:, None], pad, value=-1.0)


@pytest.fixture(scope="module")
def family_run(tmp_path_factory):
    """`snakemake latents` once with the README sources and three preset models at test width."""
    root = tmp_path_factory.mktemp("families")
    write_readme_sources(root)
    vae, autoencoder = autoencoder_kl("sd", seed=11), maisi_model(seed=12)
    cache = root / "hf-cache"
    fill_hub_cache(cache, "stabilityai/sdxl-vae", save_diffusers(vae, root / "sdxl-vae"))
    fill_hub_cache(
        cache, "nvidia/NV-Generate-CT", {"models/autoencoder_v1.pt": save_maisi(autoencoder, root / "maisi.pt")}
    )
    preset = {m["id"]: m for m in yaml.safe_load(PRESET.read_text())["models"]}
    models = [preset[name] for name in MODELS]
    models[-1] = {**models[-1], "network": MAISI_TINY}  # test width; the preset's default is the released one
    configs = run_readme_latents(root, PRESET, models, cache)
    return {"root": root, "run": root / "run", "configs": configs, "vae": vae, "maisi": autoencoder, "cache": cache}


#: Reconstruction of every README item (the sources put all of them in train), one seed.
RECON = {"evaluation": {"recon": {"split": "train", "seeds_2d": 1, "seeds_3d": 1, "crop_3d": [16, 16, 16]}}}


def normalized_items(run, source: str) -> dict[str, torch.Tensor]:
    return {
        item: torch.from_numpy(array)
        for shard in sorted((run / "data" / "normalized" / source).glob("*.h5"))
        for item, array, _ in ShardReader(shard)
    }


def stored(dataset, **options) -> dict[str, torch.Tensor]:
    return {meta["item_id"]: latent for latent, _, meta in load_latents(dataset, split="train", **options)}


def test_sdxl_vae_latents_are_diffusers_own_and_the_card_says_what_made_them(family_run):
    run, vae = family_run["run"], family_run["vae"]
    dataset = run / "data" / "latents" / "sdxl_vae" / "my_xrays"
    items, latents = normalized_items(run, "my_xrays"), stored(dataset)
    assert latents.keys() == items.keys() and len(items) == 3
    with torch.inference_mode():
        for item, latent in latents.items():
            x = background_padded(items[item][None], 4).repeat(1, 3, 1, 1)
            torch.testing.assert_close(latent, vae.encode(x).latent_dist.mean[0], atol=2e-3, rtol=2e-3)
    index = json.loads((dataset / "index.json").read_text())
    record = index["autoencoder"]
    assert record["family"] == "diffusers" and record["class"] == "diffusers.AutoencoderKL"
    assert record["library"] == {"name": "diffusers", "version": "0.42.1"}
    assert index["weights_license"]["name"] == "MIT" and index["latent"]["stored"] == ["latent"]
    card = (dataset / "README.md").read_text()
    assert "Model weights licence: **MIT**" in card and "gray repeated to the network's 3 input channels" in card
    assert "hf://stabilityai/sdxl-vae" in card
    assert "Demo weights: no (released diffusers.AutoencoderKL weights, imported; sha256 below)" in card
    scaled = stored(dataset, scaled=True)
    item = next(iter(latents))
    torch.testing.assert_close(scaled[item], latents[item] * vae.config.scaling_factor)


def test_slice_wise_latents_stack_the_2d_latents_of_each_axial_slice(family_run):
    run, vae = family_run["run"], family_run["vae"]
    items = normalized_items(run, "my_mri")
    latents = stored(run / "data" / "latents" / "sdxl_vae_slices" / "my_mri")
    assert latents.keys() == items.keys() and len(items) == 2
    with torch.inference_mode():
        for item, latent in latents.items():
            slices = background_padded(items[item].permute(2, 0, 1), 4).repeat(1, 3, 1, 1)
            expected = vae.encode(slices).latent_dist.mean.permute(1, 2, 3, 0)  # (C, X/4, Y/4, Z)
            assert latent.shape == (4, 4, 4, 16)
            torch.testing.assert_close(latent, expected, atol=2e-3, rtol=2e-3)


def test_maisi_latents_are_monais_own_and_decode_back_onto_the_grid(family_run, tmp_path):
    run, autoencoder = family_run["run"], family_run["maisi"]
    dataset = run / "data" / "latents" / "maisi_ct" / "my_mri"
    items, latents = normalized_items(run, "my_mri"), stored(dataset)
    with torch.inference_mode():
        for item, latent in latents.items():
            mean = autoencoder.encode((items[item][None, None] + 1) / 2)[0][0]
            torch.testing.assert_close(latent, mean, atol=2e-3, rtol=2e-3)
    card = (dataset / "README.md").read_text()
    assert "NVIDIA NSCLv1 (non-commercial)" in card and "(x + 1) / 2" in card
    written = decode_dataset(dataset, tmp_path / "decoded", grid="normalized", workdir=run)
    assert len(written) == len(items)
    for path in written:
        item = path.name.removesuffix(".nii.gz")
        with torch.inference_mode():
            expected = 2 * autoencoder.decode(latents[item][None])[0, 0] - 1
        import nibabel as nib

        np.testing.assert_allclose(np.asarray(nib.load(path).dataobj), expected.numpy(), atol=1e-5)
    pngs = decode_dataset(run / "data" / "latents" / "sdxl_vae" / "my_xrays", tmp_path / "png", workdir=run)
    assert len(pngs) == 3 and all(path.suffix == ".png" for path in pngs)


@pytest.fixture(scope="module")
def family_recon(family_run):
    """The reconstruction table of the family run, made by the real rules from the imported models."""
    root = family_run["root"]
    (root / "recon.yaml").write_text(yaml.safe_dump(RECON))
    run_readme_targets(
        root, [*family_run["configs"], root / "recon.yaml"], family_run["cache"], "results/tables/recon.csv"
    )
    table = pd.read_csv(family_run["run"] / "results" / "tables" / "recon.csv")
    return table.set_index("method"), (family_run["run"] / "results" / "tables" / "recon.md").read_text()


def test_family_models_are_in_the_reconstruction_table_with_their_latent_geometry(family_run, family_recon):
    run, vae, autoencoder = family_run["run"], family_run["vae"], family_run["maisi"]
    table, markdown = family_recon
    assert set(table.index) == set(MODELS) and set(table["kind"]) == {"family"}
    xrays, volumes = normalized_items(run, "my_xrays"), normalized_items(run, "my_mri")
    with torch.inference_mode():  # the libraries' own encode and decode of the same normalized items
        own = {
            "sdxl_vae": [(x, vae.encode(background_padded(x[None], 4).repeat(1, 3, 1, 1)).latent_dist.mean[0])
                         for x in xrays.values()],
            "sdxl_vae_slices": [(v, vae.encode(background_padded(v.permute(2, 0, 1), 4).repeat(1, 3, 1, 1))
                                 .latent_dist.mean.permute(1, 2, 3, 0)) for v in volumes.values()],
            "maisi_ct": [(v, autoencoder.encode((v[None, None] + 1) / 2)[0][0]) for v in volumes.values()],
        }  # fmt: skip
        decoded = [vae.decode(z[None]).sample.mean(1)[0, :32, :32].clamp(-1, 1) for _, z in own["sdxl_vae"]]
    for model, pairs in own.items():
        row = table.loc[model]
        assert row["latent_shape"] == "x".join(map(str, pairs[0][1].shape))
        assert row["compression_ratio"] == pytest.approx(np.mean([x.numel() / z.numel() for x, z in pairs]))
        assert np.isfinite(row[["psnr_mean", "ms_ssim_mean"]].astype(float)).all()
    assert table.loc[["sdxl_vae", "sdxl_vae_slices", "maisi_ct"], "f"].tolist() == [16, 16, 64]
    assert np.isfinite(table.loc[["sdxl_vae_slices", "maisi_ct"], "segsim_dice_mean"].astype(float)).all()
    expected = np.mean([float(psnr(x[None, None], y[None, None])[0]) for (x, _), y in zip(own["sdxl_vae"], decoded)])
    assert table.loc["sdxl_vae", "psnr_mean"] == pytest.approx(expected, abs=1e-3)
    assert "| sdxl_vae | 16 | 4x8x8 | 4:1 |" in markdown


def test_a_nan_latent_stops_extraction_naming_latents_precision(family_run, tmp_path, monkeypatch):
    run = family_run["run"]
    config = mlconfig.load(*family_run["configs"])
    spec = mlconfig.latents_extract_slice(config, "sdxl_vae", "my_xrays")

    def overflowing(self, images):
        arrays, info = real(self, images)
        return {name: torch.full_like(values, float("nan")) for name, values in arrays.items()}, info

    real = DiffusersModel.encode
    monkeypatch.setattr(DiffusersModel, "encode", overflowing)
    with pytest.raises(InputError, match=r"latents\.precision"):
        extract_shards(
            spec,
            sorted((run / "data" / "normalized" / "my_xrays").glob("*.h5")),
            pd.read_parquet(run / "data" / "curated" / "my_xrays" / "manifest.parquet"),
            run / "results" / "models" / "sdxl_vae" / "stage2.pt",
            tmp_path / "dataset",
            tmp_path / "part.json",
        )


def test_publishing_withholds_datasets_whose_weights_licence_forbids_sharing():
    sources = readme_sources()
    for entry in sources:
        entry["license"] = {"name": "CC-BY-4.0", "share_derived": True}
    config = mlconfig.load(FULL_CONFIG, PRESET)
    config = mlconfig.validate({**config, "sources": sources})
    spec = mlconfig.publish_slice(config)
    assert {(d["model"], d["source"]) for d in spec["withheld"]} == {
        ("sd3_medium_vae", "my_xrays"),
        ("kandinsky22_movq", "my_xrays"),
        ("maisi_ct", "my_mri"),
    }
    config["models"] = [{**m, "license": {**m["license"], "permission": "NVIDIA, 2026-12-01, ref 42"}}
                        if m["id"] == "maisi_ct" else m for m in config["models"]]  # fmt: skip
    assert ("maisi_ct", "my_mri") in {(d["model"], d["source"]) for d in mlconfig.publish_slice(config)["datasets"]}


def test_the_preset_plans_imports_and_extraction_and_no_training(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HOME", raising=False)
    (tmp_path / "my-sources.yaml").write_text(yaml.safe_dump({"sources": readme_sources()}))
    configs = [FULL_CONFIG, PRESET, tmp_path / "my-sources.yaml"]
    preset = yaml.safe_load(PRESET.read_text())["models"]
    empty = snakemake(tmp_path / "run", "latents", "-n", configfile=configs, check=False)
    assert empty.returncode != 0 and "hf download" in empty.stdout + empty.stderr
    files: dict[str, dict[str, bytes]] = {}
    for model in preset:  # what each hf:// path names: a diffusers folder, or the MAISI file
        repo = "/".join(model["weights"].removeprefix("hf://").split("/")[:2])
        path = model["weights"].removeprefix(f"hf://{repo}").strip("/")
        folder = f"{path}/" if path else ""
        names = (
            [path] if path.endswith(".pt") else [f"{folder}config.json", f"{folder}diffusion_pytorch_model.safetensors"]
        )
        files.setdefault(repo, {}).update(dict.fromkeys(names, b"not read by a dry run"))
    for repo, content in files.items():
        fill_hub_cache(cache, repo, content)
    jobs = planned_jobs(snakemake(tmp_path / "run", "latents", "-n", configfile=configs).stdout)
    assert {w["model"] for rule, w in jobs if rule == "import_weights"} == {m["id"] for m in preset}
    assert not [rule for rule, _ in jobs if rule.startswith("train")]
    latents = {(w["model"], w["source"]) for rule, w in jobs if rule == "index_latents"}
    volumes = {m["id"] for m in preset if m["family"] == "maisi" or m.get("apply") in ("slices", "volumes")}
    assert latents == {(m["id"], "my_mri" if m["id"] in volumes else "my_xrays") for m in preset}
    assert {"wan21_vae", "cogvideox_2b_vae", "maisi_ct", "sdxl_vae_slices"} == volumes
