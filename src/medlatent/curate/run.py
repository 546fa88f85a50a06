"""Curation of one source: every fetched file is either kept as an item or rejected with a reason.

Items are 2D images or 3D volumes (a NIfTI/NPY file, a directory of DICOM slices, or an
Enhanced CT/MR multi-frame DICOM file). In a 2D source a multi-frame file is rejected, unless
`curation.frames: each` keeps each frame as an item of its own. Colour images become grey by
`io.types.COLOUR_RULE` (recorded in the manifest's `colour_rule`), or are rejected where
`curation.colour: reject`. Each file gets a salted `file_key` (`ids.salted_key`), each kept item
a stable dot-free `item_id` made of it, a salted `patient_key`, a patient-level split and a
split-pure shard. Outputs:
- manifest.parquet: one row per kept item, PHI-free (no paths, no raw ids, no dates);
- rejected.parquet: one row per rejected file: file_key, category, reason;
- report.json: counts per filter; found == kept + rejected;
- files_index.parquet (under data/raw): file_key -> path (and frame), because real file names
  can carry patient ids; `path_bytes` holds the exact bytes of a name that is not UTF-8.

Every step that touches a file runs under one guard per file: any error becomes a rejection
with a category, whose reason names the problem and the library's error type, never a path,
a name or the file's bytes. Entries the fetch refused to open (links leaving the root,
dangling links, loops, special files) are rejected under their own category. What a file
declares is checked against the decode budget before it is decoded (category `too_large`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from medlatent import io
from medlatent.core import ids, rawpaths
from medlatent.core.atomic import atomic_path, write_text
from medlatent.core.errors import InputError, library_error
from medlatent.curate.adapters import get_adapter
from medlatent.fetch.receipt import REFUSED
from medlatent.io.budget import DEFAULT_BUDGET, DecodeBudget, TooLargeError
from medlatent.io.types import COLOUR_RULE, HeaderInfo, is_colour

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurationOutputs:
    manifest: Path
    rejected: Path
    report: Path
    files_index: Path


@dataclass
class Candidate:
    """A file, a directory of DICOM slices, or one frame of a multi-frame file, that may become one item."""

    relative_path: str
    n_files: int = 1
    frame: int | None = None
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = ids.file_key(
            self.relative_path if self.frame is None else f"{self.relative_path}#frame={self.frame}"
        )


@dataclass
class Outcome:
    candidate: Candidate
    record: dict | None = None
    category: str | None = None
    reason: str | None = None


def find_candidates(
    root: Path, files: list[str], dims: int, adapter, budget: DecodeBudget
) -> tuple[list[Candidate], list[str]]:
    """Group fetched files into candidate items; metadata files are returned separately.

    For 3D sources every directory holding single-frame DICOM files is one candidate series;
    a multi-frame DICOM file, and any file whose header cannot be read, is a candidate of its own.
    """
    metadata = [f for f in files if adapter.is_metadata(f)]
    images = [f for f in files if not adapter.is_metadata(f)]
    if dims == 2:
        return [Candidate(f) for f in images], metadata
    series: Counter[str] = Counter()
    singles = []
    for relative in images:
        if io.dicom.is_series_slice(root / relative, budget):
            series[str(Path(relative).parent)] += 1
        else:
            singles.append(Candidate(relative))
    return singles + [Candidate(d, n) for d, n in sorted(series.items())], metadata


class Curator:
    """Applies one source's curation slice to its fetched files."""

    def __init__(self, spec: dict, salt: str, root: Path, budget: DecodeBudget) -> None:
        self.spec = spec
        self.source_id = spec["id"]
        self.curation = spec["curation"]
        self.salt = salt
        self.root = root
        self.budget = budget
        self.adapter = get_adapter(self.curation)
        self.labels = self.adapter.label_table(root).set_index("file", drop=False)
        self.label_columns = self.adapter.label_columns(self.labels)

    def file_key(self, candidate: Candidate) -> str:
        """The candidate's salted key: its `file_key` in every output (the unsalted one is never written)."""
        return ids.salted_key(self.salt, self.source_id, candidate.key)

    def inspect_guarded(self, candidate: Candidate) -> list[Outcome]:
        """`inspect`, with any crash while reading the file turned into a rejection naming the error."""
        try:
            return self.inspect(candidate)
        except Exception as error:  # noqa: BLE001 - one file a decoder chokes on must not end a whole source
            return [Outcome(candidate, category="crashed", reason=f"{library_error(error)} while reading it")]

    def inspect(self, candidate: Candidate) -> list[Outcome]:
        """The outcome of a candidate: one, or one per frame where `curation.frames: each`."""
        path = self.root / candidate.relative_path
        try:
            header = io.read_header(path, self.budget)
        except InputError as error:
            return [_rejection(candidate, error, "unreadable")]
        if self.spec["dims"] == 2 and header.frames > 1:
            if self.curation["frames"] != "each":
                reason = (
                    f"multi-frame DICOM ({header.frames} frames) in a 2D source; "
                    "curation.frames: each keeps every frame as an item"
                )
                return [Outcome(candidate, category="multi_frame", reason=reason)]
            frame_header = io.dicom.frame_header(header)
            return [
                self._inspect_one(Candidate(candidate.relative_path, frame=k), frame_header)
                for k in range(header.frames)
            ]
        return [self._inspect_one(candidate, header)]

    def _inspect_one(self, candidate: Candidate, header: HeaderInfo) -> Outcome:
        if header.dims != self.spec["dims"]:
            return Outcome(
                candidate, category="wrong_dims", reason=f"{header.dims}D image in a {self.spec['dims']}D source"
            )
        label_row = self.labels.loc[candidate.relative_path] if candidate.relative_path in self.labels.index else None
        filtered = self._filter(header, label_row)
        if filtered:
            return Outcome(candidate, category=filtered[0], reason=filtered[1])
        if self.spec["decode_check"]:
            try:
                io.read_image(self.root / candidate.relative_path, frame=candidate.frame, budget=self.budget)
            except InputError as error:
                return _rejection(candidate, error, "undecodable")
        return Outcome(candidate, record=self._record(candidate, header, label_row))

    def _filter(self, header, label_row) -> tuple[str, str] | None:
        if self.curation["colour"] == "reject" and is_colour(header.photometric):
            return "filtered_colour", f"colour image ({header.photometric}) and curation.colour is reject"
        view = _first_present(label_row, "view") or header.view_position
        views = self.curation.get("views")
        if views and view not in views:
            return "filtered_view", f"view {view or 'unknown'} not in {views}"
        intents = self.curation.get("presentation_intent")
        if intents and header.presentation_intent and header.presentation_intent not in intents:
            return "filtered_presentation_intent", f"presentation intent {header.presentation_intent} not in {intents}"
        flag = self.adapter.exclusion(label_row)
        if flag:
            return f"filtered_{flag}", self.adapter.exclusion_reason(flag)
        return None

    def _record(self, candidate: Candidate, header, label_row) -> dict:
        raw_patient = (
            _first_present(label_row, "patient_id") or header.patient_id or rawpaths.printable(candidate.relative_path)
        )
        record = {
            "item_id": ids.item_id(self.source_id, self.file_key(candidate)),
            "file_key": self.file_key(candidate),
            "source": self.source_id,
            "modality": self.spec["modality"],
            "dims": header.dims,
            "patient_key": ids.patient_key(self.salt, self.source_id, str(raw_patient)),
            "shape": [int(s) for s in header.shape],
            "spacing": [float(s) for s in header.spacing] if header.spacing else None,
            "view": _first_present(label_row, "view") or header.view_position,
            "laterality": _first_present(label_row, "laterality") or header.laterality,
            "provided_split": _first_present(label_row, "split"),
            "frame": candidate.frame,
            "colour_rule": COLOUR_RULE if is_colour(header.photometric) else None,
        }
        for column in self.label_columns:
            value = None if label_row is None else label_row[column]
            record[f"label_{column}"] = None if value is None or pd.isna(value) else value
        return record

    def assign_splits(self, manifest: pd.DataFrame) -> pd.DataFrame:
        split_spec = self.spec["split"]

        def split_of(row) -> str:
            if split_spec["method"] == "provided" and row["provided_split"]:
                name = str(row["provided_split"]).lower()
                if name in ids.PROVIDED_SPLIT_NAMES:
                    return ids.PROVIDED_SPLIT_NAMES[name]
            return ids.patient_split(self.spec["seed"], row["patient_key"], split_spec["fractions"])

        manifest["split"] = manifest.apply(split_of, axis=1)
        manifest["shard"] = [
            ids.shard_of(item, split, self.spec["shards"][split])
            for item, split in zip(manifest["item_id"], manifest["split"])
        ]
        return manifest.drop(columns="provided_split")


def _rejection(candidate: Candidate, error: InputError, category: str) -> Outcome:
    """A reader's refusal as a rejection: `too_large` when over the decode budget, else `category`."""
    return Outcome(
        candidate, category="too_large" if isinstance(error, TooLargeError) else category, reason=error.reason
    )


def _first_present(row, column: str):
    if row is None or column not in row or pd.isna(row[column]):
        return None
    return str(row[column])


#: The Curator of a pool worker, built once per process by `_start_worker` (the label table is not resent per file).
_worker_curator: Curator | None = None


def _start_worker(spec: dict, salt: str, root: Path, budget: DecodeBudget) -> None:
    global _worker_curator
    _worker_curator = Curator(spec, salt, root, budget)


def _inspect_in_worker(candidate: Candidate) -> list[Outcome]:
    return _worker_curator.inspect_guarded(candidate)


def _pool(curator: Curator, workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        workers, initializer=_start_worker, initargs=(curator.spec, curator.salt, curator.root, curator.budget)
    )


def _inspect_isolated(curator: Curator, candidate: Candidate) -> list[Outcome]:
    """A candidate inspected in a process of its own, so a decoder that kills the process rejects only this file."""
    with _pool(curator, 1) as pool:
        try:
            return pool.submit(_inspect_in_worker, candidate).result()
        except BrokenProcessPool:
            reason = "the process reading it died (a crash in a decoder); the file is likely corrupt"
            return [Outcome(candidate, category="crashed", reason=reason)]


def inspect_all(curator: Curator, candidates: list[Candidate], workers: int) -> Iterator[list[Outcome]]:
    """The outcomes of every candidate, in input order; `workers` > 1 spreads them over a process pool.

    When a worker process dies, the candidates that may have been in flight are inspected one
    process each (the one that dies again is rejected), then the pool resumes after them.
    """
    if workers <= 1 or len(candidates) <= 1:
        yield from map(curator.inspect_guarded, candidates)
        return
    # chunks amortise the inter-process round trip over files that take ~10 ms each
    chunksize = max(1, min(64, len(candidates) // (workers * 8)))
    # chunks a pool can hold at once: one running per worker, workers + 1 queued
    in_flight = (2 * workers + 1) * chunksize
    done = 0
    while done < len(candidates):
        try:
            with _pool(curator, workers) as pool:
                for outcomes in pool.map(_inspect_in_worker, candidates[done:], chunksize=chunksize):
                    yield outcomes
                    done += 1
        except BrokenProcessPool:
            log.warning("a curation worker died; inspecting the next %d files one process each", in_flight)
            for candidate in candidates[done : done + in_flight]:
                yield _inspect_isolated(curator, candidate)
                done += 1


def curate(
    spec: dict,
    salt: str,
    receipt: dict,
    outputs: CurationOutputs,
    demo: bool,
    workers: int = 1,
    budget: DecodeBudget = DEFAULT_BUDGET,
) -> dict:
    """Curate one source from its fetch receipt with `workers` processes, each decoding within
    `budget`; returns the report.

    The outputs do not depend on `workers`: outcomes are gathered in input order.
    """
    root = Path(receipt["root"])
    curator = Curator(spec, salt, root, budget)
    files = [f["path"] for f in receipt["files"]]
    refused = receipt.get("refused", [])  # receipts written before links were refused have none
    candidates, metadata = find_candidates(root, files, spec["dims"], curator.adapter, budget)
    progress = tqdm(
        inspect_all(curator, candidates, workers),
        total=len(candidates),
        desc=f"curate {spec['id']}",
        unit="item",
        mininterval=5,
    )
    outcomes = [outcome for outcomes_of_one in progress for outcome in outcomes_of_one]
    outcomes += [
        Outcome(Candidate(entry["path"]), category=entry["problem"], reason=REFUSED[entry["problem"]])
        for entry in refused
    ]

    kept = [o.record for o in outcomes if o.record]
    manifest = curator.assign_splits(
        pd.DataFrame(kept, columns=None if kept else ["item_id", "provided_split", "patient_key"])
    )
    rejected = pd.DataFrame(
        [
            {
                "file_key": curator.file_key(o.candidate),
                "n_files": o.candidate.n_files,
                "category": o.category,
                "reason": o.reason,
            }
            for o in outcomes
            if not o.record
        ],
        columns=["file_key", "n_files", "category", "reason"],
    )
    index = pd.DataFrame(
        [
            {
                "file_key": curator.file_key(o.candidate),
                "path": rawpaths.printable(o.candidate.relative_path),
                "path_bytes": rawpaths.to_bytes(o.candidate.relative_path),
                "frame": o.candidate.frame,
                "item_id": o.record["item_id"] if o.record else None,
            }
            for o in outcomes
        ],
        columns=["file_key", "path", "path_bytes", "frame", "item_id"],
    ).astype({"frame": "Int64"})
    report = {
        "source": spec["id"],
        "demo": demo,
        "found": len(outcomes),
        "kept": len(manifest),
        "rejected": len(rejected),
        "metadata_files": len(metadata),
        "files": sum(c.n_files for c in candidates) + len(metadata) + len(refused),
        "decode_budget_mb": budget.max_bytes // 2**20,
        "frames_as_items": sum(o.candidate.frame is not None for o in outcomes),
        "rejected_by_category": dict(sorted(Counter(rejected["category"]).items())),
        "kept_by_split": {s: int((manifest["split"] == s).sum()) for s in ("train", "val", "test")}
        if len(manifest)
        else {},
        "patients": int(manifest["patient_key"].nunique()) if len(manifest) else 0,
        "items_per_shard": dict(sorted(Counter(manifest["shard"]).items())) if len(manifest) else {},
    }
    assert report["found"] == report["kept"] + report["rejected"]
    for frame, target in ((manifest, outputs.manifest), (rejected, outputs.rejected), (index, outputs.files_index)):
        with atomic_path(target) as temporary:
            frame.to_parquet(temporary, index=False)
    write_text(outputs.report, json.dumps(report, indent=2, sort_keys=True) + "\n")
    for outcome in outcomes:
        if outcome.category:
            log.warning("rejected %s (%s): %s", curator.file_key(outcome.candidate), outcome.category, outcome.reason)
    log.info(
        "curated %s: %d kept, %d rejected of %d found", spec["id"], report["kept"], report["rejected"], report["found"]
    )
    return report
