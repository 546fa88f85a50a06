"""The README's bring-your-own-images example, run for real with released-architecture weights.

A folder of generated DICOM radiographs and one of NIfTI volumes (the README's `local`
sources), the preset of released models with its hf:// paths served from a temporary hub
cache, models at test width (random weights saved as the authors save them): `snakemake
latents` writes latent shards equal to the authors' model on the normalized images.
"""

from __future__ import annotations

import pytest
import torch
import webdataset as wds
import yaml
from byo_sources import readme_sources, run_readme_latents, write_readme_sources
from hub_fixtures import fill_hub_cache
from medvae_oracle import RGB_MODELS, model_entry, released_model, save_released
from workflow_helpers import REPO, planned_jobs, snakemake

from medlatent.io.h5 import ShardReader
from medlatent.latents.loader import sample_array, shard_urls
from medlatent.models.registry import RELEASED, RELEASED_REPO, architecture, published_spec

pytestmark = pytest.mark.workflow
PRESET = REPO / "workflow" / "presets" / "medvae-released.yaml"
FULL_CONFIG = REPO / "config.yaml"
#: The README's sources and one released file for each: 2D with LoRA pairs, RGB conv_in/out and a
#: stage-2 head; 3D with its unapplied head and the preset's `latents.window: medvae`.
MODELS = {"my_xrays": "f16_c3", "my_mri": "f64_c1_3d"}


@pytest.fixture(scope="module")
def byo_run(tmp_path_factory):
    """Run `snakemake latents` once with the README sources, the preset and test-width released files."""
    root = tmp_path_factory.mktemp("byo")
    write_readme_sources(root)
    authors_models, files, entries = {}, {}, []
    for name in MODELS.values():
        authors_models[name] = released_model(name, seed=3)
        files[RELEASED[name]] = save_released(authors_models[name], root / f"{name}.ckpt")
        entries.append(model_entry(name, f"hf://{RELEASED_REPO}/{RELEASED[name]}"))
    cache = root / "hf-cache"
    fill_hub_cache(cache, RELEASED_REPO, files)
    configs = run_readme_latents(root, PRESET, entries, cache)
    return root, configs, authors_models, cache


def test_readme_example_extracts_the_authors_latents(byo_run):
    root, _, authors_models, _ = byo_run
    for source_id, name in MODELS.items():
        normalized = {
            item: array
            for shard in sorted((root / "run" / "data" / "normalized" / source_id).glob("*.h5"))
            for item, array, _ in ShardReader(shard)
        }
        dataset = root / "run" / "data" / "latents" / f"medvae_{name}" / source_id
        samples = list(wds.WebDataset(shard_urls(dataset, "train"), shardshuffle=False))
        assert len(samples) == len(normalized) > 0
        latent = sample_array(samples[0], "latent")
        x = torch.from_numpy(normalized[samples[0]["__key__"]])[None, None]
        x = x.repeat(1, 3, 1, 1) if name in RGB_MODELS else x
        with torch.no_grad():
            z, _, projected = authors_models[name](x, sample_posterior=False, decode=False)
        expected = (projected if x.ndim == 4 else z)[0]  # MVAE: 2D projected, 3D not
        # latents are stored as float16: compare at its precision (11 significant bits)
        torch.testing.assert_close(latent, expected, atol=2e-3, rtol=2e-3)
        card = (dataset / "README.md").read_text()
        assert "Model weights loaded:" in card and RELEASED[name].split("/")[-1] in card


def test_pointing_one_model_at_another_file_reruns_only_its_jobs(byo_run):
    root, configs, authors_models, cache = byo_run
    other = save_released(released_model("f16_c3", seed=4), root / "other.ckpt")
    models = yaml.safe_load(configs[-1].read_text())["models"]
    models[0]["weights"] = str(other)
    edited = root / "edited-models.yaml"
    edited.write_text(yaml.safe_dump({"models": models}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_CACHE", str(cache))
        jobs = planned_jobs(snakemake(root / "run", "latents", "-n", configfile=[*configs[:-1], edited]).stdout)
    assert {w.get("model") for rule, w in jobs if rule != "latents"} == {"medvae_f16_c3"}  # not the 3D model
    assert {rule for rule, _ in jobs} == {"import_weights", "extract_latents", "index_latents", "latents"}
    assert not any(rule.startswith(("fetch", "curate", "normalize", "train")) for rule, _ in jobs)


def test_the_preset_with_the_readme_sources_plans_imports_and_no_training(tmp_path, monkeypatch):
    """The README command as written, the seven released files in the hub cache: a dry run."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    (tmp_path / "my-sources.yaml").write_text(yaml.safe_dump({"sources": readme_sources()}))
    configs = [FULL_CONFIG, PRESET, tmp_path / "my-sources.yaml"]
    empty = snakemake(tmp_path / "run", "latents", "-n", configfile=configs, check=False)
    assert empty.returncode != 0 and f"`hf download {RELEASED_REPO} model_weights/vae_" in empty.stdout + empty.stderr
    fill_hub_cache(cache, RELEASED_REPO, {path: b"not read by a dry run" for path in RELEASED.values()})
    jobs = planned_jobs(snakemake(tmp_path / "run", "latents", "-n", configfile=configs).stdout)
    preset = yaml.safe_load(PRESET.read_text())["models"]
    assert {w["model"] for rule, w in jobs if rule == "import_weights"} == {m["id"] for m in preset}
    by_file = {path: name for name, path in RELEASED.items()}
    for model in preset:  # the architectures the parity tests check against the authors' classes
        name = by_file[model["weights"].removeprefix(f"hf://{RELEASED_REPO}/")]
        assert architecture(model) == architecture(published_spec(name)), model["id"]
    assert len(preset) == len(RELEASED)
    assert not [rule for rule, _ in jobs if rule.startswith("train")]
    latents = {(w["model"], w["source"]) for rule, w in jobs if rule == "index_latents"}
    assert len(latents) == 7 and {source for _, source in latents} == {"my_xrays", "my_mri"}
