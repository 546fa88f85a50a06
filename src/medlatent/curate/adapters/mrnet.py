"""MRNet: ACL and meniscal tears per exam, all three planes, with the provided train/valid split.

Release layout (MRNet-v1.0, docs/sources.md): {train,valid}/{axial,coronal,sagittal}/<case>.npy
and {train,valid}-{acl,meniscus}.csv beside those folders, no header, rows `case,label`. Labels:
acl, meniscus and acl_or_meniscus (the single "ACL/meniscal tear" task of the paper's Table 1).
MRNet's own test set is hidden, so its public validation set is the held-out test split, as in
every paper that reports on MRNet.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pandas as pd

from medlatent.core.errors import InputError
from medlatent.curate.adapters import register
from medlatent.curate.adapters.base import Adapter, find_file, read_table, walk_files

FOLDERS = {"train": "train", "valid": "test"}
TEARS = ("acl", "meniscus")
PLANES = ("axial", "coronal", "sagittal")
FIX = "fetch the whole MRNet-v1.0 folder"


@register("mrnet")
class MrnetAdapter(Adapter):
    def label_table(self, root: Path) -> pd.DataFrame:
        release = find_file(root, ("train-acl.csv",), FIX).parent
        labels = pd.concat([_labels(release, folder) for folder in FOLDERS])
        volumes = []
        for relative in walk_files(release, (".npy",)):
            parts = PurePosixPath(relative).parts
            if len(parts) == 3 and parts[0] in FOLDERS and parts[1] in PLANES and Path(relative).stem.isdigit():
                volumes.append(
                    {
                        "folder": parts[0],
                        "case": int(Path(relative).stem),
                        "file": (release.relative_to(root) / relative).as_posix(),
                    }
                )
        table = pd.DataFrame(volumes, columns=["folder", "case", "file"]).merge(
            labels, on=["folder", "case"], how="inner"
        )
        table["acl_or_meniscus"] = table[list(TEARS)].max(axis=1)
        table["patient_id"] = table["case"].map("{:04d}".format)
        table["split"] = table["folder"].map(FOLDERS)
        return table[["file", "patient_id", "split", *TEARS, "acl_or_meniscus"]]


def _labels(release: Path, folder: str) -> pd.DataFrame:
    """case, acl, meniscus of one folder; both tables must list the same cases."""
    tables = []
    for tear in TEARS:
        path = release / f"{folder}-{tear}.csv"
        if not path.is_file():
            raise InputError(path, "label table missing", FIX)
        tables.append(read_table(path, ["case", tear], header=None, names=["case", tear], dtype=int).set_index("case"))
    joined = tables[0].join(tables[1], how="outer")
    if joined.isna().any().any():
        raise InputError(
            release / f"{folder}-{TEARS[1]}.csv",
            f"the {folder} label tables list different cases",
            "use the label tables as published",
        )
    return joined.astype(int).reset_index().assign(folder=folder)
