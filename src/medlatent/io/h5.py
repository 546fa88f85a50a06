"""The normalized shard store: one HDF5 file per (source, shard).

Layout: `/items/<item_id>` float32 datasets (chunked, gzip) with a JSON `meta` attribute of
allow-listed fields; file attributes `meta` (shard, normalization slice, demo flag, counts)
and `rejected` (items that failed normalization, with reasons).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from medlatent.core.atomic import atomic_path
from medlatent.core.errors import InputError

FORMAT_VERSION = 1


class ShardWriter:
    """Writes a shard under a temporary name; it appears at `path` only when complete."""

    def __init__(self, path: str | Path, meta: dict) -> None:
        self.path = Path(path)
        self.meta = {**meta, "format_version": FORMAT_VERSION}
        self.rejected: dict[str, str] = {}
        self.count = 0

    def __enter__(self) -> "ShardWriter":
        self._atomic = atomic_path(self.path)
        self._file = h5py.File(self._atomic.__enter__(), "w")
        self._items = self._file.create_group("items")
        return self

    def add(self, item_id: str, array: np.ndarray, meta: dict) -> None:
        chunks = tuple(min(s, 64) for s in array.shape)
        dataset = self._items.create_dataset(
            item_id, data=array.astype(np.float32), chunks=chunks, compression="gzip", compression_opts=4, shuffle=True
        )
        dataset.attrs["meta"] = json.dumps(meta, sort_keys=True)
        self.count += 1

    def reject(self, item_id: str, reason: str) -> None:
        self.rejected[item_id] = reason

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._file.attrs["meta"] = json.dumps({**self.meta, "count": self.count}, sort_keys=True)
            self._file.attrs["rejected"] = json.dumps(self.rejected, sort_keys=True)
        self._file.close()
        self._atomic.__exit__(exc_type, exc, tb)


class ShardReader:
    """Reads a normalized shard; raises InputError naming the file if it is not one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r")
            self.meta = json.loads(self._file.attrs["meta"])
            self.rejected = json.loads(self._file.attrs["rejected"])
        except (OSError, KeyError) as error:
            raise InputError(
                self.path, f"not a complete MedLatent shard ({error})", "delete it and rerun the normalize_shard job"
            ) from None

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def item_ids(self) -> list[str]:
        return sorted(self._file["items"].keys())

    def shape(self, item_id: str) -> tuple[int, ...]:
        """The item's array shape, from the dataset header (no data read)."""
        return self._file["items"][item_id].shape

    def read(self, item_id: str) -> tuple[np.ndarray, dict]:
        dataset = self._file["items"][item_id]
        return dataset[()], json.loads(dataset.attrs["meta"])

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, dict]]:
        for item_id in self.item_ids():
            yield (item_id, *self.read(item_id))

    def __len__(self) -> int:
        return len(self._file["items"])
