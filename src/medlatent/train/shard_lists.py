"""Shard lists: the normalized shards of one source and split that a training job reads.

Training jobs take a few shard lists instead of every shard: Snakemake scans a producer's
inputs each time a job depends on its output, so a training job listing thousands of shards,
whose weights thousands of extraction jobs use, makes building the DAG quadratic. A list
holds each shard's sha256, so it changes whenever a shard does and training reruns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from medlatent.config import canonical_json
from medlatent.core import atomic
from medlatent.core.errors import InputError
from medlatent.core.hashing import file_sha256
from medlatent.io.h5 import ShardReader

FORMAT = "medlatent-shard-list/1"
_RERUN = "rerun snakemake: it rewrites the shard list after normalizing the shard"


def write_shard_list(shards: Sequence[str | Path], out: str | Path) -> None:
    """Write the shard list `out`: path, item count, size and sha256 of each shard, in the given order."""
    entries = []
    for path in map(str, shards):
        with ShardReader(path) as reader:
            items = len(reader)
        entries.append({"path": path, "items": items, "bytes": Path(path).stat().st_size, "sha256": file_sha256(path)})
    atomic.write_text(out, canonical_json({"format": FORMAT, "shards": entries}) + "\n")


def read_shard_lists(lists: Sequence[str | Path]) -> list[str]:
    """The shard paths of the lists, in order; InputError naming the list if a shard is gone or changed size."""
    shards = []
    for list_path in lists:
        try:
            listed = json.loads(Path(list_path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:  # ValueError: not JSON, not UTF-8
            raise InputError(list_path, f"not a readable shard list ({error})", _RERUN) from None
        if not isinstance(listed, dict) or listed.get("format") != FORMAT:
            raise InputError(list_path, f"not a {FORMAT} file", _RERUN)
        for entry in listed["shards"]:
            path = Path(entry["path"])
            if not path.is_file() or path.stat().st_size != entry["bytes"]:
                raise InputError(list_path, f"lists {path}, which is missing or changed since", _RERUN)
            shards.append(entry["path"])
    return shards
