"""The generators by name, `generate` (one source and its labels.csv) and `phi_strings`."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from medlatent.core.errors import ConfigError
from medlatent.demo.ct import ct_dicom_series
from medlatent.demo.dicom import PHI_KEYWORDS
from medlatent.demo.knee import mrnet_npy
from medlatent.demo.mammography import mammo_dicom
from medlatent.demo.nifti import nifti_volume
from medlatent.demo.xray import cxr_dicom, xray_png

LABELS_FILE = "labels.csv"
#: Label-table patient ids shorter than this are dataset-assigned case numbers (MRNet's
#: "0042"), not PHI, and would match unrelated text when searched for.
MIN_PHI_ID_LENGTH = 6

GENERATORS: dict[str, Callable[[dict, Path, np.random.Generator, int], list[dict]]] = {
    "cxr_dicom": cxr_dicom,
    "mammo_dicom": mammo_dicom,
    "xray_png": xray_png,
    "ct_dicom_series": ct_dicom_series,
    "nifti_volume": nifti_volume,
    "mrnet_npy": mrnet_npy,
}


def generate(spec: dict, out_dir: Path, seed: int) -> None:
    """Write one synthetic source (its config `access` block) and its labels.csv into out_dir."""
    name = spec.get("generator")
    if name not in GENERATORS:
        raise ConfigError(f"access.generator={name!r} is not a synthetic generator; choose one of {sorted(GENERATORS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    rows = GENERATORS[name](spec, out_dir, rng, seed)
    pd.DataFrame(rows).to_csv(out_dir / LABELS_FILE, index=False, lineterminator="\n")


def phi_strings(out_dir: Path) -> set[str]:
    """The PHI written into a generated source: identifying DICOM tags and raw patient ids."""
    out_dir = Path(out_dir)
    values: set[str] = set()
    for path in sorted(out_dir.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        values |= {str(ds.get(k)) for k in PHI_KEYWORDS if ds.get(k)}
    labels = out_dir / LABELS_FILE
    if labels.exists():
        ids = pd.read_csv(labels, dtype={"patient_id": str})["patient_id"]
        values |= {i for i in ids if len(i) >= MIN_PHI_ID_LENGTH}
    return values
