"""CQ500: head fracture by majority of the three readers, one plain series per study.

Release layout (qure.ai, docs/sources.md): CQ500-CT-<n>.zip holding
`CQ500CT<n> CQ500CT<n>/Unknown Study/<series name>/CT*.dcm`, and reads.csv with `name`
(CQ500-CT-<n>) and per reader R1/R2/R3 columns such as `R1:Fracture` (0/1).
fracture = at least two of R1:Fracture, R2:Fracture, R3:Fracture (docs/sources.md: aggregation
unverified). A study holds several reconstructions (thin, bone kernel, contrast); the paper
does not say which it used, so ours is one plain soft-tissue series per study: the first by
name without BONE, THIN, CONTRAST or 0.625 in it (the first of all if every name has one).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path, PurePosixPath

import pandas as pd

from medlatent.curate.adapters import register
from medlatent.curate.adapters.base import Adapter, find_file, read_table, walk_files

READERS = ("R1:Fracture", "R2:Fracture", "R3:Fracture")
NOT_PLAIN = ("BONE", "THIN", "CONTRAST", "0.625")
STUDY = re.compile(r"CQ500-?CT-?(\d+)", re.IGNORECASE)


@register("cq500")
class Cq500Adapter(Adapter):
    EXCLUDE_FLAGS = ("other_series",)
    EXCLUSION_REASONS = {
        "other_series": "another series of the same CQ500 study is kept (one plain soft-tissue series per study)"
    }

    def label_table(self, root: Path) -> pd.DataFrame:
        path = find_file(root, ("reads.csv",), "fetch reads.csv with the study archives")
        reads = read_table(path, ["name", *READERS], dtype={"name": str})
        votes = reads[list(READERS)].apply(pd.to_numeric, errors="coerce").fillna(0).astype(int).sum(axis=1)
        fracture = dict(zip(reads["name"].str.strip(), (votes >= 2).astype(int)))
        rows = []
        for study, series in _series_by_study(root).items():
            kept = _plain_series(series)
            rows += [
                {"file": s, "patient_id": study, "fracture": fracture.get(study), "other_series": int(s != kept)}
                for s in series
            ]
        return pd.DataFrame(rows, columns=["file", "patient_id", "fracture", "other_series"])


def _series_by_study(root: Path) -> dict[str, list[str]]:
    """Series folders (relative paths) grouped by the study named in their path."""
    studies: dict[str, set[str]] = defaultdict(set)
    for relative in walk_files(root, (".dcm",)):
        folder = PurePosixPath(relative).parent
        match = STUDY.search(str(folder))  # the archive folder and the study folder both carry <n>
        if match:
            studies[f"CQ500-CT-{int(match.group(1))}"].add(str(folder))
    return {study: sorted(series) for study, series in sorted(studies.items())}


def _plain_series(series: list[str]) -> str:
    plain = [s for s in series if not any(word in PurePosixPath(s).name.upper() for word in NOT_PLAIN)]
    return (plain or series)[0]
