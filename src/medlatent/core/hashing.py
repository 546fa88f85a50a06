"""Provenance hashes: file sha256, the sha256 of curated manifests, and the code version.

Model cards, latent indexes and decoded outputs name what they came from with these.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medlatent import __version__

PACKAGE = Path(__file__).resolve().parents[1]
#: The repository root when the package runs from its git checkout (src layout); an installed
#: copy (site-packages) has none, and must not report the commit of whatever folder encloses it.
CHECKOUT = PACKAGE.parents[1] if PACKAGE.parent.name == "src" else None
#: Folders of the checkout whose untracked files make it dirty: the package and the workflow.
CODE_FOLDERS = ("src/medlatent", "workflow")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git(*args: str) -> str | None:
    if CHECKOUT is None:
        return None
    try:
        result = subprocess.run(["git", "-C", str(CHECKOUT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """Package version, and the git commit plus a dirty flag when the code is a git checkout.

    Dirty: a tracked file differs from the commit, or an untracked, not ignored file lies in
    the package or the workflow (code a run may have used); other untracked files do not count.
    """
    top = _git("rev-parse", "--show-toplevel")
    # a checkout without .git of its own (an unpacked archive) inside another repository is not that repository
    commit = _git("rev-parse", "HEAD") if top and Path(top).resolve() == CHECKOUT else None
    if commit is None:
        return {"package": __version__, "git_commit": None, "dirty": None}
    # output folders and scratch files beside the code must not change cards and dataset versions
    tracked = _git("status", "--porcelain", "--untracked-files=no")
    code = _git("status", "--porcelain", "--untracked-files=all", "--", *CODE_FOLDERS)
    dirty = None if tracked is None or code is None else bool(tracked or code)
    return {"package": __version__, "git_commit": commit, "dirty": dirty}


def manifest_hashes(manifests: Sequence[str | Path]) -> dict[str, str]:
    """{source: sha256} of `data/curated/{source}/manifest.parquet` files."""
    return {Path(path).parent.name: file_sha256(path) for path in sorted(map(str, manifests))}
