"""GRAZPEDWRI-DX: visible fracture per wrist radiograph; images with metal or a cast are dropped.

Release layout (figshare 14825193): images_part1..4.zip of <filestem>.png and dataset.csv, one row
per image: filestem, patient_id, laterality, projection, fracture_visible, metal, cast (markers:
1 or blank). Column names from docs/sources.md (3rd-party code). MedVAE removes the
samples with metal hardware and casts (sec 4.4); the 75/25 patient split is config.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medlatent.curate.adapters import register
from medlatent.curate.adapters.base import Adapter, by_stem, find_file, flag_column, read_table, walk_files, with_files

COLUMNS = ["filestem", "patient_id", "laterality", "projection", "fracture_visible", "metal", "cast"]


@register("grazpedwri_dx")
class GrazpedwriDxAdapter(Adapter):
    EXCLUDE_FLAGS = ("metal", "cast")
    EXCLUSION_REASONS = {
        "metal": "metal hardware in the image (dataset.csv metal = 1); MedVAE removes these",
        "cast": "a cast over the wrist (dataset.csv cast = 1); MedVAE removes these",
    }

    def label_table(self, root: Path) -> pd.DataFrame:
        path = find_file(root, ("dataset.csv",), "fetch dataset.csv with the image archives")
        table = read_table(
            path, COLUMNS, dtype={"filestem": str, "patient_id": str, "laterality": str, "projection": str}
        )
        table = with_files(table, table["filestem"].str.strip(), by_stem(walk_files(root, (".png",)), root), str(path))
        return pd.DataFrame(
            {
                "file": table["file"],
                "patient_id": table["patient_id"],
                "laterality": table["laterality"],
                "projection": table["projection"],
                "fracture": flag_column(table["fracture_visible"]),
                "metal": flag_column(table["metal"]),
                "cast": flag_column(table["cast"]),
            }
        )
