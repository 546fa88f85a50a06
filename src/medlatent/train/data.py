"""Training data: random crops (2D) or cubic patches (3D) from normalized HDF5 shards.

Every training sample has a global number p (the p-th image the run ever draws). Which item
it is and where it is cropped are functions of (seed, p) alone: epoch e = p // N walks a
permutation seeded by (seed, e), the crop offset comes from a generator seeded by (seed, p).
So the data stream does not depend on the number of processes, DataLoader workers or where a
run was resumed: a resumed run or a DDP rank only needs the numbers of its samples, which
`MicroBatches` derives from the step. That is the sampler state the checkpoints record.

2D crops are `crop` clipped to the smallest training image (the whole image when images are
smaller) and rounded down to a multiple of the model's downsampling; 3D patches are `patch`,
and volumes smaller than a patch are padded with the background value (-1) first.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medlatent.core.errors import ConfigError, InputError
from medlatent.io.h5 import ShardReader
from medlatent.normalize import BACKGROUND


@dataclass(frozen=True)
class Item:
    """One image or volume of a shard."""

    shard: str
    item_id: str
    shape: tuple[int, ...]


def index_shards(paths: Sequence[str | Path], dims: int) -> list[Item]:
    """Every item of the shards (sorted by shard, then id) with its array shape; checks dims."""
    items: list[Item] = []
    for path in sorted(str(p) for p in paths):
        with ShardReader(path) as reader:
            ids = reader.item_ids()
        with h5py.File(path, "r") as handle:  # shapes without reading the arrays
            shapes = [tuple(handle["items"][item_id].shape) for item_id in ids]
        for item_id, shape in zip(ids, shapes):
            if len(shape) != dims:
                raise InputError(
                    path,
                    f"item {item_id} has shape {shape}, expected a {dims}D array",
                    f"train {dims}D models on {dims}D sources only (check the sources' dims)",
                )
            items.append(Item(path, item_id, shape))
    return items


def crop_size(items: Sequence[Item], wanted: Sequence[int], multiple: int, dims: int) -> tuple[int, ...]:
    """Training input size: 2D `wanted` clipped to the smallest image; 3D `wanted` as is.

    Either way a multiple of `multiple` (the model's downsampling per axis).
    """
    if len(wanted) != dims:
        raise ConfigError(f"crop/patch {list(wanted)} must have {dims} sizes for a {dims}D model")
    size = list(wanted)
    if dims == 2:
        smallest = [min(item.shape[axis] for item in items) for axis in range(dims)]
        size = [min(w, s) // multiple * multiple for w, s in zip(wanted, smallest)]
        if min(size) == 0:
            raise ConfigError(f"training images of {smallest} are smaller than the model's downsampling {multiple}")
    elif any(s % multiple for s in size):
        raise ConfigError(f"patch {size} must be a multiple of the model's downsampling {multiple} per axis")
    return tuple(size)


def _crop(array: np.ndarray, size: Sequence[int], rng: np.random.Generator | None) -> np.ndarray:
    """Pad (centred, background) up to `size`, then crop `size`: at random, or centred without rng."""
    pad = [(max(0, s - n) // 2, max(0, s - n) - max(0, s - n) // 2) for n, s in zip(array.shape, size)]
    if any(p for pair in pad for p in pair):
        array = np.pad(array, pad, mode="constant", constant_values=BACKGROUND)
    starts = [int(rng.integers(0, n - s + 1)) if rng is not None else (n - s) // 2 for n, s in zip(array.shape, size)]
    return array[tuple(slice(a, a + s) for a, s in zip(starts, size))]


class CropDataset(Dataset):
    """Sample number -> a (1, *size) float32 tensor.

    `shuffle=True` (training): number p is item perm_e[p % N] with a random crop, all seeded
    by (seed, p). `shuffle=False` (validation): number i is item i, centre-cropped.
    HDF5 files are opened lazily per process, so DataLoader workers each hold their own.
    """

    def __init__(self, items: Sequence[Item], size: Sequence[int], seed: int, shuffle: bool) -> None:
        if not items:
            raise ValueError("CropDataset needs at least one item")
        self.items = list(items)
        self.size = tuple(size)
        self.seed = seed
        self.shuffle = shuffle
        self._files: dict[str, h5py.File] = {}
        self._epoch: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.items)))
        return self._epoch[1]

    def _read(self, item: Item) -> np.ndarray:
        handle = self._files.get(item.shard)
        if handle is None:
            handle = self._files[item.shard] = h5py.File(item.shard, "r")
        return handle["items"][item.item_id][()]

    def __getitem__(self, number: int) -> torch.Tensor:
        if self.shuffle:
            epoch, k = divmod(number, len(self.items))
            item, rng = self.items[self._permutation(epoch)[k]], np.random.default_rng([self.seed, 1, number])
        else:
            item, rng = self.items[number], None
        array = _crop(self._read(item), self.size, rng)
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).unsqueeze(0)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": {}}  # open HDF5 handles do not cross process boundaries


def split_sizes(total: int, parts: int) -> list[int]:
    """`total` samples in `parts` micro-batches as even as possible (larger ones first)."""
    base, extra = divmod(total, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]


@dataclass(frozen=True)
class MicroBatches:
    """How one optimisation step's global batch is cut across ranks and accumulation steps.

    accumulation = ceil(global / (micro_batch * world)); the global batch is split into
    world x accumulation micro-batches; micro-batch k = a * world + rank is the a-th
    accumulation step of `rank`. The same `global_batch` thus gives the same samples per
    step whatever the world size, and identical micro-batches when world x accumulation is equal.
    """

    global_batch: int
    micro_batch: int
    world: int

    @property
    def accumulation(self) -> int:
        return math.ceil(self.global_batch / (self.micro_batch * self.world))

    @property
    def sizes(self) -> list[int]:
        return split_sizes(self.global_batch, self.world * self.accumulation)

    def numbers(self, step: int, rank: int) -> list[list[int]]:
        """Sample numbers of each accumulation step of `rank` at optimisation step `step`."""
        sizes = self.sizes
        offsets = np.cumsum([0, *sizes])
        first = step * self.global_batch
        return [
            list(range(first + offsets[k], first + offsets[k] + sizes[k]))
            for k in (a * self.world + rank for a in range(self.accumulation))
        ]

    @classmethod
    def fit(cls, global_batch: int, micro_batch: int, granted: int) -> MicroBatches:
        """The plan on the most of `granted` processes that leaves no micro-batch empty.

        Every rank must get a sample in each accumulation step, i.e. world x accumulation
        <= global batch; one process always satisfies that.
        """
        for world in range(min(granted, global_batch), 1, -1):
            plan = cls(global_batch, micro_batch, world)
            if world * plan.accumulation <= global_batch:
                return plan
        return cls(global_batch, micro_batch, 1)

    def loss_scale(self, size: int) -> float:
        """Weight of a micro-batch's mean loss so that DDP's average over ranks of the summed
        micro-batch gradients is the gradient of the mean over the global batch."""
        return size * self.world / self.global_batch


def micro_batch(settings: dict) -> int:
    """Per-process batch: `micro_batch`, else the global batch spread over the configured GPUs."""
    return settings.get("micro_batch") or math.ceil(settings["batch_size"] / max(1, settings["gpus"]))


def processes_for(settings: dict, granted: int) -> int:
    """How many processes to start on `granted` GPUs (each gets a non-empty micro-batch)."""
    return MicroBatches.fit(settings["batch_size"], micro_batch(settings), granted).world


class StepSampler(Sampler[list[int]]):
    """Batch sampler: the micro-batches of `rank` for steps start..steps-1, in order."""

    def __init__(self, plan: MicroBatches, rank: int, start: int, steps: int) -> None:
        self.plan, self.rank, self.start, self.steps = plan, rank, start, steps

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            yield from self.plan.numbers(step, self.rank)

    def __len__(self) -> int:
        return (self.steps - self.start) * self.plan.accumulation


def train_loader(
    dataset: CropDataset, plan: MicroBatches, rank: int, start: int, steps: int, workers: int, pin_memory: bool
) -> DataLoader:
    """Micro-batches in step order; `workers` processes (0: in the main process)."""
    return DataLoader(
        dataset,
        batch_sampler=StepSampler(plan, rank, start, steps),
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def validation_loader(items: Sequence[Item], size: Sequence[int], batch_size: int, batches: int) -> DataLoader | None:
    """Up to `batches` centred-crop batches of the validation items; None without items."""
    if not items or batches <= 0:
        return None
    dataset = CropDataset(items, size, seed=0, shuffle=False)
    count = min(len(items), batch_size * batches)
    return DataLoader(torch.utils.data.Subset(dataset, range(count)), batch_size=batch_size, shuffle=False)
