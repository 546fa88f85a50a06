"""`load_latents`: a latent dataset split as a WebDataset pipeline of (latent, labels, meta).

Usage (the dataset folder of `data/latents/{model}/{source}`, or its index.json)::

    from medlatent import load_latents
    for latent, labels, meta in load_latents("data/latents/demo_f16_c1/demo_mammo", split="train"):
        ...

Shards are split across DDP ranks first (`wds.split_by_node`: rank r takes shards r, r+W,
...) and then across DataLoader workers (`wds.split_by_worker`), so every sample is read once
per epoch by exactly one worker of one rank. Ranks receive whole shards: with fewer shards
than ranks x workers some get none, and ranks can see different sample counts; for DDP
training over a few shards pass `resampled=True` (shards drawn with replacement, endless)
and bound the epoch with `.with_epoch(n)`, the usual WebDataset recipe.
"""

from __future__ import annotations

import io
import json
from functools import partial
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from medlatent.core.errors import InputError
from medlatent.core.ids import SPLITS
from medlatent.latents.index import INDEX_FORMAT
from medlatent.latents.sidecar import SidecarJoin
from medlatent.models.families.base import diffusion_ready


def read_index(path_or_index: str | Path) -> tuple[Path, dict]:
    """The dataset folder and its parsed index.json (given the folder or the file)."""
    path = Path(path_or_index)
    index_path = path / "index.json" if path.is_dir() else path
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(
            index_path,
            f"not a readable latent dataset index ({error})",
            "pass data/latents/<model>/<source> after the index_latents job ran, or `dvc pull` it",
        ) from None
    if index.get("format") != INDEX_FORMAT:
        raise InputError(
            index_path,
            f"is a {index.get('format')!r} latent dataset, this version reads {INDEX_FORMAT!r} (salted item ids, "
            "one tar member per sample, labels and meta in a sidecar per shard)",
            "rerun the extraction (`snakemake latents`: curation reruns too, the item ids change) with this "
            "version, or read it with the version that wrote it",
        )
    return index_path.parent, index


def shard_urls(path_or_index: str | Path, split: str) -> list[str]:
    """Paths of the tars of one split, in index order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    folder, index = read_index(path_or_index)
    urls = [str(folder / shard["file"]) for shard in index["shards"] if shard["split"] == split]
    if not urls:
        raise InputError(
            folder / "index.json", f"split {split!r} has no samples ({index['splits']})", "choose a split with samples"
        )
    return urls


def sample_array(sample: dict, name: str) -> torch.Tensor:
    """One stored array of a raw WebDataset sample (`latent`, `mean`, `logvar`) as float32."""
    return torch.from_numpy(np.load(io.BytesIO(sample[f"{name}.npy"]), allow_pickle=False).astype(np.float32))


def _with_sidecar(sample: dict, join: SidecarJoin) -> dict:
    """The raw sample with its labels and meta from its shard's sidecar (`__labels__`, `__meta__`)."""
    labels, meta = join(sample)
    return {**sample, "__labels__": labels, "__meta__": meta}


def _decode(sample: dict, names: tuple[str, ...], scaling: dict | None = None) -> tuple:
    """Joined raw sample -> (latent float32 tensor, labels, meta[, {name: stored array}]).

    With `scaling` (the family's record) the latent is the diffusion-ready one (`diffusion_ready`).
    """
    latent = sample_array(sample, "latent")
    latent = latent if scaling is None else diffusion_ready(latent, scaling)
    decoded = (latent, sample["__labels__"], sample["__meta__"])
    return (*decoded, {name: sample_array(sample, name) for name in names}) if names else decoded


def check_stored(path_or_index: str | Path, names: tuple[str, ...] | list[str]) -> None:
    """Raise InputError naming `latents.store` unless the dataset stores every array in `names`."""
    folder, index = read_index(path_or_index)
    stored = index["latent"].get("stored", ["latent"])
    missing = [name for name in names if name not in stored]
    if missing:
        raise InputError(
            folder / "index.json",
            f"the dataset stores {stored}, not {missing}",
            f"add {missing} to latents.store in the config and rerun the extraction",
        )


def load_latents(
    path_or_index: str | Path,
    split: str = "train",
    *,
    shuffle: int = 0,
    seed: int = 0,
    resampled: bool = False,
    posterior: tuple[str, ...] = (),
    scaled: bool = False,
) -> wds.DataPipeline:
    """An iterable of (latent, labels, meta) over one split, split by DDP rank and worker.

    Labels and meta come from each shard's sidecar (`<shard>.meta.json`), read once per
    shard by the worker that reads the tar.

    `shuffle` > 0 shuffles shard order (seeded, the same on every rank before the split)
    and samples within a buffer of that size; `resampled` draws shards with replacement
    (endless; each rank and worker with its own seed). `posterior` names stored arrays
    (`"mean"`, `"logvar"`, see `latents.store`) to add as a fourth element {name: tensor},
    e.g. to resample: mean + exp(logvar / 2) * noise. `scaled` returns the diffusion-ready
    latent instead of the stored raw posterior mean: `(z - shift_factor) * scaling_factor`, or per
    channel `(z - latents_mean) / latents_std`, as the dataset's `autoencoder.scaling` records.
    """
    urls = shard_urls(path_or_index, split)
    check_stored(path_or_index, posterior)
    scaling = None
    if scaled:
        folder, index = read_index(path_or_index)
        scaling = (index.get("autoencoder") or {}).get("scaling")
        if not scaling:
            raise InputError(
                folder / "index.json",
                "records no latent scaling (its autoencoder family defines none)",
                "load it with scaled=False: the stored latent is what this model gives",
            )
    if resampled:  # every rank and worker draws with its own seed: nothing to split
        stages = [wds.ResampledShards(urls, seed=seed, deterministic=True)]
    else:
        stages = [wds.SimpleShardList(urls)]
        if shuffle:
            stages.append(wds.detshuffle(bufsize=len(urls), seed=seed))
        stages += [wds.split_by_node, wds.split_by_worker]
    # joined before the shuffle, while samples still arrive shard by shard: one sidecar read per shard
    stages += [wds.tarfile_to_samples(), wds.map(partial(_with_sidecar, join=SidecarJoin()))]
    if shuffle:
        stages.append(wds.shuffle(shuffle, seed=seed))
    stages.append(wds.map(partial(_decode, names=tuple(posterior), scaling=scaling)))
    return wds.DataPipeline(*stages)
