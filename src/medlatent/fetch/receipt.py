"""The fetch receipt: which files a source consists of, with sizes and SHA-256 hashes.

`raw_dir/fetch.json` is written last and atomically, so its presence means the fetch is
complete. It holds no timestamp, so fetching the same data twice gives the same bytes.
Hashing streams each file (sources reach hundreds of GB) under one progress bar with ETA.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from medlatent import __version__
from medlatent.core.atomic import write_text

RECEIPT = "fetch.json"
CHUNK = 1 << 20


def list_files(root: Path) -> list[Path]:
    """Every regular file under `root` (following file symlinks, not folder ones), sorted by relative path."""
    found = []
    for folder, _, names in os.walk(root):
        found += [Path(folder) / name for name in names if (Path(folder) / name).is_file()]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def hash_files(root: Path, label: str = "") -> list[dict]:
    """`[{path, size, sha256}]` for every file under `root`, streamed, with a progress bar on stderr."""
    root = Path(root)
    paths = list_files(root)
    sizes = [p.stat().st_size for p in paths]
    entries = []
    with tqdm(
        total=sum(sizes), unit="B", unit_scale=True, desc=f"hashing {label}".strip(), file=sys.stderr, mininterval=1.0
    ) as bar:
        for path, size in zip(paths, sizes, strict=True):
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
                    bar.update(len(chunk))
            entries.append({"path": path.relative_to(root).as_posix(), "size": size, "sha256": digest.hexdigest()})
    return entries


def write_receipt(source: dict, root: Path, raw_dir: Path) -> dict:
    """Hash `root` and write raw_dir/fetch.json; returns the receipt."""
    access = source.get("access", {})
    receipt = {
        "source": source["id"],
        "method": access.get("method"),
        "identifier": access.get("identifier"),
        "root": str(root),
        "files": hash_files(root, source["id"]),
        "tool": f"medlatent {__version__}",
    }
    write_text(Path(raw_dir) / RECEIPT, json.dumps(receipt, indent=1, sort_keys=True) + "\n")
    return receipt
