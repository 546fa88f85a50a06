"""Reading a normalized shard for the encoder in DataLoader workers, so decompression overlaps encoding.

Batches are planned up front from the item shapes (HDF5 dataset headers; no data is read):
consecutive items of equal shape, at most `batch_size(shape)` at a time, in sorted item order.
So an item too large for the memory budget stops the job before anything is encoded, and the
batches, hence the latents, are the same whatever the number of workers. Each worker opens its
own h5py handle on first use (an open HDF5 file can be neither pickled nor used across a fork);
the DataLoader hands the batches back in plan order. On CUDA the batches come in pinned memory,
so the host-to-device copy runs asynchronously.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medlatent.io.h5 import ShardReader

#: One batch as the loader yields it: item ids, images stacked on a new first axis, item metas.
Batch = tuple[list[str], torch.Tensor, list[dict]]


def plan_batches(
    shapes: list[tuple[str, tuple[int, ...]]], batch_size: Callable[[tuple[int, ...]], int]
) -> list[list[str]]:
    """Item ids grouped into batches: consecutive (item_id, shape) pairs of equal shape, at most batch_size(shape)."""
    batches: list[list[str]] = []
    batch_shape = None
    for item_id, shape in shapes:
        limit = batch_size(shape)  # for every item, so one too large stops the plan
        if batches and batch_shape == shape and len(batches[-1]) < limit:
            batches[-1].append(item_id)
        else:
            batches.append([item_id])
            batch_shape = shape
    return batches


class ShardBatches(Dataset):
    """Map-style dataset: index i is the i-th planned batch of the shard, read and stacked."""

    def __init__(self, path: str | Path, batches: list[list[str]]) -> None:
        self.path, self.batches = Path(path), batches
        self._reader: ShardReader | None = None

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Batch:
        if self._reader is None:
            self._reader = ShardReader(self.path)
        read = [self._reader.read(item_id) for item_id in self.batches[index]]
        return self.batches[index], torch.from_numpy(np.stack([array for array, _ in read])), [m for _, m in read]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None}  # each process opens its own handle

    def close(self) -> None:
        if self._reader is not None:
            self._reader.__exit__()
            self._reader = None


def _unchanged(batch: Batch) -> Batch:
    return batch


def read_batches(path: str | Path, batches: list[list[str]], workers: int, device: torch.device) -> Iterator[Batch]:
    """The planned batches in order, read by `workers` processes (0: in this one), pinned on CUDA."""
    dataset = ShardBatches(path, batches)
    # the first batch is waited for anyway: workers beyond the batches after it would only cost their start
    workers = max(0, min(workers, len(batches) - 1))
    loader = DataLoader(
        dataset, batch_size=None, num_workers=workers, collate_fn=_unchanged, pin_memory=device.type == "cuda"
    )
    try:
        yield from loader
    finally:
        dataset.close()
