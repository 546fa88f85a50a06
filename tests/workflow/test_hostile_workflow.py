"""A hostile archive through the real Snakefile: one folder, read as a 2D and as a 3D `local` source.

The corpus (`tests/helpers/hostile_corpus.py`, ~180 entries) is fetched, curated and
normalized by one Snakemake run with a small decode budget (`curate.mem_mb`
BOMB_BUDGET_MB), so that every bomb stays small on disk. No job may fail; every entry must be
accounted for (kept, or rejected with a category); kept items must be finite in [-1, 1]; every
bomb must be rejected for its size before decoding; reasons must hold no path, name or content.
"""

from __future__ import annotations

import json
import os
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import pytest
from hostile_corpus import BOMB, BOMB_BUDGET_MB, PLANTED, VALID_2D, VALID_3D, VALID_BOTH, write_corpus
from workflow_helpers import edited_demo_config, snakemake

from medlatent.core import rawpaths
from medlatent.io.h5 import ShardReader

pytestmark = pytest.mark.workflow

SOURCES = {"hostile2d": ("xray", 2), "hostile3d": ("ct", 3)}
LINK_CATEGORIES = {
    "link outside root": "link_outside_root",
    "dangling link": "link_dangling",
    "link loop": "link_loop",
    "link to folder": "link_to_folder",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("hostile")
    root = base / "archive"
    classes = write_corpus(root, base / "elsewhere")

    def hostile_sources(config: dict) -> None:
        config["curate"]["mem_mb"] = BOMB_BUDGET_MB
        for source_id, (modality, dims) in SOURCES.items():
            config["sources"].append(
                {
                    "id": source_id,
                    "name": f"hostile archive read as a {dims}D source",
                    "modality": modality,
                    "dims": dims,
                    "anatomy": "various",
                    "role": "cad",
                    "access": {"method": "local", "path": str(root)},
                    "license": {"name": "test data"},
                    "curation": {"adapter": "generic"},
                    "split": {"fractions": {"train": 1.0, "val": 0.0, "test": 0.0}},
                    "shards": {"train": 1, "val": 1, "test": 1},
                }
            )

    workdir = base / "work"
    targets = [f"data/{stage}/{source}/{name}" for source in SOURCES for stage, name in (
        ("curated", "report.json"), ("normalized", "train-000.h5"))]  # fmt: skip
    snakemake(workdir, *targets, configfile=edited_demo_config(base, hostile_sources))
    return {"root": root, "classes": classes, "workdir": workdir}


def outcomes(run: dict, source: str) -> pd.DataFrame:
    """One row per files-index entry: path (exact, from path_bytes), item_id, category, reason."""
    data = run["workdir"] / "data"
    index = pd.read_parquet(data / "raw" / source / "files_index.parquet")
    # object dtype: a name that is not UTF-8 is a surrogate-escaped str, which arrow strings refuse
    index["path"] = pd.Series([rawpaths.from_bytes(raw) for raw in index["path_bytes"]], dtype=object)
    rejected = pd.read_parquet(data / "curated" / source / "rejected.parquet")
    return index.merge(rejected, on="file_key", how="left").set_index("path")


def entry_of(table: pd.DataFrame, path: str) -> pd.Series:
    """The row of a corpus entry: its own, or its folder's when it was read as a slice of a series."""
    return table.loc[path] if path in table.index else table.loc[str(PurePosixPath(path).parent)]


def test_the_corpus_is_large_and_covers_every_class(run):
    classes = set(run["classes"].values())
    assert len(run["classes"]) >= 150
    assert {
        f"{BOMB}: {kind}" for kind in ("deflate", "J2K codestream", "JPEG codestream", "PNG", "JPEG", "gzip NIfTI")
    } <= classes
    assert {"recursion-deep sequence", "NumberOfFrames mismatch", "non-finite rescale", "DICOMDIR"} <= classes
    assert {"complex NIfTI", "RGB NIfTI", "5D NIfTI", "zero affine", "singular affine", "zero-byte file"} <= classes
    assert set(LINK_CATEGORIES) <= classes
    files = [path for path in run["root"].rglob("*") if not path.is_symlink() and path.is_file()]
    assert max(path.stat().st_size for path in files) <= 2**20


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_entry_is_kept_or_rejected_and_counts_reconcile(run, source):
    report = json.loads((run["workdir"] / "data" / "curated" / source / "report.json").read_text())
    assert report["found"] == report["kept"] + report["rejected"]
    assert report["files"] == len(run["classes"]) and report["metadata_files"] == 0
    table = outcomes(run, source)
    assert len(table) == report["found"] and table["file_key"].is_unique
    for path in run["classes"]:
        row = entry_of(table, path)
        assert pd.notna(row["item_id"]) != pd.notna(row["category"]), path  # kept xor rejected


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_kept_items_are_normalized_finite_in_range_and_failures_are_recorded(run, source):
    manifest = pd.read_parquet(run["workdir"] / "data" / "curated" / source / "manifest.parquet")
    with ShardReader(run["workdir"] / "data" / "normalized" / source / "train-000.h5") as reader:
        arrays = {item: array for item, array, _ in reader}
        failed = dict(reader.rejected)
    assert set(arrays) | set(failed) == set(manifest["item_id"]) and not set(arrays) & set(failed)
    assert not failed, failed  # curation checked what normalization relies on
    for item, array in arrays.items():
        assert np.isfinite(array).all() and array.min() >= -1 and array.max() <= 1, item


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_each_class_ends_as_it_must(run, source):
    dims = SOURCES[source][1]
    table = outcomes(run, source)
    for path, what in run["classes"].items():
        row = entry_of(table, path)
        if what.startswith(BOMB):
            assert row["category"] == "too_large" and "too large to decode" in row["reason"], (path, row["reason"])
        elif what in LINK_CATEGORIES:
            assert row["category"] == LINK_CATEGORIES[what], path
        elif what in ("complex NIfTI", "RGB NIfTI", "complex array", "boolean array", "structured array"):
            assert "unsupported sample type" in row["reason"], (path, row["reason"])
        elif what in ("zero affine", "singular affine", "nan affine"):
            assert "unusable geometry" in row["reason"], path
        elif what in (VALID_BOTH, VALID_2D if dims == 2 else VALID_3D):
            assert pd.notna(row["item_id"]), (path, row["reason"])
    if dims == 2:  # names that are not UTF-8, or that a shell would misread, reach the shard like any other
        latin1 = [path for path in run["classes"] if b"\xfc" in rawpaths.to_bytes(path)]
        index = pd.read_parquet(run["workdir"] / "data" / "raw" / source / "files_index.parquet").set_index("file_key")
        assert latin1 and "\\xfc" in index.at[table.loc[latin1[0], "file_key"], "path"]  # the printable column
        assert pd.notna(table.loc["links/inside.png", "item_id"])  # a link inside the root is followed


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_reasons_and_logs_name_no_path_no_file_name_and_no_content(run, source):
    table = outcomes(run, source)
    reasons = list(table["reason"].dropna())
    with ShardReader(run["workdir"] / "data" / "normalized" / source / "train-000.h5") as reader:
        reasons += list(reader.rejected.values())
    names = {PurePosixPath(path).name for path in run["classes"]} | {str(run["root"]), os.fsdecode(b"\xfc")}
    names = {name for name in names if len(name) >= 8}
    logs = [(run["workdir"] / "logs" / stage / f"{source}.log").read_text() for stage in ("curate",)]
    logs += [path.read_text() for path in (run["workdir"] / "logs" / "normalize" / source).glob("*.log")]
    for text in reasons + logs:  # the jobs' logs repeat every reason
        assert not any(token in text for token in PLANTED), text
        assert not any(name in text for name in names), text
        assert "root:x:0:0" not in text and "not a NIfTI" not in text
