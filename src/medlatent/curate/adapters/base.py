"""The adapter interface shared by the generic and the dataset-specific adapters, and their helpers.

The helpers find a release's own files wherever extraction nested them (an archive lands in
files/<archive stem>/, often with its own top folder again), read its tables with errors
that name the file and the column, and attach image paths to table rows.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import pandas as pd

from medlatent.core.errors import InputError
from medlatent.fetch.transfer import included

log = logging.getLogger(__name__)

#: Columns of a label table that describe the item rather than label it.
RESERVED_COLUMNS = ("file", "patient_id", "split", "view", "laterality", "projection")
#: Suffixes of files that describe a dataset (label tables, metadata) rather than image it.
METADATA_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".json", ".xlsx", ".xls", ".xml", ".md")
#: What a table-reading error tells the user to do.
AS_PUBLISHED = "use the file as the dataset publishes it (unedited), or re-download it"


class Adapter:
    """Reads a dataset's own label files; subclasses override what differs."""

    #: Label-table columns whose true value drops the item; the config's `exclude_flags` add to them.
    EXCLUDE_FLAGS: tuple[str, ...] = ()
    #: Why an item carrying a flag is dropped (the `reason` in rejected.parquet).
    EXCLUSION_REASONS: dict[str, str] = {}

    def __init__(self, curation: dict) -> None:
        self.curation = curation
        self.exclude_flags: list[str] = list(dict.fromkeys([*self.EXCLUDE_FLAGS, *curation.get("exclude_flags", [])]))

    def is_metadata(self, relative_path: str) -> bool:
        """Files that are part of the release but are not images to curate: label tables,
        sidecars, and whatever `curation.include` globs leave out (e.g. segmentation masks)."""
        if not included(relative_path, self.curation.get("include")):
            return True
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

    def exclusion_reason(self, flag: str) -> str:
        return self.EXCLUSION_REASONS.get(flag, f"label table marks the image with {flag}")


# ----------------------------------------------------------------------------- finding files


def walk_files(root: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Relative POSIX paths of the files under `root` ending in one of `suffixes` (any case), sorted."""
    found = []
    for folder, _, names in os.walk(root):
        relative = Path(folder).relative_to(root)
        found += [(relative / name).as_posix() for name in names if name.lower().endswith(suffixes)]
    return sorted(found)


def find_file(root: Path, names: tuple[str, ...], fix: str) -> Path:
    """The one file under `root` called one of `names` (earlier names win), at any depth."""
    found: dict[str, list[Path]] = {name: [] for name in names}
    for folder, _, files in os.walk(root):
        for name in set(files) & found.keys():
            found[name].append(Path(folder) / name)
    for name in names:
        if len(found[name]) > 1:
            listed = ", ".join(str(p.relative_to(root)) for p in sorted(found[name]))
            raise InputError(root, f"{len(found[name])} files named {name}: {listed}", "keep one copy of the release")
        if found[name]:
            return found[name][0]
    raise InputError(root, f"{' or '.join(names)} not found under the source root", fix)


def by_stem(files: list[str], root: Path) -> dict[str, str]:
    """File name without its last suffix -> relative path; datasets name images by their id."""
    index: dict[str, str] = {}
    for relative in files:
        stem = Path(relative).stem
        if stem in index:
            raise InputError(
                root, f"two images are named {stem}: {index[stem]} and {relative}", "keep one copy of the release"
            )
        index[stem] = relative
    return index


# ----------------------------------------------------------------------------- reading tables


def read_table(path: Path, columns: list[str], **options) -> pd.DataFrame:
    """A CSV (plain or .gz) or Excel sheet that must have `columns`; InputError names what is missing."""
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            table = pd.read_excel(path, **options)
        else:
            table = pd.read_csv(path, **options)
    except ImportError as error:  # pandas needs openpyxl for .xlsx
        raise InputError(
            path,
            f"cannot read a spreadsheet ({error})",
            f"pip install openpyxl, or save the sheet as CSV named {path.stem}.csv beside it",
        ) from None
    except (ValueError, OSError, UnicodeDecodeError, zipfile.BadZipFile) as error:  # an .xlsx is a ZIP archive
        raise InputError(path, f"unreadable table ({type(error).__name__}: {error})", AS_PUBLISHED) from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(path, f"missing column(s) {missing}; it has {list(table.columns)}", AS_PUBLISHED)
    return table


def recode(values: pd.Series, codes: dict, path: Path, column: str) -> pd.Series:
    """Dataset codes -> our values (matched as trimmed lower-case text); blanks stay None.

    An unknown code means the release changed its coding: an error, never a silent NaN.
    """
    by_text = {str(code).strip().lower(): value for code, value in codes.items()}
    text = values.map(lambda v: None if pd.isna(v) else str(v).strip().lower())
    unknown = sorted(set(text.dropna()) - by_text.keys())
    if unknown:
        raise InputError(
            path, f"column {column} has unexpected value(s) {unknown[:8]}; expected {sorted(by_text)}", AS_PUBLISHED
        )
    return text.map(lambda t: None if t is None else by_text[t])


def flag_column(values: pd.Series) -> pd.Series:
    """0/1 from a marker column that holds 1 where true and is blank (or 0) elsewhere."""
    return pd.to_numeric(values, errors="coerce").fillna(0).astype(int).clip(0, 1)


def with_files(table: pd.DataFrame, keys: pd.Series, index: dict[str, str], what: str) -> pd.DataFrame:
    """`table` with a `file` column from `index[key]`; rows whose image is not on disk are dropped.

    A partial fetch (access.include, an interrupted download) is normal, so missing images
    are counted in the log, not raised.
    """
    files = keys.astype(str).map(index)
    present = files.notna()
    if not present.all():
        log.info("%s: %d of %d rows have no image on disk and are skipped", what, int((~present).sum()), len(table))
    table = table.loc[present].copy()
    table.insert(0, "file", files[present])
    if table["file"].duplicated().any():
        raise InputError(what, f"{int(table['file'].duplicated().sum())} images are listed twice", AS_PUBLISHED)
    return table.reset_index(drop=True)
