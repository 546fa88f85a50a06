"""The latent rules in the real Snakefile (dry run) and the CLI the rules call."""

from __future__ import annotations

import json

from latent_fixtures import CC0, extract_spec, index_spec, tiny_model, write_source
from workflow_helpers import planned_jobs, snakemake

from medlatent import cli
from medlatent import config as mlconfig
from medlatent.latents.loader import read_index


def test_cli_extracts_and_indexes_a_dataset(tmp_path):
    weights = tiny_model(tmp_path / "models" / "tiny" / "stage2.pt")
    folder, manifest = write_source(tmp_path, "src", {"train-000": 3, "test-000": 0}, (16, 16), rejected=0)
    manifest.to_parquet(tmp_path / "manifest.parquet")
    dataset, parts = tmp_path / "latents" / "tiny" / "src", []
    for shard in ("train-000", "test-000"):
        parts.append(str(tmp_path / "parts" / f"{shard}.json"))
        assert (
            cli.main(
                [
                    "extract-latents",
                    "--spec",
                    json.dumps(extract_spec("tiny", "src")),
                    "--shard-file",
                    str(folder / f"{shard}.h5"),
                    "--manifest",
                    str(tmp_path / "manifest.parquet"),
                    "--weights",
                    str(weights),
                    "--dataset-dir",
                    str(dataset),
                    "--part",
                    parts[-1],
                    "--gpus",
                    "0",
                    "--threads",
                    "2",  # one reader worker
                ]
            )
            == 0
        )
    assert (
        cli.main(
            [
                "index-latents",
                "--spec",
                json.dumps(index_spec("tiny", "src", CC0)),
                "--card",
                str(weights.parent / "card.json"),
                "--parts",
                *parts,
                "--dataset-dir",
                str(dataset),
            ]
        )
        == 0
    )
    _, index = read_index(dataset)
    assert index["splits"] == {"train": 3, "val": 0, "test": 0} and sorted(p.name for p in dataset.iterdir()) == [
        "README.md",
        "_info.json",
        "index.json",
        "train-000.meta.json",
        "train-000.tar",
    ]


def test_dry_run_plans_one_job_per_model_source_shard_group_of_matching_dims(tmp_path, demo_config):
    # stand-ins for trained weights: this is about the latent rules (and the imported models' rules)
    for model_id in mlconfig.trained_models(demo_config, 2) + mlconfig.trained_models(demo_config, 3):
        folder = tmp_path / "results" / "models" / model_id
        folder.mkdir(parents=True)
        (folder / "stage2.pt").touch()
        (folder / "card.json").touch()
    jobs = planned_jobs(snakemake(tmp_path, "-n").stdout)
    extract = {(w["model"], w["source"], w["shards"]) for rule, w in jobs if rule == "extract_latents"}
    # every model on every source of its dims, but the family models on the one source each names (`sources:`)
    encodes = {
        m["id"]: [s["id"] for s in demo_config["sources"] if s["dims"] == m["dims"]] for m in demo_config["models"]
    }
    encodes.update(demo_sd_kl=["demo.wrist"], demo_maisi=["demo_headct"])
    expected = {
        (m, s, group) for m in encodes for s in encodes[m] for group in mlconfig.extraction_groups(demo_config, s)
    }
    assert extract == expected and ("demo3d_f64_c1", "demo_knee", "test-000-000") in extract
    assert {(w["model"], w["source"]) for rule, w in jobs if rule == "index_latents"} == set(
        mlconfig.latent_pairs(demo_config)
    )
    assert not any(rule == "publish_latents" for rule, _ in jobs)  # publishing is asked for, never implied
    # the demo's family models: their tiny random weights generated, then imported; never trained
    model_jobs = {
        (rule, w["model"]) for rule, w in jobs if "model" in w and rule not in ("extract_latents", "index_latents")
    }
    assert {job for job in model_jobs if job[1] in ("demo_sd_kl", "demo_maisi")} == {
        ("demo_family_weights", "demo_sd_kl"), ("import_weights", "demo_sd_kl"),
        ("demo_maisi_weights", "demo_maisi"), ("import_weights", "demo_maisi"),
    }  # fmt: skip


def test_slices_hold_only_what_each_job_uses(demo_config):
    two_d = mlconfig.latents_extract_slice(demo_config, "demo_f16_c1", "demo.wrist")
    three_d = mlconfig.latents_extract_slice(demo_config, "demo3d_f64_c1", "demo_knee")
    assert "window" not in two_d and three_d["window"] == [32, 32, 32] and three_d["overlap"] == 0.5
    before = mlconfig.latents_index_slice(demo_config, "demo_f16_c1", "demo.wrist")
    demo_config["latents"]["window"] = [32, 32, 16]  # a 3D-only knob: 2D jobs and hashes stay as they are
    assert mlconfig.latents_index_slice(demo_config, "demo_f16_c1", "demo.wrist") == before
    assert before["license"]["name"] == "synthetic (CC0)" and len(before["config_sha256"]) == 64


def test_store_and_classification_scale_reach_only_the_jobs_that_use_them(demo_config):
    assert demo_config["latents"]["store"] == ["mean"]  # the default: 2D datasets are decodable
    two_d = mlconfig.latents_extract_slice(demo_config, "demo_f16_c1", "demo.wrist")
    three_d = mlconfig.latents_extract_slice(demo_config, "demo3d_f64_c1", "demo_knee")
    assert two_d["store"] == ["mean"] and three_d["store"] == []  # a 3D latent is the unprojected mean itself
    index_before = mlconfig.latents_index_slice(demo_config, "demo_f16_c1", "demo.wrist")
    assert index_before["classification_scale"] == demo_config["evaluation"]["cad"]["latent_scale"] == 4.6
    demo_config["evaluation"]["cad"]["latent_scale"] = 5.0  # recorded in the index, not a reason to re-extract
    index_after = mlconfig.latents_index_slice(demo_config, "demo_f16_c1", "demo.wrist")
    assert index_after["classification_scale"] == 5.0 and index_after["config_sha256"] == index_before["config_sha256"]
    demo_config["latents"]["store"] = ["logvar", "mean"]
    assert mlconfig.latents_extract_slice(demo_config, "demo_f16_c1", "demo.wrist")["store"] == ["mean", "logvar"]
    assert mlconfig.latents_extract_slice(demo_config, "demo3d_f64_c1", "demo_knee")["store"] == ["logvar"]
    demo_config["latents"]["store"] = []
    assert mlconfig.latents_extract_slice(demo_config, "demo3d_f64_c1", "demo_knee") == three_d
    assert (
        mlconfig.latents_index_slice(demo_config, "demo_f16_c1", "demo.wrist")["config_sha256"]
        != index_before["config_sha256"]
    )
