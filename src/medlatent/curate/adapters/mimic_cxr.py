"""MIMIC-CXR: the view of every image and the official patient-disjoint split.

Release layout (PhysioNet mimic-cxr-jpg/2.1.0; the DICOM release mimic-cxr/2.0.0 is the same
with .dcm): files/pXX/p<subject_id>/s<study_id>/<dicom_id>.jpg, mimic-cxr-2.0.0-metadata.csv.gz
(dicom_id, subject_id, ViewPosition: PA, AP, LATERAL, LL, ...) and mimic-cxr-2.0.0-split.csv.gz
(dicom_id, split: train / validate / test). Names from docs/sources.md; the split values
from the MIMIC-CXR-JPG PhysioNet project page. Which views are kept is config (`curation.views`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medlatent.curate.adapters import register
from medlatent.curate.adapters.base import Adapter, by_stem, find_file, read_table, recode, walk_files, with_files

METADATA = ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-metadata.csv")
SPLIT = ("mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv")
SPLITS = {"train": "train", "validate": "val", "test": "test"}
FIX = "fetch the whole PhysioNet project (the metadata tables sit at its top level)"


@register("mimic_cxr")
class MimicCxrAdapter(Adapter):
    def label_table(self, root: Path) -> pd.DataFrame:
        metadata_path, split_path = find_file(root, METADATA, FIX), find_file(root, SPLIT, FIX)
        metadata = read_table(metadata_path, ["dicom_id", "subject_id", "ViewPosition"], dtype=str)
        split = read_table(split_path, ["dicom_id", "split"], dtype=str)
        table = metadata.merge(split[["dicom_id", "split"]], on="dicom_id", how="left")
        images = by_stem(walk_files(root, (".jpg", ".dcm")), root)
        table = with_files(table, table["dicom_id"], images, str(metadata_path))
        return pd.DataFrame(
            {
                "file": table["file"],
                "patient_id": table["subject_id"],
                "view": table["ViewPosition"],
                "split": recode(table["split"], SPLITS, split_path, "split"),
            }
        )
