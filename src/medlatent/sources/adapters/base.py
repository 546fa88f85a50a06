"""The adapter interface shared by the generic and the dataset-specific adapters."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

#: Columns of a label table that describe the item rather than label it.
RESERVED_COLUMNS = ("file", "patient_id", "split", "view", "laterality", "projection")
#: Suffixes of files that describe a dataset (label tables, metadata) rather than image it.
METADATA_SUFFIXES = (".csv", ".tsv", ".json", ".xlsx", ".xls", ".xml", ".md")


class Adapter:
    """Reads a dataset's own label files; subclasses override what differs."""

    def __init__(self, curation: dict) -> None:
        self.curation = curation
        self.exclude_flags: list[str] = list(curation.get("exclude_flags", []))

    def is_metadata(self, relative_path: str) -> bool:
        """Files that are part of the release but are not images (label tables, sidecars)."""
        return relative_path.lower().endswith(METADATA_SUFFIXES)

    def label_table(self, root: Path) -> pd.DataFrame:
        """One row per item path (`file`, relative to root); may be empty."""
        return pd.DataFrame({"file": pd.Series(dtype=str)})

    def label_columns(self, table: pd.DataFrame) -> list[str]:
        return [c for c in table.columns if c not in RESERVED_COLUMNS and c not in self.exclude_flags]

    def exclusion(self, row: pd.Series | None) -> str | None:
        """Dataset-specific reason to drop a labelled item (e.g. metal or cast in the image)."""
        if row is None:
            return None
        for flag in self.exclude_flags:
            if flag in row and bool(row[flag]) and not pd.isna(row[flag]):
                return flag
        return None
