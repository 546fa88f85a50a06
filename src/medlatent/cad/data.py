"""CAD inputs: labels and splits from the curated manifest, and what each method makes of an item.

Labels and the patient-level split always come from `data/curated/{source}/manifest.parquet`
(never from the latent datasets, which only carry copies). A method turns a normalized item
into the classifier input:

- `highres`: the normalized image, centre padded (background) or cropped to the task's input size;
- `interpolation`: that image downsized by sqrt(f) per side (2D) or cbrt(f) per axis (3D) with
  nearest, bilinear or bicubic interpolation (anti-aliased, as PIL and torchvision resize);
- `medvae`, `family`: the model's latent from its latent dataset (any family; VQ: the quantized
  latent), at the factors per axis its extraction recorded;
- `slicewise` (3D tasks): a 2D model encoding every slice, the slice latents stacked;
- `external`: another KL autoencoder's posterior mean, encoded here.

Latents are averaged over channels to one channel and divided by the latent scale (4.6, the
public MedVAE code), then centre padded (edge values) or cropped to the input size / factor.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medlatent.config.evaluation import isotropic_factor
from medlatent.core.errors import ConfigError, InputError
from medlatent.core.ids import SPLITS
from medlatent.io.h5 import ShardReader
from medlatent.normalize import BACKGROUND

log = logging.getLogger(__name__)

LABEL_PREFIX = "label_"


# ----------------------------------------------------------------------------- labels and splits


def class_targets(values: pd.Series, task: dict, where: str | Path) -> np.ndarray:
    """Class index per label value.

    `task.label_values` fixes the order when given; otherwise integer (or boolean) labels in
    [0, classes) are the class index and any other labels are sorted (e.g. 'BI-RADS 1'..'5').
    """
    classes = task["classes"]
    if task.get("label_values") is not None:
        order = {str(v): k for k, v in enumerate(task["label_values"])}
        unknown = sorted({str(v) for v in values} - set(order))
        if unknown:
            raise InputError(
                where,
                f"task {task['id']}: labels {unknown[:5]} are not in label_values {task['label_values']}",
                "add them to cad_tasks[].label_values or fix the labels",
            )
        return np.array([order[str(v)] for v in values], dtype=np.int64)
    numeric = pd.to_numeric(
        values.astype(object).map(lambda v: int(v) if isinstance(v, (bool, np.bool_)) else v), errors="coerce"
    )
    if numeric.notna().all() and (numeric == numeric.round()).all() and numeric.between(0, classes - 1).all():
        return numeric.astype(np.int64).to_numpy()
    found = sorted({str(v) for v in values})
    if len(found) > classes:
        raise InputError(
            where,
            f"task {task['id']}: {len(found)} distinct labels {found[:8]} for {classes} classes",
            "set cad_tasks[].classes or cad_tasks[].label_values",
        )
    order = {v: k for k, v in enumerate(found)}
    return np.array([order[str(v)] for v in values], dtype=np.int64)


def task_items(manifest: pd.DataFrame, task: dict, where: str | Path) -> pd.DataFrame:
    """item_id, split, shard and target of every labelled item of the task's source."""
    column = f"{LABEL_PREFIX}{task['label']}"
    if column not in manifest.columns:
        labels = sorted(c[len(LABEL_PREFIX) :] for c in manifest.columns if c.startswith(LABEL_PREFIX))
        raise InputError(
            where,
            f"task {task['id']}: no label column {column!r}; labels present: {labels}",
            "fix cad_tasks[].label or the source's label table",
        )
    labelled = manifest[manifest[column].notna()]
    if len(labelled) < len(manifest):
        log.warning(
            "task %s: %d of %d items have no %s label and are left out",
            task["id"],
            len(manifest) - len(labelled),
            len(manifest),
            task["label"],
        )
    items = pd.DataFrame(
        {
            "item_id": labelled["item_id"].to_numpy(),
            "split": labelled["split"].to_numpy(),
            "shard": labelled["shard"].to_numpy(),
            "target": class_targets(labelled[column], task, where),
        }
    )
    for split in ("train", "test"):
        if not (items["split"] == split).any():
            raise InputError(
                where,
                f"task {task['id']}: no labelled item in the {split} split",
                "check the source's split fractions and labels",
            )
    return items.sort_values("item_id", kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------- geometry


def axis_factor(f: int, dims: int) -> int:
    """Size reduction per axis for compression f in `dims` dimensions (f=64: 8 in 2D, 4 in 3D)."""
    factor = isotropic_factor(f, dims)
    if factor is None:
        raise ConfigError(f"compression factor f={f} is not a {dims}D power of an integer")
    return factor


def method_shape(input_size: list[int], f: int, dims: int, slice_axis: int | None = None) -> list[int]:
    """Spatial shape a method's input has: input size / per-axis factor, rounded up as padding does.

    `slice_axis`: slice-wise 2D encoding of a volume keeps that axis whole.
    """
    factor = axis_factor(f, dims if slice_axis is None else 2)
    return grid_shape(input_size, [1 if axis == slice_axis else factor for axis in range(len(input_size))])


def fit(x: torch.Tensor, shape: list[int], value: float | None = BACKGROUND) -> torch.Tensor:
    """Centre pad or crop a (C, *spatial) tensor to `shape`; padding uses `value`, or edge values if None.

    Same placement as MONAI's ResizeWithPadOrCrop: crops start at n // 2 - s // 2, an odd padding
    puts the extra voxel after.
    """
    x = x.float()
    crop = tuple(
        slice(n // 2 - s // 2, n // 2 - s // 2 + s) if n > s else slice(None) for n, s in zip(x.shape[1:], shape)
    )
    x = x[(slice(None), *crop)]
    pad: list[int] = []
    for n, s in reversed(list(zip(x.shape[1:], shape))):
        extra = max(s - n, 0)
        pad += [extra // 2, extra - extra // 2]
    if not any(pad):
        return x
    if value is None:
        return F.pad(x[None], pad, mode="replicate")[0]
    return F.pad(x, pad, mode="constant", value=value)


def resize(x: torch.Tensor, shape: list[int], mode: str) -> torch.Tensor:
    """Resize a (N, C, *spatial) batch with nearest, bilinear or bicubic interpolation.

    Bilinear and bicubic are anti-aliased when downsizing. Volumes use separable passes of the
    2D kernels (the cubic and linear kernels are separable; torch has no 3D bicubic).
    """
    shape = [int(n) for n in shape]
    if mode == "nearest":
        return F.interpolate(x, size=shape, mode="nearest-exact")
    if mode not in ("bilinear", "bicubic"):
        raise ConfigError(f"unknown interpolation {mode!r}; choose nearest, bilinear or bicubic")
    if x.ndim == 4:
        return F.interpolate(x, size=shape, mode=mode, antialias=True, align_corners=False)
    n, c, depth, height, width = x.shape
    planes = F.interpolate(
        x.reshape(n, c * depth, height, width), size=shape[1:], mode=mode, antialias=True, align_corners=False
    )
    columns = planes.reshape(n, c, depth, shape[1] * shape[2])
    columns = F.interpolate(
        columns, size=(shape[0], shape[1] * shape[2]), mode=mode, antialias=True, align_corners=False
    )
    return columns.reshape(n, c, *shape)


# ----------------------------------------------------------------------------- normalized items


class ShardStore:
    """Reads normalized items by id from a source's shards; safe to use in DataLoader workers.

    Files are opened lazily and reopened in a new process (h5py handles do not survive fork).
    """

    def __init__(self, shard_paths: Iterable[str | Path]) -> None:
        self.paths = [Path(p) for p in shard_paths]
        self.where: dict[str, Path] = {}
        self.rejected: set[str] = set()
        self.demo = False
        for path in self.paths:
            with ShardReader(path) as reader:
                self.where.update({item_id: path for item_id in reader.item_ids()})
                self.rejected.update(reader.rejected)
                self.demo = self.demo or bool(reader.meta.get("demo", False))
        self._readers: dict[Path, ShardReader] = {}
        self._pid = os.getpid()

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.where

    def read(self, item_id: str) -> np.ndarray:
        if os.getpid() != self._pid:
            self._readers, self._pid = {}, os.getpid()
        path = self.where[item_id]
        if path not in self._readers:
            self._readers[path] = ShardReader(path)
        return self._readers[path].read(item_id)[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_readers": {}}


class ItemDataset(Dataset):
    """(input, target) pairs; `load` turns an item id into the method's input tensor."""

    def __init__(self, item_ids: list[str], targets: np.ndarray, load: Callable[[str], torch.Tensor]) -> None:
        self.item_ids, self.targets, self.load = (
            list(item_ids),
            torch.tensor(np.asarray(targets), dtype=torch.long),
            load,
        )

    def __len__(self) -> int:
        return len(self.item_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.load(self.item_ids[index]), self.targets[index]


class ImageLoader:
    """Normalized image fitted to the task's input size, optionally downsized (interpolation baselines)."""

    def __init__(
        self, store: ShardStore, input_size: list[int], mode: str | None = None, shape: list[int] | None = None
    ) -> None:
        self.store, self.input_size, self.mode, self.shape = store, input_size, mode, shape

    def __call__(self, item_id: str) -> torch.Tensor:
        image = fit(torch.from_numpy(self.store.read(item_id))[None], self.input_size)
        if self.mode is None:
            return image
        return resize(image[None], self.shape, self.mode)[0]


def classifier_latent(latent: torch.Tensor, scale: float, shape: list[int]) -> torch.Tensor:
    """Channel mean, divided by the latent scale, fitted to the method's shape (edge padding)."""
    return fit(latent.float().mean(dim=0, keepdim=True) / scale, shape, value=None)


# ----------------------------------------------------------------------------- latents


def grid_shape(input_size: list[int], factors: list[int]) -> list[int]:
    """Latent grid of an input: each axis divided by its factor, rounded up as padding does."""
    return [math.ceil(n / k) for n, k in zip(input_size, factors, strict=True)]


def read_latent_dataset(
    dataset_dir: str | Path, item_ids: set[str]
) -> tuple[dict[str, torch.Tensor], bool, set[str], dict]:
    """Latents of the wanted items (all splits) by item id; demo-weights flag; items rejected upstream;
    the dataset's index. For VQ models the latent is the quantized one."""
    import webdataset as wds

    from medlatent.latents.loader import read_index, sample_array, shard_urls

    _, index = read_index(dataset_dir)
    latents: dict[str, torch.Tensor] = {}
    for split in SPLITS:
        if not index["splits"].get(split):
            continue
        # the sample key is the item id; load_latents does not yield it, so the tars are read here
        for sample in wds.DataPipeline(wds.SimpleShardList(shard_urls(dataset_dir, split)), wds.tarfile_to_samples()):
            if sample["__key__"] in item_ids:
                latents[sample["__key__"]] = sample_array(sample, "latent")
    return latents, bool(index.get("demo_weights", False)), set(index.get("rejected_items", [])), index


# ----------------------------------------------------------------------------- autoencoders


def load_autoencoder(method: dict, weights: str | Path | None) -> torch.nn.Module:
    """The autoencoder of a `medvae`/`slicewise` method (MedVAE weights file) or an `external` one
    (LDM-layout checkpoint, made gray on load), in eval mode on the CPU."""
    from medlatent.models import load_model
    from medlatent.models.ldm_layout import load_ldm_weights
    from medlatent.models.registry import create_autoencoder

    if method["kind"] == "external":
        external = method["external"]
        spec = {key: value for key, value in external.items() if key not in ("weights", "name")}
        return load_ldm_weights(create_autoencoder(spec), external["weights"]).eval()
    if weights is None:
        raise ConfigError(f"method {method['id']!r} needs the weights of model {method['model']!r}")
    return load_model(weights).eval()


def is_demo_model(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "is_demo", False))


def posterior_mean(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Latent of a (N, 1, *spatial) batch of any size: the posterior mean, after the stage-2
    projection for MedVAE 2D models (what classifiers see)."""
    with torch.inference_mode():
        if hasattr(model, "encode_latent_padded"):
            return model.encode_latent_padded(x)[0]
        return model.encode_padded(x)[0].mean


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def encode_slicewise(model: torch.nn.Module, volume: torch.Tensor, axis: int, batch_size: int) -> torch.Tensor:
    """(C, ...) latent of a (X, Y, Z) volume: every slice along `axis` encoded in 2D, then stacked.

    The slice axis keeps its length; the other two shrink by the model's per-axis factor.
    """
    slices = volume.movedim(axis, 0)[:, None]
    device = model_device(model)
    latents = torch.cat(
        [
            posterior_mean(model, slices[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(slices), batch_size)
        ]
    )
    return latents.movedim(0, axis + 1)


def encode_whole(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """(C, ...) latent of one (H, W) image or (X, Y, Z) volume with a model of its dims."""
    return posterior_mean(model, image[None, None].to(model_device(model)))[0].float().cpu()
