"""Curation throughput (items/s) at 1 and 2 worker processes on demo-generated files (best of two runs each)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from medlatent import config as mlconfig
from medlatent.curate.run import CurationOutputs, curate
from medlatent.demo.registry import generate

#: Demo sources, generated larger than in the demo so the pool has work to spread: a few seconds
#: per run (with 300 radiographs and 40 volumes, runs of under a second swung the speedup 1.3-2.1).
CASES = {"demo_cxr": {"n_patients": 300, "images_per_patient": 3}, "demo_headct": {"n_patients": 100}}
WORKERS = (1, 2)
REPEATS = 2
OUTPUT_NAMES = ("m.parquet", "r.parquet", "report.json", "files.parquet")
#: Curation is per-file work: two worker processes should come close to twice one.
GOAL_SPEEDUP_2_VS_1 = ">= 1.5"


def _time_case(config: dict, source_id: str, access: dict) -> dict:
    entry = mlconfig.source(config, source_id)
    spec = mlconfig.curate_slice(config, source_id)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        generate({**entry["access"], **access}, raw, seed=0)
        files = [
            {"path": str(p.relative_to(raw)), "size": p.stat().st_size} for p in sorted(raw.rglob("*")) if p.is_file()
        ]
        receipt = {"source": source_id, "root": str(raw), "files": files}
        seconds = {workers: [] for workers in WORKERS}
        for _ in range(REPEATS):  # alternately, best of each: the first pass also warms the page cache
            for workers in WORKERS:
                out = Path(tmp) / f"workers{workers}"
                outputs = CurationOutputs(*(out / name for name in OUTPUT_NAMES))
                started = time.perf_counter()
                report = curate(spec, "salt", receipt, outputs, demo=True, workers=workers)
                seconds[workers].append(time.perf_counter() - started)
        for workers in WORKERS:
            figures[f"items_per_s_{workers}_workers"] = round(report["found"] / min(seconds[workers]), 1)
        figures["items"] = report["found"]
    figures["speedup_2_vs_1"] = round(figures["items_per_s_2_workers"] / figures["items_per_s_1_workers"], 2)
    figures["goal_speedup_2_vs_1"] = GOAL_SPEEDUP_2_VS_1
    return figures


def run() -> dict:
    from bench_train import DEMO

    config = mlconfig.load(*DEMO)
    return {source_id: _time_case(config, source_id, access) for source_id, access in CASES.items()}
