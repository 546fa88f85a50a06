"""The normalized shard store: one HDF5 file per (source, shard).

Layout: `/items/<item_id>` float32 datasets (chunked, Blosc LZ4 with byte shuffle) with a JSON
`meta` attribute of allow-listed fields; file attributes `meta` (shard, normalization slice,
demo flag, counts) and `rejected` (items that failed normalization, with reasons).

Blosc LZ4 (the hdf5plugin filter, registered with h5py when this module is imported) writes a
359x359x748 normalized CT volume in 0.7 s where gzip level 4 took 14 s and LZF 5 s, reads it in
0.4 s (gzip 4 s), for a file about 10% larger than gzip's. Chunks of about 1 MiB (512 x 512 in
2D, 64^3 in 3D): 64 x 64 chunks made 2D writes twice as slow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import hdf5plugin  # registers the Blosc filter with h5py: every reader of shards imports this module
import numpy as np

from medlatent.core.atomic import atomic_path
from medlatent.core.errors import InputError

FORMAT_VERSION = 1
#: The compression filter of every item.
COMPRESSION = hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)
# Blosc's output bytes depend on its thread count (read from this variable at every write):
# one thread, whatever the environment, keeps reruns byte-identical
os.environ["BLOSC_NTHREADS"] = "1"
#: float32 elements per chunk (1 MiB), as a square or cube.
CHUNK_ELEMENTS = 2**18


def chunk_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunks of about CHUNK_ELEMENTS, equal on every axis, clipped to the array."""
    edge = round(CHUNK_ELEMENTS ** (1 / max(len(shape), 1)))
    return tuple(max(1, min(s, edge)) for s in shape)


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
        dataset = self._items.create_dataset(
            item_id,
            data=np.asarray(array, dtype=np.float32),
            chunks=chunk_shape(array.shape),
            **COMPRESSION,
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
