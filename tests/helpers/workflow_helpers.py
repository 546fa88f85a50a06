"""Run the real Snakefile on the demo configuration in a temporary working directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "workflow" / "demo" / "config.yaml"
_WILDCARDS = re.compile(r"^\s+wildcards: (.+)$", re.MULTILINE)
_RULE = re.compile(r"^(?:local)?rule (\w+):$", re.MULTILINE)


def snakemake_command(workdir: Path, *args: str, configfile: Path | list[Path] = DEMO_CONFIG) -> list[str]:
    """The command line that runs the Snakefile in `workdir`; `configfile`: one file or several, merged in order."""
    configfiles = configfile if isinstance(configfile, list) else [configfile]
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
            "--configfile", *map(str, configfiles), "--cores", "2", *args]  # fmt: skip


def snakemake_env() -> dict[str, str]:
    """The environment of a test's snakemake run: this interpreter's scripts (`medlatent`) first on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def snakemake(
    workdir: Path, *args: str, configfile: Path | list[Path] = DEMO_CONFIG, check: bool = True
) -> subprocess.CompletedProcess:
    """Run the Snakefile in `workdir` and wait for it; AssertionError with its output if it fails and `check`."""
    command = snakemake_command(workdir, *args, configfile=configfile)
    result = subprocess.run(command, capture_output=True, text=True, env=snakemake_env(), timeout=1200)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
        )
    return result


def planned_jobs(dry_run_output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", dry_run_output):
        rule = _RULE.search(block)
        if not rule:
            continue
        found = _WILDCARDS.search(block)
        wildcards = dict(pair.split("=", 1) for pair in found.group(1).split(", ")) if found else {}
        jobs.append((rule.group(1), wildcards))
    return jobs


def edited_demo_config(tmp_path: Path, edit) -> Path:
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    edit(config)
    target = tmp_path / "edited-demo.yaml"
    target.write_text(yaml.safe_dump(config))
    return target
