"""Fixture builders shared by the CAD, evaluation and report tests (no tests of their own).

A synthetic source with an obvious planted finding: a bright blob present (label 1) or absent
(label 0) on a noisy background, written the way the pipeline writes it: a curated manifest
(parquet, documented columns) and normalized HDF5 shards (`ShardWriter`), split by patient.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medlatent.core import ids
from medlatent.io.h5 import ShardWriter
from medlatent.latents.extract import extract_shards
from medlatent.latents.index import write_dataset_files
from medlatent.models.registry import build_medvae, save_model

TINY_2D = {
    "id": "tiny_f16",
    "dims": 2,
    "f": 16,
    "latent_channels": 2,
    "ch": 8,
    "ch_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "norm_groups": 4,
}
TINY_3D = {
    "id": "tiny3d_f64",
    "dims": 3,
    "f": 64,
    "latent_channels": 1,
    "ch": 8,
    "ch_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "norm_groups": 4,
}


def blob_image(shape: tuple[int, ...], positive: bool, rng: np.random.Generator) -> np.ndarray:
    """Background -0.6 with noise; a positive item has a bright Gaussian blob somewhere inside."""
    image = -0.6 + 0.08 * rng.standard_normal(shape)
    if positive:
        grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
        centre = [rng.uniform(n * 0.3, n * 0.7) for n in shape]
        radius = max(2.0, min(shape) / 6)
        distance = sum((g - c) ** 2 for g, c in zip(grids, centre))
        image = image + 1.4 * np.exp(-distance / (2 * radius**2))
    return np.clip(image, -1, 1).astype(np.float32)


def write_source(
    root: Path,
    source: str,
    shape: tuple[int, ...],
    n_patients: int,
    seed: int = 0,
    test_fraction: float = 0.35,
    label: str = "finding",
    rejected: int = 0,
    val_fraction: float = 0.0,
) -> dict:
    """Manifest + one shard per split under root/data; returns paths and the items by split.

    `rejected` items per split are listed in the manifest but recorded as rejected in the shard
    (as normalize_shard does for files that fail there).
    """
    rng = np.random.default_rng(seed)
    rows, arrays = [], {}
    for patient in range(n_patients):
        test_end = round(n_patients * test_fraction)
        split = (
            "test"
            if patient < test_end
            else "val"
            if patient < test_end + round(n_patients * val_fraction)
            else "train"
        )
        positive = bool(patient % 2)
        key = f"{patient:016x}"
        item_id = ids.item_id(source, key)
        rows.append(
            {
                "item_id": item_id,
                "file_key": key,
                "source": source,
                "modality": "ct" if len(shape) == 3 else "xray",
                "dims": len(shape),
                "patient_key": f"p{patient:04d}",
                "shape": list(shape),
                "spacing": None,
                "view": None,
                "laterality": None,
                "split": split,
                "shard": f"{split}-000",
                f"label_{label}": int(positive),
                "label_other": None,
            }
        )
        arrays[item_id] = blob_image(shape, positive, rng)
    manifest = pd.DataFrame(rows)
    curated = root / "data" / "curated" / source
    curated.mkdir(parents=True, exist_ok=True)
    manifest.to_parquet(curated / "manifest.parquet", index=False)
    (curated / "report.json").write_text(
        json.dumps(
            {
                "source": source,
                "demo": True,
                "found": len(rows) + 2,
                "kept": len(rows),
                "rejected": 2,
                "rejected_by_category": {"unreadable": 2},
            }
        )
    )
    shards = []
    for split in ("train", "val", "test"):
        path = root / "data" / "normalized" / source / f"{split}-000.h5"
        split_rows = manifest[manifest["split"] == split]
        with ShardWriter(path, {"shard": f"{split}-000", "demo": True}) as writer:
            for index, item_id in enumerate(split_rows["item_id"]):
                if index < rejected:
                    writer.reject(item_id, "planted: failed normalization")
                else:
                    writer.add(item_id, arrays[item_id], {"split": split})
        shards.append(str(path))
    return {
        "manifest": str(curated / "manifest.parquet"),
        "shards": shards,
        "manifest_frame": manifest,
        "arrays": arrays,
    }


def write_model(path: Path, spec: dict, seed: int = 0) -> Path:
    """A tiny random-initialised MedVAE in the final weights format (demo weights)."""
    torch.manual_seed(seed)
    save_model(path, build_medvae(spec, is_demo=True), embedder="demo", steps=0)
    return path


def cad_spec(
    task: dict,
    method: dict,
    seed: int = 0,
    epochs: int = 3,
    lr: float = 2e-3,
    batch_size: int = 16,
    classifier_2d: dict | None = None,
) -> dict:
    """A CAD job slice as medlatent.config.cad_slice builds it, with the demo's classifiers by default."""
    spec = {
        "task": {"weighted_sampling": False, "slice_axis": 2, **task},
        "method": method,
        "seed": seed,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "weight_decay": 0.01,
        "num_workers": 0,
        "classifier": (
            (classifier_2d or {"name": "hrnet_w18_small", "pretrained_path": None})
            if task["dims"] == 2
            else {"name": "seresnet50", "layers": [1, 1, 1, 1]}
        ),
        "demo": True,
    }
    if method["kind"] not in ("highres", "interpolation"):
        spec["latent_scale"] = 4.6
    return spec


def write_latent_dataset(root: Path, source: dict, name: str, model_path: Path, spec: dict) -> Path:
    """The model's latent dataset of the source (data/latents/...), made by the real extraction and index
    code; its part record under data/latent_parts as the workflow keeps them. Returns index.json."""
    dataset = root / "data" / "latents" / spec["id"] / name
    part = root / "data" / "latent_parts" / spec["id"] / name / "all.json"
    extract_shards(
        {
            "model": spec["id"],
            "source": name,
            "modality": "ct",
            "dims": spec["dims"],
            "batch_size": 8,
            "max_memory_gb": 8,
            "precision": "fp32",
            "window": [16, 16, 16],
            "overlap": 0.5,
            "blend": "gaussian",
            "sw_batch_size": 1,
            "store": [],
        },
        source["shards"],
        source["manifest_frame"],
        model_path,
        dataset,
        part,
    )
    card = root / "results" / "models" / spec["id"] / "card.json"
    card.parent.mkdir(parents=True, exist_ok=True)
    card.write_text("{}")
    write_dataset_files(
        {
            "model": spec["id"],
            "source": name,
            "source_name": name,
            "modality": "ct",
            "anatomy": None,
            "dims": spec["dims"],
            "license": {"name": "CC0"},
            "classification_scale": 4.6,
            "config_sha256": "0",
        },
        [part],
        card,
        dataset,
    )
    return dataset / "index.json"
