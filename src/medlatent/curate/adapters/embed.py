"""EMBED Open Data: standard 2D full-field mammograms only, with the patient of every image.

Release layout (Emory-HITI/EMBED_Open_Data README): <cohort>/<patient>/<study>/<SOPInstanceUID>.dcm
and tables/EMBED_OpenData_metadata.csv, one row per file: empi_anon (patient), anon_dicom_path,
FinalImageType (2D, C-view), ViewPosition, ImageLateralityFinal, spot_mag (1: spot compression or
magnification view). The FFDM filter FinalImageType == 2D and spot_mag == 0 is the one the
EMBED documentation proposes (docs/sources.md; MedVAE's own filter is unverified).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pandas as pd

from medlatent.curate.adapters import register
from medlatent.curate.adapters.base import Adapter, by_stem, find_file, flag_column, read_table, walk_files, with_files

METADATA = ("EMBED_OpenData_metadata.csv", "EMBED_OpenData_metadata_reduced.csv")
COLUMNS = ["empi_anon", "anon_dicom_path", "FinalImageType", "ViewPosition", "ImageLateralityFinal", "spot_mag"]


@register("embed")
class EmbedAdapter(Adapter):
    EXCLUDE_FLAGS = ("not_2d", "spot_mag")
    EXCLUSION_REASONS = {
        "not_2d": "FinalImageType is not 2D (a C-view synthesised from tomosynthesis): full-field 2D mammograms only",
        "spot_mag": "spot compression or magnification view (spot_mag 1): full-field mammograms only",
    }

    def label_table(self, root: Path) -> pd.DataFrame:
        path = find_file(root, METADATA, "fetch the tables/ folder of the bucket with the images")
        table = read_table(path, COLUMNS, dtype={"empi_anon": str, "anon_dicom_path": str})
        # anon_dicom_path is a path on Emory's servers; the file name (the SOP instance UID) is what matches.
        sop_uids = table["anon_dicom_path"].map(lambda p: PurePosixPath(str(p).replace("\\", "/")).stem)
        table = with_files(table, sop_uids, by_stem(walk_files(root, (".dcm",)), root), str(path))
        return pd.DataFrame(
            {
                "file": table["file"],
                "patient_id": table["empi_anon"],
                "view": table["ViewPosition"],
                "laterality": table["ImageLateralityFinal"],
                "not_2d": (table["FinalImageType"].astype(str).str.strip() != "2D").astype(int),
                "spot_mag": flag_column(table["spot_mag"]),
            }
        )
