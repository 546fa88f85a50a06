"""Method `local`: the data already sits in a folder on disk (`access.path`); nothing is copied."""

from __future__ import annotations

from pathlib import Path

from medlatent.core.errors import InputError


def fetch(source: dict, raw_dir: Path, *, seed: int) -> Path:
    access = source["access"]
    if not access.get("path"):
        raise InputError(
            f"sources[{source['id']}].access",
            "method local needs access.path",
            "set access.path to the folder holding the data",
        )
    root = Path(access["path"])
    if not root.is_dir():
        raise InputError(
            root,
            f"access.path of source {source['id']!r} is not a folder",
            "put the data there, or set access.path to the folder that holds it",
        )
    return root
