"""VerSe 2019: spine fracture per CT series, with the provided training/validation/test split.

Release layout (anjany/verse README, subject-based structure): dataset-verse19{training,validation,test}/
rawdata/sub-<subject>/sub-<subject>[_split-<series>]_ct.nii.gz, and derivatives/ (vertebra masks,
centroid JSON, PNG previews: not images to curate). A series is named by its `split-` entity, else
by its subject (neuro-ml/amid verse.py reads the ids the same way). The split is the release
folder: training 80 / validation 40 / test 40 series, the paper's 50/25/25.
Fracture labels: the per-vertebra Genant grades of Löffler et al. 2020 (OSF https://osf.io/nqjyw/)
are not inside the image archives, and the name and columns of that sheet are unverified
(docs/sources.md). This adapter reads them from `verse19_fracture_grades.csv` in the source root,
columns verse_id (e.g. verse004), vertebra (label as in the centroid JSON), genant_grade (0-3);
fracture = any vertebra of the series with grade >= 1 (docs/sources.md; aggregation unverified).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pandas as pd

from medlatent.curate.adapters import register
from medlatent.curate.adapters.base import Adapter, find_file, read_table, walk_files

GRADES = "verse19_fracture_grades.csv"
RELEASE = re.compile(r"verse19(training|validation|test)", re.IGNORECASE)
SPLITS = {"training": "train", "validation": "val", "test": "test"}
SERIES = re.compile(r"_split-([^_]+)_")
FIX = (
    f"write the VerSe'19 Genant grades (https://osf.io/nqjyw/) as {GRADES} into the source root, "
    "columns verse_id, vertebra, genant_grade"
)


@register("verse19")
class Verse19Adapter(Adapter):
    def is_metadata(self, relative_path: str) -> bool:
        return "derivatives" in PurePosixPath(relative_path).parts or super().is_metadata(relative_path)

    def label_table(self, root: Path) -> pd.DataFrame:
        path = find_file(root, (GRADES,), FIX)
        grades = read_table(path, ["verse_id", "vertebra", "genant_grade"], dtype={"verse_id": str})
        graded = pd.to_numeric(grades["genant_grade"], errors="coerce").fillna(0) >= 1
        fracture = graded.groupby(grades["verse_id"].str.strip().str.lower()).any().astype(int).to_dict()
        rows = []
        for relative in walk_files(root, ("_ct.nii.gz",)):
            parts = PurePosixPath(relative)
            if "rawdata" not in parts.parts or not parts.parent.name.startswith("sub-"):
                continue
            subject = parts.parent.name.removeprefix("sub-")
            named = SERIES.search(parts.name)
            series = (named.group(1) if named else subject).lower()
            release = RELEASE.search(relative)
            rows.append(
                {
                    "file": relative,
                    "patient_id": subject,
                    "split": SPLITS[release.group(1).lower()] if release else None,
                    "fracture": fracture.get(series),
                }
            )
        return pd.DataFrame(rows, columns=["file", "patient_id", "split", "fracture"])
