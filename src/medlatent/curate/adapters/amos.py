"""AMOS 2022: the CT volumes only, one patient per case; segmentation masks are not images.

Release layout (Zenodo 7262581, docs/sources.md): amos22/{imagesTr,imagesVa,imagesTs}/amos_<id>.nii.gz,
masks in labelsTr/labelsVa. Cases with id <= 500 are CT, the others MRI (AMOS' own numbering, as
docs/sources.md records it; the metadata sheet is not needed to tell them apart).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pandas as pd

from medlatent.curate.adapters import register
from medlatent.curate.adapters.base import Adapter, walk_files

LAST_CT_ID = 500
CASE = re.compile(r"amos_(\d+)\.nii\.gz", re.IGNORECASE)


@register("amos")
class AmosAdapter(Adapter):
    EXCLUDE_FLAGS = ("not_ct",)
    EXCLUSION_REASONS = {"not_ct": f"AMOS case id above {LAST_CT_ID}: an MRI volume in the CT source"}

    def is_metadata(self, relative_path: str) -> bool:
        in_masks = any(part.lower().startswith("labels") for part in PurePosixPath(relative_path).parts[:-1])
        return in_masks or super().is_metadata(relative_path)

    def label_table(self, root: Path) -> pd.DataFrame:
        rows = []
        for relative in walk_files(root, (".nii.gz",)):
            match = CASE.fullmatch(PurePosixPath(relative).name)
            if match and not self.is_metadata(relative):
                case = int(match.group(1))
                rows.append({"file": relative, "patient_id": f"amos_{case:04d}", "not_ct": int(case > LAST_CT_ID)})
        return pd.DataFrame(rows, columns=["file", "patient_id", "not_ct"])
