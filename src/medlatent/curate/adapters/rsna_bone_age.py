"""RSNA Pediatric Bone Age: 20 one-year bone-age classes, the provided training/validation split.

Release layout: boneage-training-dataset.csv (id, boneage [months], male) with the images in
boneage-training-dataset/<id>.png (docs/sources.md), and the validation set's
`Validation Dataset.csv` (Image ID, male, Bone Age (months)) with its images in
boneage-validation-dataset-1/ and -2/ (names as the RSNA release ships them; the columns as
3rd-party code reads them: dataset-ninja/rsna-bone-age src/convert.py). The paper's split is
the provided one: 12,611 training images -> train, 1,425 validation images -> test; the 200
test images carry no bone age and stay unlabelled. Classes: bone age in whole years, 0..19
(228 months, the oldest, is 19 years); the paper gives 20 classes but not the binning, so
the yearly bins are ours. The release has no patient id: each image is its own patient.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from medlatent.curate.adapters import register
from medlatent.curate.adapters.base import Adapter, by_stem, find_file, read_table, walk_files, with_files

#: (label table, its id and bone-age columns, folder prefix of its images, our split)
SETS = (
    ("boneage-training-dataset.csv", "id", "boneage", "boneage-training-dataset", "train"),
    ("Validation Dataset.csv", "Image ID", "Bone Age (months)", "boneage-validation-dataset", "test"),
)
CLASSES = 20
FIX = "fetch the training and the validation set with their label tables"


@register("rsna_bone_age")
class RsnaBoneAgeAdapter(Adapter):
    def label_table(self, root: Path) -> pd.DataFrame:
        images = walk_files(root, (".png",))
        tables = []
        for name, id_column, age_column, folder, split in SETS:
            path = find_file(root, (name,), FIX)
            table = read_table(path, [id_column, age_column], dtype={id_column: str})
            inside = [f for f in images if any(part.startswith(folder) for part in PurePosixPath(f).parts[:-1])]
            table = with_files(table, table[id_column].str.strip(), by_stem(inside, root), str(path))
            months = pd.to_numeric(table[age_column], errors="coerce")
            tables.append(
                pd.DataFrame(
                    {
                        "file": table["file"],
                        "patient_id": table[id_column].str.strip(),
                        "split": split,
                        "boneage_class": np.clip(months // 12, 0, CLASSES - 1).astype("Int64"),
                    }
                )
            )
        return pd.concat(tables, ignore_index=True)
