"""Real DICOM test files (pydicom, pydicom-data) and a `local`-style source run through curation
and normalization: what the DICOM archive and hostile-input tests share."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydicom.data import get_testdata_file

from medlatent.curate.run import CurationOutputs, curate
from medlatent.io.h5 import ShardReader
from medlatent.normalize.run import normalize_shard

SALT = "test-salt"


def real_file(name: str) -> Path:
    """A pydicom / pydicom-data test file; the pins install them, so a missing one fails."""
    found = get_testdata_file(name, download=False)
    assert found is not None, f"{name} is not installed: pip install -e '.[test]' (pydicom-data)"
    return Path(found)


def source_spec(source_id: str, dims: int, **curation) -> dict:
    """The curate slice of a `local` source, as `medlatent.config.curate_slice` builds it."""
    return {
        "id": source_id,
        "modality": "xray" if dims == 2 else "ct",
        "dims": dims,
        "curation": {
            "adapter": "generic",
            "labels": None,
            "exclude_flags": [],
            "colour": "mean",
            "frames": "reject",
            **curation,
        },
        "split": {"method": "patient_random", "fractions": {"train": 1.0, "val": 0.0, "test": 0.0}},
        "shards": {"train": 1, "val": 1, "test": 1},
        "seed": 0,
        "decode_check": True,
    }


XRAY_NORMALIZE = {
    "modality": "xray",
    "dims": 2,
    "size": [64, 64],
    "intensity": "minmax",
    "percentiles": [0.0, 100.0],
    "output_range": [-1.0, 1.0],
    "interpolation": "bicubic",
}
#: The recipe's CT normalization (HU window, 1 mm); tests override what they vary.
CT_NORMALIZE = {
    "modality": "ct",
    "dims": 3,
    "hu_window": [-1000.0, 1000.0],
    "spacing": [1.0, 1.0, 1.0],
    "size": None,
    "output_range": [-1.0, 1.0],
    "interpolation": "bilinear",
}


def run_source(root: Path, out: Path, spec: dict, normalize: dict | None = None) -> dict:
    """curate (+ normalize the train shard): report, manifest, rejected, files index, shard."""
    files = [{"path": p.relative_to(root).as_posix()} for p in sorted(root.rglob("*")) if p.is_file()]
    out.mkdir(parents=True, exist_ok=True)
    outputs = CurationOutputs(
        *(out / name for name in ("manifest.parquet", "rejected.parquet", "report.json", "files.parquet"))
    )
    report = curate(spec, SALT, {"source": spec["id"], "root": str(root), "files": files}, outputs, demo=False)
    result = {
        "report": report,
        "manifest": pd.read_parquet(outputs.manifest),
        "rejected": pd.read_parquet(outputs.rejected),
        "files": pd.read_parquet(outputs.files_index),
    }
    if normalize is not None:
        result["counts"] = normalize_shard(
            normalize, "train-000", result["manifest"], result["files"], root, out / "train-000.h5", demo=False
        )
        with ShardReader(out / "train-000.h5") as reader:
            result["arrays"] = {item: (array, meta) for item, array, meta in reader}
            result["failed"] = dict(reader.rejected)
    return result
