"""VinDr-Mammo: BI-RADS per breast (5 classes) and the provided training/test split.

Release layout (PhysioNet vindr-mammo/1.0.0, docs/sources.md): images/<study_id>/<image_id>.dicom
and breast-level_annotations.csv, one row per image: study_id, image_id, laterality, view_position,
breast_birads ('BI-RADS 1' .. 'BI-RADS 5'), split (training / test). The published BI-RADS text is
kept as the label: sorted, it is the class order. The release has no patient id; one study is
one woman's exam, so the study is the patient.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medlatent.curate.adapters import register
from medlatent.curate.adapters.base import Adapter, by_stem, find_file, read_table, recode, walk_files, with_files

ANNOTATIONS = "breast-level_annotations.csv"
SPLITS = {"training": "train", "test": "test"}
BIRADS = {f"BI-RADS {k}": f"BI-RADS {k}" for k in range(1, 6)}


@register("vindr_mammo")
class VindrMammoAdapter(Adapter):
    def label_table(self, root: Path) -> pd.DataFrame:
        path = find_file(root, (ANNOTATIONS,), "fetch the whole PhysioNet project vindr-mammo/1.0.0")
        table = read_table(
            path, ["study_id", "image_id", "laterality", "view_position", "breast_birads", "split"], dtype=str
        )
        table = with_files(table, table["image_id"], by_stem(walk_files(root, (".dicom", ".dcm")), root), str(path))
        return pd.DataFrame(
            {
                "file": table["file"],
                "patient_id": table["study_id"],
                "view": table["view_position"],
                "laterality": table["laterality"],
                "split": recode(table["split"], SPLITS, path, "split"),
                "birads": recode(table["breast_birads"], BIRADS, path, "breast_birads"),
            }
        )
