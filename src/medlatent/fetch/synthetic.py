"""Method `synthetic`: generate the embedded demo data (medlatent.demo)."""

from __future__ import annotations

import shutil
from pathlib import Path


def fetch(source: dict, raw_dir: Path, *, seed: int) -> Path:
    """Write the generated files into raw_dir/files, replacing any earlier attempt whole."""
    from medlatent.demo.registry import generate

    files = raw_dir / "files"
    staging = raw_dir / ".files.generating"
    shutil.rmtree(staging, ignore_errors=True)
    generate(source["access"], staging, seed)
    shutil.rmtree(files, ignore_errors=True)
    staging.replace(files)
    return files
