"""RSNA Screening Mammography (Kaggle rsna-breast-cancer-detection): patient, view and side per image.

Release layout (docs/sources.md): train.csv (patient_id, image_id, laterality, view, cancer,
...) and train_images/<patient_id>/<image_id>.dcm. No image is dropped: the sources survey gives
no MedVAE filter for this set; `curation.views` can add one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medlatent.curate.adapters import register
from medlatent.curate.adapters.base import Adapter, by_stem, find_file, read_table, walk_files, with_files


@register("rsna_screening_mammo")
class RsnaScreeningMammoAdapter(Adapter):
    def label_table(self, root: Path) -> pd.DataFrame:
        path = find_file(
            root,
            ("train.csv",),
            "fetch the whole competition (kaggle competitions download -c rsna-breast-cancer-detection)",
        )
        table = read_table(path, ["patient_id", "image_id", "laterality", "view"], dtype=str)
        table = with_files(table, table["image_id"], by_stem(walk_files(root, (".dcm",)), root), str(path))
        return table[["file", "patient_id", "view", "laterality"]]
