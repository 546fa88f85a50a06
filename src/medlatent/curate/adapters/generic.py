"""Generic adapter: a label table (default labels.csv) with a `file` column, if present."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medlatent.core.errors import InputError
from medlatent.curate.adapters.base import Adapter


class GenericAdapter(Adapter):
    def label_table(self, root: Path) -> pd.DataFrame:
        name = self.curation.get("labels")
        if not name or not (root / name).exists():
            return super().label_table(root)
        path = root / name
        table = pd.read_csv(path, dtype={"file": str, "patient_id": str})
        if "file" not in table.columns:
            raise InputError(
                path, "label table has no 'file' column", "add a column `file` with paths relative to the source root"
            )
        return table
