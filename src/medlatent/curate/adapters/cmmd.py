"""CMMD: malignancy and calcification per breast, joined to the images through their DICOM headers.

Release layout: the TCIA collection CMMD as series folders of DICOM files (our tcia fetcher:
<SeriesInstanceUID>/1-1.dcm), plus CMMD_clinicaldata_revision.xlsx, downloaded separately from
the collection page, one row per breast: ID1 (patient, = DICOM PatientID), LeftRight (L/R, =
DICOM ImageLaterality), abnormality (calcification / mass / both), classification (Benign /
Malignant). Names from docs/sources.md; a CSV export of the sheet is read too.
Labels: malignancy = classification is Malignant; calcification = abnormality is calcification
or both. The 80/20 patient split is config (`split.fractions`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medlatent import io
from medlatent.core.errors import InputError
from medlatent.curate.adapters import register
from medlatent.curate.adapters.base import Adapter, find_file, read_table, recode, walk_files

CLINICAL = ("CMMD_clinicaldata_revision.xlsx", "CMMD_clinicaldata_revision.csv")
MALIGNANCY = {"Benign": 0, "Malignant": 1}
CALCIFICATION = {"calcification": 1, "both": 1, "mass": 0}
FIX = (
    "download CMMD_clinicaldata_revision.xlsx from https://www.cancerimagingarchive.net/collection/cmmd/ "
    "into the source root"
)


@register("cmmd")
class CmmdAdapter(Adapter):
    def label_table(self, root: Path) -> pd.DataFrame:
        path = find_file(root, CLINICAL, FIX)
        clinical = read_table(path, ["ID1", "LeftRight", "abnormality", "classification"], dtype=str)
        breasts = pd.DataFrame(
            {
                "patient_id": clinical["ID1"].str.strip(),
                "laterality": clinical["LeftRight"].str.strip().str.upper(),
                "malignancy": recode(clinical["classification"], MALIGNANCY, path, "classification"),
                "calcification": recode(clinical["abnormality"], CALCIFICATION, path, "abnormality"),
            }
        )
        if breasts.duplicated(["patient_id", "laterality"]).any():
            raise InputError(
                path, "a breast (ID1, LeftRight) is listed twice", "use the revised clinical sheet as published"
            )
        return _image_sides(root).merge(breasts, on=["patient_id", "laterality"], how="inner")


def _image_sides(root: Path) -> pd.DataFrame:
    """Patient and breast side of every readable DICOM image; unreadable ones are left to curation."""
    rows = []
    for relative in walk_files(root, (".dcm",)):
        try:
            header = io.read_header(root / relative)
        except InputError:
            continue  # curation reads it again and rejects it with the reason
        if header.patient_id and header.laterality:
            rows.append({"file": relative, "patient_id": header.patient_id, "laterality": header.laterality.upper()})
    return pd.DataFrame(rows, columns=["file", "patient_id", "laterality"])
