"""Curation with a process pool writes the same bytes as curation in one process."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pandas as pd
import pytest

from medlatent import config as mlconfig
from medlatent import io
from medlatent.curate.run import CurationOutputs, curate
from medlatent.demo.registry import generate

OUTPUT_NAMES = ("manifest.parquet", "rejected.parquet", "report.json", "files_index.parquet")


def _curate_with(workers: int, spec: dict, receipt: dict, out: Path) -> dict[str, bytes]:
    outputs = CurationOutputs(*(out / name for name in OUTPUT_NAMES))
    curate(spec, "salt", receipt, outputs, demo=True, workers=workers)
    return {name: (out / name).read_bytes() for name in OUTPUT_NAMES}


def _demo_source(demo_config: dict, source_id: str, raw: Path) -> tuple[dict, dict]:
    """A small demo source (with the broken files the generators plant): its curate slice and fetch receipt."""
    entry = mlconfig.source(demo_config, source_id)
    small = {"n_patients": 10, "images_per_patient": 3} if entry["dims"] == 2 else {"n_patients": 8}
    generate({**entry["access"], **small}, raw, seed=0)
    files = [{"path": str(p.relative_to(raw)), "size": p.stat().st_size} for p in sorted(raw.rglob("*")) if p.is_file()]
    return mlconfig.curate_slice(demo_config, source_id), {"source": source_id, "root": str(raw), "files": files}


@pytest.mark.parametrize("source_id", ["demo_cxr", "demo_headct"])
def test_outputs_identical_with_one_and_two_workers(demo_config, tmp_path, source_id):
    spec, receipt = _demo_source(demo_config, source_id, tmp_path / "raw")

    serial = _curate_with(1, spec, receipt, tmp_path / "one")
    pooled = _curate_with(2, spec, receipt, tmp_path / "two")

    report = json.loads(serial["report.json"])
    assert report["found"] >= 8 and report["kept"] > 0 and report["rejected"] > 0  # broken files planted by the demo
    assert pooled == serial


@pytest.mark.skipif(
    multiprocessing.get_start_method() != "fork", reason="workers see the patched reader only when forked"
)
def test_a_file_that_crashes_its_reader_or_its_worker_is_a_rejection(demo_config, tmp_path, monkeypatch):
    spec, receipt = _demo_source(demo_config, "demo_cxr", tmp_path / "raw")
    raising, killing = sorted(f["path"] for f in receipt["files"] if f["path"].endswith(".dcm"))[:2]
    parent, read_header = os.getpid(), io.read_header

    def fragile_reader(path, *args, **kwargs):
        if path == tmp_path / "raw" / raising:
            raise RuntimeError(f"decoder bug in {path}")
        if path == tmp_path / "raw" / killing and os.getpid() != parent:
            os._exit(1)  # what a segfaulting decoder does to its process
        return read_header(path, *args, **kwargs)

    monkeypatch.setattr(io, "read_header", fragile_reader)
    _curate_with(2, spec, receipt, tmp_path)

    rejected = pd.read_parquet(tmp_path / "rejected.parquet")
    index = pd.read_parquet(tmp_path / "files_index.parquet").set_index("path")
    crashed = rejected[rejected["category"] == "crashed"].set_index("file_key")["reason"]
    assert crashed[index.loc[raising, "file_key"]] == "RuntimeError while reading it"  # the message holds the path
    assert "process reading it died" in crashed[index.loc[killing, "file_key"]]
    assert len(crashed) == 2
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["found"] == len(receipt["files"]) - report["metadata_files"]


def test_threads_come_from_config_and_are_not_part_of_the_slice(demo_config):
    edited = {**demo_config, "curate": {**demo_config["curate"], "threads": demo_config["curate"]["threads"] + 3}}
    assert mlconfig.curate_threads(edited) == mlconfig.curate_threads(demo_config) + 3
    assert mlconfig.curate_slice(edited, "demo_cxr") == mlconfig.curate_slice(demo_config, "demo_cxr")
