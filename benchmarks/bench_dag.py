"""DAG build time: `snakemake -n` of the full recipe (config.yaml) and of the recipe with ten times the shards.

The ten-times variant multiplies every source's per-split shard count by 10 in a generated
`--configfile` (sources are a list, so it replaces the recipe's whole). Each dry run gets a
wall-clock limit a little above its goal, so a regression shows as a timeout, not a hang.
Beside the wall time: the CPU time of the dry run and the load average before it, since on
shared cores the wall time says as much about the neighbours as about the workflow.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
GOALS_S = {"full_recipe": 20, "shards_x10": 60}
SHARD_FACTOR = 10


def _shards_scaled(config_path: Path, factor: int, out: Path) -> Path:
    """A --configfile whose sources have `factor` times the shards of the recipe's."""
    sources = yaml.safe_load(config_path.read_text(encoding="utf-8"))["sources"]
    for entry in sources:
        entry["shards"] = {split: count * factor for split, count in entry["shards"].items()}
    out.write_text(yaml.safe_dump({"sources": sources}), encoding="utf-8")
    return out


def _dry_run(workdir: Path, extra: list[str], limit_s: float) -> dict:
    """Wall and CPU time and job count of `snakemake -n` (the Job stats table gives the count)."""
    command = [sys.executable, "-m", "snakemake", "-n", "--resources", "gpu=8", "-d", str(workdir), "all", *extra]
    load = os.getloadavg()[0]
    cpu_before = _children_cpu_s()
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=limit_s, check=True)
    except subprocess.TimeoutExpired:
        return {"dry_run_s": None, "timed_out_after_s": limit_s, "load_average_1min": round(load, 1)}
    seconds = time.perf_counter() - started
    total = re.search(r"^total\s+(\d+)", done.stdout, re.MULTILINE)
    return {
        "dry_run_s": round(seconds, 1),
        "cpu_s": round(_children_cpu_s() - cpu_before, 1),
        "load_average_1min": round(load, 1),
        "jobs": int(total.group(1)) if total else None,
    }


def _children_cpu_s() -> float:
    """User + system CPU seconds of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run() -> dict:
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        scaled = _shards_scaled(REPO / "config.yaml", SHARD_FACTOR, Path(tmp) / "shards_x10.yaml")
        variants = {"full_recipe": [], "shards_x10": ["--configfile", str(scaled)]}
        for name, extra in variants.items():
            result = _dry_run(Path(tmp) / name, extra, limit_s=3 * GOALS_S[name])
            figures[name] = {**result, "goal_dry_run_s": f"<= {GOALS_S[name]}"}
    return figures
