"""Real files for the latent-dataset tests: tiny model weights, normalized shards, manifests.

The shards carry planted PHI (patient names, raw ids, dates) in item attributes and the
manifest, where a careless copy would pick them up; the tests assert none of it reaches a tar,
an index or a card.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medlatent import config as mlconfig
from medlatent.core.ids import item_id
from medlatent.io.h5 import ShardWriter
from medlatent.latents.extract import extract_shards
from medlatent.models.registry import build_medvae, save_model

#: Fake PHI planted in the fixtures: none of these may appear in any output.
PHI_STRINGS = ("DOE^JANE", "MRN-0042-SECRET", "19650412", "St. Example Hospital")


def tiny_model(path: Path, dims: int = 2, latent_channels: int = 2, model_id: str = "tiny", seed: int = 0) -> Path:
    """A random-initialised MedVAE weights file (format medlatent-model/1) and a card.json beside it."""
    torch.manual_seed(seed)
    spec = {
        "id": model_id,
        "dims": dims,
        "f": 2**dims,
        "latent_channels": latent_channels,
        "ch": 8,
        "ch_mult": [1, 2],
        "num_res_blocks": 1,
        "norm_groups": 4,
    }
    save_model(path, build_medvae(spec, is_demo=True), embedder="demo", steps=0)
    (path.parent / "card.json").write_text(json.dumps({"model": model_id, "demo": True}), encoding="utf-8")
    return path


def _item_meta(dims: int, shape: tuple[int, ...], split: str) -> dict:
    meta = {
        "original_shape": [s + 3 for s in shape],
        "spacing": [0.5] * dims,
        "split": split,
        "view_position": "PA" if dims == 2 else None,
        "transform": {
            "intensity": {"window": [0.0, 4095.0], "output_range": [-1.0, 1.0], "operator": PHI_STRINGS[0]},
            "scale": 0.5,
            "pad_offset": [1, 2],
            "resized_shape": list(shape),
            "acquired": PHI_STRINGS[2],
        },
        "PatientName": PHI_STRINGS[0],
        "patient_id": PHI_STRINGS[1],
        "institution": PHI_STRINGS[3],
    }
    if dims == 3:
        meta.update(affine=np.diag([2.0, 2.0, 2.0, 1.0]).tolist(), orientation="RAS")
    return meta


def write_source(
    root: Path, source_id: str, shards: dict[str, int], shape: tuple[int, ...], rejected: int = 1, seed: int = 0
) -> tuple[Path, pd.DataFrame]:
    """Normalized HDF5 shards (`{shard}.h5`, n items each) and the matching manifest.

    The first `rejected` items of the first non-empty shard failed normalization: they are
    in the manifest and in the shard's rejected list, not in its items.
    """
    rng = np.random.default_rng(seed)
    folder = root / "normalized" / source_id
    rows = []
    counter = 0
    for shard, count in shards.items():
        split = shard.split("-")[0]
        meta = {
            "shard": shard,
            "normalize": {"modality": "xray", "dims": len(shape), "interpolation": "bilinear"},
            "demo": True,
        }
        with ShardWriter(folder / f"{shard}.h5", meta) as writer:
            for index in range(count):
                key = f"{counter:016x}"
                counter += 1
                item = item_id(source_id, key)
                rows.append(
                    {
                        "item_id": item,
                        "file_key": key,
                        "source": source_id,
                        "split": split,
                        "shard": shard,
                        "patient_key": f"{index:020x}",
                        "raw_patient_id": PHI_STRINGS[1],
                        "label_finding": int(index % 2),
                        "label_grade": float("nan") if index % 3 == 0 else 2.5,
                    }
                )
                if rejected and counter <= rejected:
                    writer.reject(item, "constant image")
                    continue
                image = np.clip(rng.normal(0.0, 0.5, size=shape), -1, 1).astype(np.float32)
                writer.add(item, image, _item_meta(len(shape), shape, split))
    return folder, pd.DataFrame(rows)


def extract_spec(model_id: str, source_id: str, dims: int = 2, **extra) -> dict:
    spec = {
        "model": model_id,
        "source": source_id,
        "modality": "xray" if dims == 2 else "ct",
        "dims": dims,
        "batch_size": 3,
        "max_memory_gb": 8,
        "precision": "fp32",
        "store": ["mean"] if dims == 2 else [],
    }
    if dims == 3:
        spec.update(window=[16, 16, 16], overlap=0.5, blend="gaussian", sw_batch_size=2)
    return {**spec, **extra}


def extract_per_split(
    spec: dict, folder: Path, shards, manifest: pd.DataFrame, weights: Path, dataset: Path, records: Path
) -> tuple[list[Path], list[dict]]:
    """Extract `shards` (ids of `folder/<shard>.h5`) as the workflow groups them: one job per split.

    Returns the part records written (`records/<split>.json`) and the shard entries they hold.
    """
    paths, parts = [], []
    for split in dict.fromkeys(shard.split("-")[0] for shard in shards):
        paths.append(records / f"{split}.json")
        in_split = [folder / f"{shard}.h5" for shard in shards if shard.split("-")[0] == split]
        parts += extract_shards(spec, in_split, manifest, weights, dataset, paths[-1])
    return paths, parts


def index_spec(model_id: str, source_id: str, license_block: dict, dims: int = 2) -> dict:
    return {
        "model": model_id,
        "source": source_id,
        "source_name": f"fixture {source_id}",
        "anatomy": "chest",
        "modality": "xray" if dims == 2 else "ct",
        "dims": dims,
        "license": license_block,
        "classification_scale": 4.6,
        "config_sha256": "0" * 64,
    }


CC0 = {"name": "synthetic (CC0)", "share_derived": True, "commercial": True, "permission": None}


DEMO_SHARDS = ("train-000", "val-000", "test-000")


def demo_dataset(demo_config: dict, source_id: str, tmp_path: Path, access: dict, weights: Path, **extract) -> dict:
    """A demo source generated small (`access` overrides its access block), curated, normalized
    and extracted with `weights` (model id "tiny") through the real code, then indexed.

    Returns the raw folder, manifest, files index, normalized shards folder, dataset folder and index.
    """
    from medlatent.curate.run import CurationOutputs, curate
    from medlatent.demo.registry import generate
    from medlatent.latents.index import write_dataset_files
    from medlatent.normalize.run import normalize_shard

    raw, normalized, dataset = tmp_path / "raw", tmp_path / "normalized" / source_id, tmp_path / "latents" / source_id
    entry = mlconfig.source(demo_config, source_id)
    generate({**entry["access"], **access}, raw, seed=0)
    files = [{"path": str(p.relative_to(raw)), "size": p.stat().st_size} for p in sorted(raw.rglob("*")) if p.is_file()]
    spec = {**mlconfig.curate_slice(demo_config, source_id), "shards": {"train": 1, "val": 1, "test": 1}}
    outputs = CurationOutputs(*(tmp_path / name for name in ("m.parquet", "r.parquet", "report.json", "files.parquet")))
    curate(spec, "salt", {"source": source_id, "root": str(raw), "files": files}, outputs, demo=True)
    manifest, files_index = pd.read_parquet(outputs.manifest), pd.read_parquet(outputs.files_index)
    for shard in DEMO_SHARDS:
        normalize_shard(
            mlconfig.normalize_slice(demo_config, source_id),
            shard,
            manifest,
            files_index,
            raw,
            normalized / f"{shard}.h5",
            demo=True,
        )
    part = tmp_path / "parts" / "all.json"
    shards = [normalized / f"{shard}.h5" for shard in DEMO_SHARDS]
    extract_shards(extract_spec("tiny", source_id, entry["dims"], **extract), shards, manifest, weights, dataset, part)
    index = write_dataset_files(
        index_spec("tiny", source_id, CC0, entry["dims"]), [part], weights.parent / "card.json", dataset
    )
    return {
        "raw": raw,
        "manifest": manifest,
        "files_index": files_index,
        "normalized": normalized,
        "dataset": dataset,
        "index": index,
    }
