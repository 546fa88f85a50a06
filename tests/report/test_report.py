"""Tables, figures and the summary; the evaluation rules run for real under Snakemake on fixtures."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from bundle_fixtures import REPO_ID, write_bundle
from cad_fixtures import TINY_2D, TINY_3D, write_latent_dataset, write_model, write_source
from workflow_helpers import planned_jobs, snakemake

from medlatent.report.figures import structure_dice
from medlatent.report.summary import build_report
from medlatent.report.tables import cad_display, cad_table, markdown_table, mean_std, write_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def metrics(task: str, method: str, seed: int, auroc: float | None, demo_weights: bool = False) -> dict:
    return {
        "task": task,
        "method": method,
        "kind": "highres" if method == "highres" else "medvae",
        "f": 1 if method == "highres" else 16,
        "latent_shape": [1, 32, 32] if method == "highres" else [4, 8, 8],
        "compression_ratio": 1.0 if method == "highres" else 4.0,
        "seed": seed,
        "auroc": auroc,
        "accuracy": 0.5 + seed / 10,
        "macro_f1": 0.4,
        "n_train": 30,
        "n_test": 10,
        "classifier": "hrnet_w18_small",
        "demo_data": True,
        "demo_weights": demo_weights,
    }


def test_cad_table_is_mean_and_sample_std_over_seeds_per_task_and_method():
    table = cad_table(
        [
            metrics("a", "highres", 0, 0.8),
            metrics("a", "highres", 1, 0.9),
            metrics("a", "highres", 2, 1.0),
            metrics("a", "m16", 0, 0.6, True),
            metrics("b", "highres", 0, None),
        ]
    )
    row = table[(table["task"] == "a") & (table["method"] == "highres")].iloc[0]
    assert row["seeds"] == 3 and row["auroc_mean"] == pytest.approx(0.9) and row["auroc_std"] == pytest.approx(0.1)
    assert row["accuracy_mean"] == pytest.approx(0.6) and not row["demo_weights"]
    single = table[table["method"] == "m16"].iloc[0]
    assert single["auroc_std"] is None or np.isnan(single["auroc_std"])
    assert bool(single["demo_weights"])
    assert table[table["task"] == "b"]["auroc_mean"].isna().all()  # undefined AUROC stays undefined
    shown = cad_display(table)
    assert shown.iloc[0]["auroc"] == "0.900 ± 0.100" and shown[shown["task"] == "b"].iloc[0]["auroc"] == "n/a"
    assert shown[shown["method"] == "m16"][["latent shape", "compression"]].values.tolist() == [["4x8x8", "4:1"]]
    assert mean_std([1.0, float("inf")]) == (float("inf"), None)


def test_write_table_gives_csv_and_markdown_with_provenance(tmp_path):
    frame = pd.DataFrame({"method": ["a|b", "c"], "value": [1.5, None]})
    write_table(frame, frame, tmp_path / "t.csv", tmp_path / "t.md", "Title", ["a note"], "config abc · demo data: yes")
    assert pd.read_csv(tmp_path / "t.csv").shape == (2, 2)
    text = (tmp_path / "t.md").read_text()
    assert text.startswith("# Title") and "| a\\|b | 1.5 |" in text and "| c |  |" in text
    assert "- a note" in text and "- Provenance: config abc · demo data: yes" in text
    assert markdown_table(frame).splitlines()[1] == "|---|---|"


def test_build_report_draws_every_figure_and_lists_everything_in_the_summary(tmp_path):
    tables = {}
    for name in ("cad", "recon", "efficiency", "storage"):
        tables[name] = tmp_path / f"{name}.md"
        tables[name].write_text(f"# {name.title()} table\n\n| a |\n|---|\n| 1 |\n")
    cad = cad_table([metrics("a", "highres", s, 0.7 + s / 10) for s in range(2)] + [metrics("a", "m16", 0, 0.6, True)])
    cad.to_csv(tmp_path / "cad.csv", index=False)
    for name in ("recon", "storage"):
        pd.DataFrame({"demo_weights": [False]}).to_csv(tmp_path / f"{name}.csv", index=False)
    pd.DataFrame(
        [
            {
                "dims": 2,
                "input": "image",
                "f": 1,
                "latency_ms": 10.0,
                "throughput_per_s": 100.0,
                "max_batch": 4,
                "max_batch_capped": True,
                "device": "cpu (test)",
                "demo_weights": False,
            },
            {
                "dims": 2,
                "input": "latent f=64",
                "f": 64,
                "latency_ms": 1.0,
                "throughput_per_s": 1000.0,
                "max_batch": 4,
                "max_batch_capped": True,
                "device": "cpu (test)",
                "demo_weights": False,
            },
        ]
    ).to_csv(tmp_path / "efficiency.csv", index=False)
    panel_dir = tmp_path / "recon" / "ct_head"
    panel_dir.mkdir(parents=True)
    np.savez(panel_dir / "panels.npz", **{"original::s/i": np.zeros((8, 8)), "m::s/i": np.ones((8, 8)) * 0.1})
    per_item = panel_dir / "per_item.csv"
    pd.DataFrame(
        {
            "image_type": ["ct_head", "ct_head", "ct_head"],
            "method": ["m", "m", "bicubic_f64"],
            "segmenter": ["MONAI bundle hf://MONAI/x"] * 3,
            "segsim_structures": [
                json.dumps({"1": {"dice": 0.9, "volume_ratio": 1.0}, "2": {"dice": 0.0, "volume_ratio": None}}),
                json.dumps({"1": {"dice": 0.7, "volume_ratio": 1.1}}),
                json.dumps({"1": {"dice": 0.2, "volume_ratio": 0.5}}),
            ],
        }
    ).to_csv(per_item, index=False)
    curation = tmp_path / "report.json"
    curation.write_text(
        json.dumps({"source": "s", "found": 5, "kept": 4, "rejected": 1, "rejected_by_category": {"unreadable": 1}})
    )
    model_dir = tmp_path / "models" / "m"
    model_dir.mkdir(parents=True)
    (model_dir / "stage2.pt").write_bytes(b"")
    pd.DataFrame({"step": [0, 1, 2], "loss": [1.0, 0.5, 0.2], "kl": [0.1, 0.1, 0.1]}).to_csv(
        model_dir / "stage1_losses.csv"
    )
    spec = {
        "config_hash": "0123456789ab",
        "project": "test",
        "demo": True,
        "models": ["m"],
        "sources": ["s"],
        "tasks": ["a"],
    }
    summary = tmp_path / "report" / "summary.md"
    figures = build_report(
        spec,
        tables,
        tmp_path / "cad.csv",
        tmp_path / "efficiency.csv",
        [str(panel_dir / "panels.npz")],
        [str(per_item)],
        [str(curation)],
        [str(model_dir / "stage2.pt")],
        tmp_path / "figures",
        summary,
    )
    assert sorted(figures) == [
        "cad_auroc",
        "curation_counts",
        "efficiency",
        "recon_panels",
        "segsim_structures",
        "training_curves",
    ]
    dice = structure_dice(pd.read_csv(per_item)).set_index(["method", "structure"])["dice"]
    assert dice.to_dict() == {("m", 1): pytest.approx(0.8), ("m", 2): 0.0, ("bicubic_f64", 1): 0.2}
    for path in figures.values():
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000
    text = summary.read_text()
    assert "Config hash: `0123456789ab`" in text and "Demo weights used by any result: yes" in text
    assert all(f"## {name.title()} table" in text for name in tables) and "| s | 5 | 4 | 1 | unreadable: 1 |" in text
    assert "m/stage1" in text and all(str(path) in text for path in figures.values())


# --- the evaluation rules under Snakemake ----------------------------------------------------------

EVALUATION_RULES = [
    "cad_train",
    "cad_table",
    "recon_image_type",
    "recon_table",
    "efficiency_timing",
    "efficiency_table",
    "report_summary",
]


def _model_entry(spec: dict, **extra) -> dict:
    return {**spec, **extra, "stage2": {"steps": 1, "batch_size": 2, "lr": 1.0e-3}}


def _workflow_config(path: Path) -> Path:
    config = {
        "project": {"name": "evaluation-test", "demo": True, "seed": 0, "salt": "test-salt"},
        "normalize": {"xray": {"size": [32, 32]}, "ct": {"spacing": [2.0, 2.0, 2.0], "size": [16, 16, 16]}},
        "sources": [
            {
                "id": "blob.2d",
                "modality": "xray",
                "dims": 2,
                "anatomy": "wrist",
                "role": "cad",
                "access": {"method": "synthetic"},
                "license": {"name": "CC0", "share_derived": True},
                "shards": {"train": 1, "val": 1, "test": 1},
            },
            {
                "id": "blob3d",
                "modality": "ct",
                "dims": 3,
                "anatomy": "head",
                "role": "cad",
                "access": {"method": "synthetic"},
                "license": {"name": "CC0", "share_derived": True},
                "shards": {"train": 1, "val": 1, "test": 1},
            },
        ],
        "embedder": {"kind": "demo"},
        "perceptual": {"kind": "demo"},
        "models": [
            _model_entry(TINY_2D, stage1={"steps": 1, "batch_size": 2, "lr": 1.0e-3}),
            _model_entry(TINY_3D, inflate_from=TINY_2D["id"]),
        ],
        "cad_tasks": [
            {
                "id": "blob2d_finding",
                "dims": 2,
                "source": "blob.2d",
                "label": "finding",
                "classes": 2,
                "input_size": [32, 32],
            },
            {
                "id": "blob3d_finding",
                "dims": 3,
                "source": "blob3d",
                "label": "finding",
                "classes": 2,
                "input_size": [16, 16, 16],
            },
        ],
        "latents": {"batch_size": 8, "window": [16, 16, 16], "overlap": 0.5},
        "publish": {"remote": {"name": "test", "url": ".dvc-remote-test"}},
        "evaluation": {
            "cad": {
                "models": None,
                "methods": ["highres", "medvae"],
                "interpolations": ["bicubic"],
                "seeds": [0],
                "epochs": 1,
                "batch_size_2d": 8,
                "batch_size_3d_images": 4,
                "batch_size_3d_latents": 4,
                "num_workers": 0,
                "classifier_2d": {"name": "test_resnet", "pretrained_path": None},
                "classifier_3d": {"name": "seresnet50", "layers": [1, 1, 1, 1]},
            },
            "recon": {
                "methods": ["interpolation", "medvae"],
                "n_images_2d": 4,
                "seeds_2d": 1,
                "n_volumes_3d": 2,
                "crop_3d": [16, 16, 16],
            },
            "efficiency": {
                "image_size_2d": [64, 64],
                "image_size_3d": [16, 16, 16],
                "warmup": 0,
                "iterations": 1,
                "max_batch_cap_cpu": 1,
            },
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _upstream_outputs(root: Path) -> None:
    """What fetch, curate, normalize, training and latents would have written, oldest first."""
    sources = {
        "blob.2d": write_source(root, "blob.2d", (32, 32), 24),
        "blob3d": write_source(root, "blob3d", (16, 16, 16), 16),
    }
    for name, source in sources.items():
        raw = root / "data" / "raw" / name
        raw.mkdir(parents=True, exist_ok=True)
        (raw / "fetch.json").write_text("{}")
        pd.DataFrame({"file_key": [], "path": [], "item_id": []}).to_parquet(raw / "files_index.parquet")
        pd.DataFrame({"file_key": [], "n_files": [], "category": [], "reason": []}).to_parquet(
            root / "data" / "curated" / name / "rejected.parquet"
        )
    models = {
        spec["id"]: write_model(root / "results" / "models" / spec["id"] / "stage2.pt", spec)
        for spec in (TINY_2D, TINY_3D)
    }
    pd.DataFrame({"step": [0, 1], "loss": [1.0, 0.5]}).to_csv(
        root / "results" / "models" / TINY_2D["id"] / "stage1_losses.csv"
    )
    write_latent_dataset(root, sources["blob.2d"], "blob.2d", models[TINY_2D["id"]], TINY_2D)
    write_latent_dataset(root, sources["blob3d"], "blob3d", models[TINY_3D["id"]], TINY_3D)


@pytest.mark.workflow
def test_evaluation_rules_run_report_and_rerun_only_the_edited_task(tmp_path):
    work = tmp_path / "work"
    _upstream_outputs(work)
    config = _workflow_config(tmp_path / "config.yaml")
    allowed = ["--allowed-rules", *EVALUATION_RULES]
    snakemake(work, *allowed, "results/report/summary.md", configfile=config)

    table = pd.read_csv(work / "results" / "tables" / "cad.csv")
    assert set(zip(table["task"], table["method"])) == {("blob2d_finding", m) for m in ("highres", "tiny_f16")} | {
        ("blob3d_finding", m) for m in ("highres", "tiny3d_f64")
    }
    assert (work / "results" / "cad" / "blob2d_finding" / "tiny_f16" / "seed0" / "metrics.json").exists()
    recon = pd.read_csv(work / "results" / "tables" / "recon.csv")
    assert set(recon["image_type"]) == {"xray_wrist", "ct_head"} and recon["demo_weights"].any()
    assert {"bicubic_f16", "tiny_f16", "bicubic_f64", "tiny3d_f64"} == set(recon["method"])
    efficiency = (work / "results" / "tables" / "efficiency.md").read_text()
    assert "Device: cpu" in efficiency and "Provenance: config slice" in efficiency and "demo weights: no" in efficiency
    summary = (work / "results" / "report" / "summary.md").read_text()
    assert "Config hash: `" in summary and "Demo weights used by any result: yes" in summary
    assert (work / "results" / "figures" / "cad_auroc.png").read_bytes()[:8] == PNG_MAGIC

    snakemake(work, *allowed, "--report", "report.html", "results/report/summary.md", configfile=config)
    html = (work / "report.html").read_text(errors="replace")
    assert "cad_auroc.png" in html and "summary.md" in html and "evaluation-test" in html

    edited = yaml.safe_load(config.read_text())
    edited["cad_tasks"][0]["lr"] = 0.5  # one CAD hyperparameter of one task
    shutil.copy(config, tmp_path / "original.yaml")
    config.write_text(yaml.safe_dump(edited))
    dry = snakemake(work, *allowed, "-n", "results/report/summary.md", configfile=config)
    jobs = planned_jobs(dry.stdout)
    assert {rule for rule, _ in jobs} == {"cad_train", "cad_table", "report_summary"}
    assert sorted(w["method"] for rule, w in jobs if rule == "cad_train") == ["highres", "tiny_f16"]
    assert {w["task"] for rule, w in jobs if rule == "cad_train"} == {"blob2d_finding"}


@pytest.mark.workflow
def test_recon_rule_segments_with_the_monai_bundle_of_the_hub_cache(tmp_path, monkeypatch):
    work = tmp_path / "work"
    _upstream_outputs(work)
    config = yaml.safe_load(_workflow_config(tmp_path / "config.yaml").read_text())
    config["evaluation"]["recon"]["segmenter"] = {"ct": {"kind": "monai_bundle", "bundle": f"hf://{REPO_ID}"}}
    config["sources"] = [s for s in config["sources"] if s["dims"] == 3]  # the table of the 3D type only
    config["cad_tasks"] = [t for t in config["cad_tasks"] if t["dims"] == 3]
    path = tmp_path / "bundle.yaml"
    path.write_text(yaml.safe_dump(config))
    target = ["results/tables/recon.md", "--allowed-rules", "recon_image_type", "recon_table"]

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    failed = snakemake(work, "results/recon/ct_head/per_item.csv", *target[1:], configfile=path, check=False)
    assert failed.returncode != 0, failed.stdout[-3000:] + failed.stderr[-3000:]
    assert f"hf download {REPO_ID}" in (work / "logs" / "recon" / "ct_head.log").read_text(), failed.stderr[-3000:]

    write_bundle(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snakemake(work, *target, configfile=path)
    log = (work / "logs" / "recon" / "ct_head.log").read_text()
    assert re.search(r"budget [\d.]+ MB \(evaluation\.recon\.mem_mb less resident\): sw_batch_size [1-9]", log), log
    rows = pd.read_csv(work / "results" / "recon" / "ct_head" / "per_item.csv")
    assert rows["segsim_dice"].between(0, 1).all() and (rows["segqc_changed"] >= 0).all()
    assert all(set(json.loads(s)) <= {"1", "2", "3"} for s in rows["segsim_structures"])  # the bundle's 4 labels
    table = (work / "results" / "tables" / "recon.md").read_text()
    assert "SegQC changed structures" in table and f"MONAI bundle hf://{REPO_ID}" in table
    assert "threshold segmenter at [-0.6, -0.2, 0.2] (stand-in" not in table  # no MRI source here
