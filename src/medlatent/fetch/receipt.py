"""The fetch receipt: which files a source consists of, with sizes and SHA-256 hashes.

`raw_dir/fetch.json` is written last and atomically, so its presence means the fetch is
complete. It holds no timestamp, so fetching the same data twice gives the same bytes.
Hashing streams each file (sources reach hundreds of GB) under one progress bar with ETA.

Symbolic links are followed only to regular files inside the root. A link that leaves the
root, a dangling link, a loop, a link to a folder and anything that is not a regular file
(a FIFO would block the reader) are not opened: the receipt lists them under `refused` with
the problem, and curation records each as a rejection, so nothing found goes unreported.
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


#: Why an entry is refused: the `refused[].problem` values of the receipt, curation's rejection categories.
REFUSED = {
    "link_outside_root": "symbolic link pointing outside the source folder: not followed",
    "link_dangling": "dangling symbolic link: its target does not exist",
    "link_loop": "symbolic link loop: the link never reaches a file",
    "link_to_folder": "symbolic link to a folder: not followed (list the folder's files under their own path)",
    "not_a_regular_file": "not a regular file (a FIFO, socket or device): not opened",
}


def classify(path: Path, root: Path) -> str | None:
    """None for a regular file, or a link to one inside `root` (resolved); else the REFUSED key."""
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except FileNotFoundError:
            return "link_dangling"
        except (OSError, RuntimeError):  # ELOOP (RuntimeError before Python 3.13)
            return "link_loop"
        if not target.is_relative_to(root.resolve()):
            return "link_outside_root"
        if target.is_dir():
            return "link_to_folder"
    return None if path.is_file() else "not_a_regular_file"


def list_files(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files under `root` that may be read, and the entries refused with their REFUSED key;
    both sorted by relative path. Folder links are not walked into."""
    files, refused = [], []
    for folder, folders, names in os.walk(root):
        for name in names + [f for f in folders if (Path(folder) / f).is_symlink()]:
            path = Path(folder) / name
            problem = classify(path, root)
            if problem:
                refused.append((path, problem))
            else:
                files.append(path)
    files.sort(key=lambda path: relative(path, root))
    refused.sort(key=lambda entry: relative(entry[0], root))
    return files, refused


def relative(path: Path, root: Path) -> str:
    """`path` under `root` as a POSIX string (surrogate-escaped where the name is not UTF-8)."""
    return path.relative_to(root).as_posix()


def hash_files(root: Path, paths: list[Path], label: str = "") -> list[dict]:
    """`[{path, size, sha256}]` for `paths` under `root`, streamed, with a progress bar on stderr."""
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
            entries.append({"path": relative(path, root), "size": size, "sha256": digest.hexdigest()})
    return entries


def write_receipt(source: dict, root: Path, raw_dir: Path) -> dict:
    """Hash `root` and write raw_dir/fetch.json; returns the receipt."""
    access = source.get("access", {})
    root = Path(root)
    files, refused = list_files(root)
    receipt = {
        "source": source["id"],
        "method": access.get("method"),
        "identifier": access.get("identifier"),
        "root": str(root),
        "files": hash_files(root, files, source["id"]),
        "refused": [{"path": relative(path, root), "problem": problem} for path, problem in refused],
        "tool": f"medlatent {__version__}",
    }
    write_text(Path(raw_dir) / RECEIPT, json.dumps(receipt, indent=1, sort_keys=True) + "\n")
    return receipt
