"""Latent extraction end to end beside the bare encoder forward on the same tensors; loader speed.

End to end is `extract_shard`: HDF5 reads, batching, the encoder, float16, tar writing,
hashing and the part record. Bare is `encode_latent_padded` on the same images, already in
memory, in the same batches (3D: one volume per forward, no windows since each volume fits).
`pipeline_overhead` = end-to-end seconds / bare seconds. The loader figure is samples/s of
`load_latents` over the written tar (decode to float32 tensors plus JSON).

`full_size_peak`: peak RSS of encoding ONE 1024x1024 image through a released-layout f16
encoder (`published_spec("f16_c1")`: ch=128, ch_mult [1, 2, 4], 2 res blocks, random weights)
in a fresh process, beside the `latents.max_memory_gb` estimate for it (goal: <= 6 GB).
"""

from __future__ import annotations

import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medlatent.core.ids import item_id
from medlatent.io.h5 import ShardWriter
from medlatent.latents.extract import extract_shard
from medlatent.latents.index import write_dataset_files
from medlatent.latents.loader import load_latents
from medlatent.latents.memory import budget_batch_size, encoder_item_bytes
from medlatent.models import load_model
from medlatent.models.projection import CLASSIFICATION_SCALE
from medlatent.models.registry import build_medvae, create_autoencoder, published_spec, save_model

#: Demo-sized networks (as workflow/demo/config.yaml) on larger images than the demo's.
CASES = {
    "2d_f16_c1_256px": (
        {
            "id": "bench2d",
            "dims": 2,
            "f": 16,
            "latent_channels": 1,
            "ch": 16,
            "ch_mult": [1, 2, 2],
            "num_res_blocks": 1,
            "norm_groups": 8,
        },
        (256, 256),
        24,
    ),
    "3d_f64_c1_48vox": (
        {
            "id": "bench3d",
            "dims": 3,
            "f": 64,
            "latent_channels": 1,
            "ch": 16,
            "ch_mult": [1, 2, 2],
            "num_res_blocks": 1,
            "norm_groups": 8,
        },
        (48, 48, 48),
        6,
    ),
}
BATCH_SIZE = 8
FULL_SIZE = ("f16_c1", (1024, 1024))
LOADER_PASSES = 3


def _write_inputs(folder: Path, spec: dict, shape: tuple[int, ...], count: int) -> tuple[Path, pd.DataFrame, Path]:
    rng = np.random.default_rng(0)
    shard = folder / "train-000.h5"
    rows = []
    with ShardWriter(shard, {"shard": "train-000", "normalize": {}, "demo": True}) as writer:
        for index in range(count):
            item = item_id("bench", f"{index:016x}")
            writer.add(
                item,
                rng.uniform(-1, 1, size=shape).astype(np.float32),
                {"original_shape": list(shape), "split": "train", "transform": {}},
            )
            rows.append({"item_id": item, "split": "train", "shard": "train-000", "label_finding": index % 2})
    weights = folder / "stage2.pt"
    torch.manual_seed(0)
    save_model(weights, build_medvae(spec, is_demo=True), embedder="demo", steps=0)
    return shard, pd.DataFrame(rows), weights


def _bare_seconds(weights: Path, shard: Path, dims: int) -> float:
    from medlatent.io.h5 import ShardReader

    model = load_model(weights)
    with ShardReader(shard) as reader:
        images = torch.from_numpy(np.stack([array for _, array, _ in reader]))[:, None]
    step = BATCH_SIZE if dims == 2 else 1
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(images), step):
            model.encode_latent_padded(images[start : start + step])
    return time.perf_counter() - started


def _time_case(spec: dict, shape: tuple[int, ...], count: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shard, manifest, weights = _write_inputs(folder, spec, shape, count)
        extract = {
            "model": spec["id"],
            "source": "bench",
            "modality": "ct" if spec["dims"] == 3 else "xray",
            "dims": spec["dims"],
            "batch_size": BATCH_SIZE,
            "max_memory_gb": 8,
            "store": ["mean"] if spec["dims"] == 2 else [],  # the default latents.store
            **(
                {"window": [160, 160, 160], "overlap": 0.25, "blend": "gaussian", "sw_batch_size": 1}
                if spec["dims"] == 3
                else {}
            ),
        }
        started = time.perf_counter()
        part = extract_shard(extract, shard, manifest, weights, folder / "ds", folder / "part.json")
        end_to_end = time.perf_counter() - started
        bare = _bare_seconds(weights, shard, spec["dims"])
        (folder / "card.json").write_text("{}", encoding="utf-8")
        write_dataset_files(
            {
                "model": spec["id"],
                "source": "bench",
                "source_name": "bench",
                "anatomy": None,
                "modality": extract["modality"],
                "dims": spec["dims"],
                "license": {"name": "none"},
                "classification_scale": CLASSIFICATION_SCALE,
                "config_sha256": "",
            },
            [folder / "part.json"],
            folder / "card.json",
            folder / "ds",
        )
        started = time.perf_counter()
        loaded = sum(1 for _ in range(LOADER_PASSES) for _ in load_latents(folder / "ds", split="train"))
        loader = time.perf_counter() - started
    return {
        "items": count,
        "input_shape": list(shape),
        "latent_shape": part["latent_shapes"][0],
        "extract_items_per_s": round(count / end_to_end, 2),
        "bare_encoder_items_per_s": round(count / bare, 2),
        "pipeline_overhead": round(end_to_end / bare, 3),
        "tar_mb": round(part["bytes"] / 1e6, 3),
        "loader_samples_per_s": round(loaded / loader, 1),
    }


def _encode_one_full_size_image(name: str, shape: tuple[int, ...]) -> dict:
    """In its own process, so that ru_maxrss is this encoding's peak alone."""
    torch.manual_seed(0)
    autoencoder = create_autoencoder(published_spec(name)).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in autoencoder.parameters())
    image = torch.rand(1, 1, *shape) * 2 - 1
    started = time.perf_counter()
    with torch.inference_mode():
        latent = autoencoder.encode_padded(image)[0].mean
    return {
        "model": name,
        "input_shape": list(shape),
        "latent_shape": list(latent.shape[1:]),
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),  # Linux: KiB
        "estimate_gb": round((weight_bytes + encoder_item_bytes(autoencoder, shape)) / 2**30, 2),
        "batch_size_at_16_gb": budget_batch_size(autoencoder, shape, 16, 64, "latents.max_memory_gb"),
        "goal_peak_rss_gb": 6,
    }


def full_size_peak(name: str = FULL_SIZE[0], shape: tuple[int, ...] = FULL_SIZE[1]) -> dict:
    """Peak RSS of one full-size image through a released-layout encoder, measured in a fresh process."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_encode_one_full_size_image, name, shape).result()


def run() -> dict:
    """Figures per case (see the module docstring); CPU threads as torch has them."""
    return {
        "threads": torch.get_num_threads(),
        "batch_size": BATCH_SIZE,
        **{name: _time_case(*case) for name, case in CASES.items()},
        "full_size_peak": full_size_peak(),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
