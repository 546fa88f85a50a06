"""Normalization throughput beside the raw decode throughput of the same files.

The difference is what normalization adds above decoding (resampling, scaling, HDF5 writes).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from medlatent import io
from medlatent.demo.registry import generate
from medlatent.io.h5 import ShardWriter
from medlatent.normalize.run import normalize_item

#: One 2D and one 3D demo source, as in workflow/demo/config.yaml but larger images.
CASES = {
    "mammo_dicom_2d": (
        {"generator": "mammo_dicom", "n_patients": 12, "images_per_patient": 4, "size": [512, 256]},
        {
            "modality": "mammography_ffdm",
            "dims": 2,
            "size": [256, 128],
            "intensity": "minmax",
            "percentiles": [0.0, 100.0],
            "output_range": [-1.0, 1.0],
            "interpolation": "bicubic",
        },
    ),
    "ct_dicom_series_3d": (
        {"generator": "ct_dicom_series", "n_patients": 6, "size": [128, 128, 48]},
        {
            "modality": "ct",
            "dims": 3,
            "hu_window": [-1000.0, 1000.0],
            "spacing": [1.5, 1.5, 1.5],
            "size": None,
            "output_range": [-1.0, 1.0],
            "interpolation": "bilinear",
        },
    ),
}


def _items(root: Path, dims: int) -> list[Path]:
    if dims == 2:
        return sorted(p for p in root.rglob("*.dcm"))
    return sorted({p.parent for p in root.rglob("*.dcm")})


def _usable(paths: list[Path]) -> list[Path]:
    usable = []
    for path in paths:
        try:
            io.read_header(path)
            usable.append(path)
        except Exception:  # noqa: BLE001 - planted broken files are not benchmarked
            continue
    return usable


def _time_case(access: dict, spec: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "files"
        generate({"method": "synthetic", **access}, root, seed=0)
        paths = _usable(_items(root, spec["dims"]))
        raw_bytes = 0
        started = time.perf_counter()
        for path in paths:
            raw_bytes += io.read_image(path).array.astype(np.float32).nbytes
        decode_s = time.perf_counter() - started
        started = time.perf_counter()
        with ShardWriter(Path(tmp) / "bench.h5", {"bench": True}) as writer:
            for index, path in enumerate(paths):
                array, attrs = normalize_item(path, spec)
                writer.add(f"item{index}", array, attrs)
        normalize_s = time.perf_counter() - started
    n = len(paths)
    mb = raw_bytes / 1e6
    return {
        "items": n,
        "decoded_mb": round(mb, 2),
        "decode_items_per_s": round(n / decode_s, 2),
        "decode_mb_per_s": round(mb / decode_s, 2),
        "normalize_items_per_s_per_core": round(n / normalize_s, 2),
        "normalize_mb_per_s_per_core": round(mb / normalize_s, 2),
        "overhead_above_decode": round(normalize_s / decode_s, 2),
    }


def run() -> dict:
    import torch

    torch.set_num_threads(1)  # per-core figures
    return {name: _time_case(access, spec) for name, (access, spec) in CASES.items()}
