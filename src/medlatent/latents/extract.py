"""Encode normalized shards into WebDataset tars of deterministic latents and their sidecars.

The model is any autoencoder family, seen only through `medlatent.models.families.LatentModel`
(it adapts the normalized items to its network and pads them); its record goes into the part
records and from there into index.json and the card.

A sample is `__key__` = item_id (never a dot: WebDataset splits member names at the first
dot of the base name), `latent.npy` (float16, C x h x w or C x d x h x w: the posterior mean,
after the stage-2 projection for 2D models: what classifiers see), the arrays `latents.store`
asks for (`mean.npy`: the unprojected posterior mean of a 2D model, which is what the decoder
decodes, the projection being not invertible; `logvar.npy`: the posterior log-variance, to
resample), `indices.npy` for vector-quantized models (their integer codes) and, with
`latents.timm_json`, a `json` member holding its labels (where timm's
WebDataset reader takes targets from). Its meta (allow-listed fields, no PHI) and labels (the
manifest's `label_<name>` columns as `{name: value}`) go to the shard's sidecar
`<shard>.meta.json` (`medlatent.latents.sidecar`), so that a small latent is one tar member.

Outputs of a job, and why: one job encodes a run of shards of one split
(`latents.shards_per_job`, `medlatent.config.extraction_groups`). Snakemake needs every output
declared up front, but a shard can be empty (every item rejected, or a small source with more
shards than items) and an empty tar would be a useless member of the dataset that loaders and
timm's reader must then special-case. So the declared output of the job is a small JSON *part
record* kept outside the published folder (`data/latent_parts/{model}/{source}/{group}.json`:
per shard, sample count, sha256 and size of the tar and its sidecar, storage figures, rejected
items), and the tar `data/latents/{model}/{source}/{shard}.tar` and its sidecar are written only
when the shard has samples. The per-dataset index step reads the part records, so it knows
exactly which tars exist and checks each against its recorded sha256. Every tar and sidecar is
complete before the part record appears (each written to a temporary name and renamed), so a
killed job leaves neither a partial file nor a record that would make Snakemake take the job
for done.

Byte reproducibility: samples in sorted item order, tar members with fixed mtime, mode,
uid/gid 0 and owner names, canonical JSON, and the posterior mean (no sampling). The same
weights on the same kind of device with the same batch size give identical bytes.
"""

from __future__ import annotations

import io
import logging
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import torch
import webdataset as wds
from tqdm import tqdm

from medlatent.config import canonical_json
from medlatent.core.atomic import atomic_path, write_text
from medlatent.core.errors import ConfigError, InputError
from medlatent.core.hashing import file_sha256
from medlatent.io.h5 import ShardReader
from medlatent.latents.index import LATENT_DTYPE, PART_FORMAT
from medlatent.latents.memory import fitting_items
from medlatent.latents.precision import autocast, latent_error
from medlatent.latents.reading import plan_batches, read_batches
from medlatent.latents.sidecar import build_sidecar, sidecar_path
from medlatent.latents.window import MEDVAE_RULE, encode_volume, medvae_window
from medlatent.models.families import load_latent_model
from medlatent.models.families.base import LatentModel

log = logging.getLogger(__name__)

#: Fixed tar member attributes: a rerun must give the same bytes.
TAR_MTIME = 0
TAR_OWNER = "medlatent"
TAR_MODE = 0o444

#: Item attributes (from the normalized shard) that may appear in a sample's meta; nothing else does.
ITEM_FIELDS = (
    "original_shape",
    "original_orientation",
    "original_affine",
    "spacing",
    "affine",
    "orientation",
    "view_position",
    "laterality",
)
#: Allow-listed parts of the normalization record: crop/pad offsets, scales, intensity window.
TRANSFORM_FIELDS = ("scale", "resized_shape", "pad_offset", "resampled_shape", "orientation")
INTENSITY_FIELDS = ("window", "output_range")
LABEL_PREFIX = "label_"


def _plain(value):
    """numpy / pandas scalars to JSON builtins; missing values to None."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def sample_meta(item_meta: dict, base: dict, encoding: dict, latent_shape: tuple[int, ...]) -> dict:
    """The meta of one sample: the allow-list of item fields plus what made the latent."""
    transform = item_meta.get("transform", {})
    normalization = {key: transform[key] for key in TRANSFORM_FIELDS if key in transform}
    intensity = transform.get("intensity", {})
    normalization["intensity"] = {key: intensity[key] for key in INTENSITY_FIELDS if key in intensity}
    meta = {key: _plain(item_meta[key]) for key in ITEM_FIELDS if item_meta.get(key) is not None}
    return {
        **meta,
        **base,
        "normalization": normalization,
        "encoding": encoding,
        "latent_shape": list(latent_shape),
        "latent_dtype": np.dtype(LATENT_DTYPE).name,
    }


def sample_labels(row: pd.Series) -> dict:
    """The labels of one sample: the manifest's label_<name> columns as {name: value}."""
    return {key[len(LABEL_PREFIX) :]: _plain(value) for key, value in row.items() if key.startswith(LABEL_PREFIX)}


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as the bytes of a .npy file (no pickle)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def sample_record(item_id: str, arrays: dict[str, np.ndarray], timm_labels: dict | None = None) -> dict:
    """The encoded WebDataset sample (member suffix -> bytes); `arrays`: {"latent": ..., stored extras}.

    `timm_labels` (with `latents.timm_json`) become a `json` member, where timm reads targets.
    """
    if "." in item_id:
        raise InputError(
            item_id,
            "item id contains a dot: WebDataset would split the sample key there",
            "re-curate the source (medlatent.core.ids.item_id never makes dots)",
        )
    return {
        "__key__": item_id,
        **{f"{name}.npy": npy_bytes(array) for name, array in arrays.items()},
        **({} if timm_labels is None else {"json": canonical_json(timm_labels).encode("utf-8")}),
    }


@contextmanager
def _tar_writer(stream: BinaryIO) -> Iterator[wds.TarWriter]:
    """A TarWriter with fixed member attributes whose archive ends at its two end-of-archive blocks.

    tarfile pads an archive to 10 KiB records; readers (tarfile, GNU tar, webdataset) need only
    the end blocks, and the padding would cost a small shard up to 9 KiB.
    """
    writer = wds.TarWriter(stream, user=TAR_OWNER, group=TAR_OWNER, mode=TAR_MODE, encoder=False, mtime=TAR_MTIME)
    with writer:
        yield writer
        end = writer.tarstream.offset + 2 * tarfile.BLOCKSIZE
    stream.truncate(end)


class _MeanAndLogvar(torch.nn.Module):
    """A windowed 3D model whose `encode_latent` gives [posterior mean, log-variance] on the channel axis.

    So `encode_volume` windows and blends both alike (the blended log-variance is the
    weighted mean of the windows' log-variances, as the mean is of their means).
    """

    def __init__(self, model: LatentModel) -> None:
        super().__init__()
        self.model = model
        self.downsample_factor = model.downsample_factor

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.model.encode_posterior(x), dim=1)


def stored_arrays(model: LatentModel, store: list[str]) -> list[str]:
    """The arrays of a sample: the latent, what `latents.store` asks for, the family's own extras (VQ codes)."""
    unknown = [name for name in store if name not in model.posterior_arrays]
    if unknown:
        raise ConfigError(
            f"model {model.spec.get('id')!r} ({model.family}, {model.dims}D) has no {unknown} to store beside its "
            f"latent (it has {list(model.posterior_arrays)}; a 3D or unprojected latent is the posterior mean itself, "
            "so `mean` is never stored twice): remove them from latents.store"
        )
    return ["latent", *store, *model.extra_arrays]


def encode_items(
    model: LatentModel,
    reader: ShardReader,
    item_ids: list[str],
    spec: dict,
    device: torch.device,
    batch_sizes: dict[str, int] | None = None,
    workers: int = 0,
    precision_error: dict | None = None,
) -> Iterator[tuple[str, np.ndarray, dict, dict[str, np.ndarray], dict]]:
    """(item_id, image, item meta, {"latent", stored extras}: arrays, encoding) in item order.

    Items per encoder forward come from `latents.max_memory_gb` (`medlatent.latents.memory`), capped
    by `batch_size` (2D images, or slices of a slice-wise 3D model) or `sw_batch_size` (3D windows);
    `batch_sizes` collects them per item shape. `workers` processes read and stack the batches ahead
    of the encoder (`medlatent.latents.reading`). The encoder runs at `latents.precision`; unless
    fp32, the first batch is encoded again in float32 and `precision_error` collects the difference
    (`medlatent.latents.precision`).
    """
    derived = {} if batch_sizes is None else batch_sizes
    measured = {} if precision_error is None else precision_error

    def budget(shape: tuple[int, ...], cap: int, knobs: str) -> int:
        key = "x".join(map(str, shape))
        if key not in derived:
            derived[key] = fitting_items(
                model.weight_bytes(), model.item_bytes(shape), shape, spec["max_memory_gb"], cap, knobs
            )
            log.info(
                "%s/%s: %d items of shape %s per encoder forward", spec["model"], spec["source"], derived[key], key
            )
        return derived[key]

    store = spec["store"]
    stored = stored_arrays(model, store)
    base = {
        "method": model.method,
        "projection": model.projected,
        "downsample_factor": model.factors[0] if len(set(model.factors)) == 1 else list(model.factors),
        "stored": stored,
        "precision": spec["precision"],
    }
    shapes = [(item_id, reader.shape(item_id)) for item_id in item_ids]
    if spec["dims"] == 2:
        knobs = "latents.max_memory_gb or lower the image size"
        batches = plan_batches(shapes, lambda shape: budget(shape, spec["batch_size"], knobs))

        def encode(ids: list[str], images: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
            with torch.inference_mode():
                arrays, info = model.encode(images)
            return {name: arrays[name] for name in stored}, info

    elif not model.windowed:  # a whole volume per call, `slices_per_forward` slices of it per forward (slice-wise)
        knobs = "latents.max_memory_gb or lower the image size"
        slices = {item_id: budget(model.budget_unit(shape), spec["batch_size"], knobs) for item_id, shape in shapes}
        batches = [[item_id] for item_id in item_ids]

        def encode(ids: list[str], images: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
            model.slices_per_forward = slices[ids[0]]
            with torch.inference_mode():
                arrays, info = model.encode(images)
            return {name: arrays[name] for name in stored}, info

    else:
        encoder = _MeanAndLogvar(model) if "logvar" in store else model
        windows = {}
        for item_id, shape in shapes:  # every budget first, so one too large stops before anything is encoded
            window = medvae_window(list(shape)) if spec["window"] == MEDVAE_RULE else spec["window"]
            one_pass = tuple(min(size, side) for size, side in zip(shape, window, strict=True))
            windows[item_id] = budget(one_pass, spec["sw_batch_size"], "latents.max_memory_gb or lower latents.window")
        batches = [[item_id] for item_id in item_ids]

        def encode(ids: list[str], images: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
            latent, info = encode_volume(
                encoder, images[0], spec["window"], spec["overlap"], spec["blend"], windows[ids[0]]
            )
            arrays = {"latent": latent[None, : model.latent_channels]}
            if "logvar" in store:
                arrays["logvar"] = latent[None, model.latent_channels :]
            return arrays, info

    for ids, images, metas in read_batches(reader.path, batches, workers, device):
        on_device = images.to(device, non_blocking=True)
        with autocast(spec["precision"], device):
            moments, info = encode(ids, on_device)
        if spec["precision"] != "fp32" and not measured:
            reference, _ = encode(ids, on_device)
            measured.update({**latent_error(moments["latent"], reference["latent"]), "items": len(ids)})
        moments = {
            name: (values.float() if values.is_floating_point() else values).cpu().numpy()
            for name, values in moments.items()
        }
        for position, (item_id, meta) in enumerate(zip(ids, metas, strict=True)):
            array = images[position].numpy()
            yield (
                item_id,
                array,
                meta,
                {name: values[position] for name, values in moments.items()},
                {**base, "normalized_shape": list(array.shape), **info},
            )


def _check_shard(shard_path: Path, shard: str, rows: pd.DataFrame, reader: ShardReader) -> None:
    """The shard must hold exactly the manifest's items of this shard (kept or rejected)."""
    expected, present = set(rows["item_id"]), set(reader.item_ids())
    extra = sorted(present - expected)
    missing = sorted(expected - present - set(reader.rejected))
    if extra or missing:
        raise InputError(
            shard_path,
            f"does not match the manifest for shard {shard}: {len(extra)} items not in it "
            f"(e.g. {extra[:3]}), {len(missing)} of its items absent (e.g. {missing[:3]})",
            "the manifest changed after normalization: rerun the normalize_shard job",
        )
    splits = set(rows["split"])
    if splits and splits != {shard.split("-")[0]}:
        raise InputError(shard_path, f"shard {shard} holds items of splits {sorted(splits)}", "re-curate the source")


def extract_shards(
    spec: dict,
    shard_paths: list[str | Path],
    manifest: pd.DataFrame,
    weights: str | Path,
    dataset_dir: str | Path,
    record_path: str | Path,
    device: str = "cpu",
    workers: int = 0,
) -> list[dict]:
    """Encode each shard into `dataset_dir/<shard>.tar` and its sidecar (if it has items); write the part record.

    The model is loaded once for all the shards of the job. The part record holds one entry per
    shard, in the order given. `workers`: processes reading each shard ahead of the encoder (0:
    this one); the bytes written do not depend on it.
    """
    weights, dataset_dir = Path(weights), Path(dataset_dir)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    model = load_latent_model(weights).placed(device)
    if model.spec.get("id") != spec["model"] or model.dims != spec["dims"]:
        raise InputError(
            weights,
            f"weights are for {model.dims}D model {model.spec.get('id')!r}, "
            f"not {spec['dims']}D model {spec['model']!r}",
            "rerun the training rule of this model",
        )
    weights_sha256 = file_sha256(weights)
    parts = [
        _extract_shard(model, weights_sha256, spec, Path(shard_path), manifest, dataset_dir, device, workers)
        for shard_path in tqdm(shard_paths, desc=f"{spec['model']}/{spec['source']}", unit="shard")
    ]
    record = {"format": PART_FORMAT, "model": spec["model"], "source": spec["source"], "parts": parts}
    write_text(record_path, canonical_json(record) + "\n")
    return parts


def _extract_shard(
    model: LatentModel,
    weights_sha256: str,
    spec: dict,
    shard_path: Path,
    manifest: pd.DataFrame,
    dataset_dir: Path,
    device: str,
    workers: int,
) -> dict:
    """One shard's tar and sidecar (when it has items), and its entry of the part record."""
    shard = shard_path.stem
    rows = manifest[manifest["shard"] == shard].set_index("item_id", drop=False)
    tar_path = dataset_dir / f"{shard}.tar"
    meta_path = sidecar_path(tar_path)
    with ShardReader(shard_path) as reader:
        _check_shard(shard_path, shard, rows, reader)
        item_ids = reader.item_ids()
        base = {
            "source": spec["source"],
            "modality": spec["modality"],
            "dims": spec["dims"],
            "split": shard.split("-")[0],
            "model": spec["model"],
            "weights_sha256": weights_sha256,
            "demo_weights": bool(model.is_demo),
        }
        counts = {"input_float32_bytes": 0, "latent_float16_bytes": 0, "stored_float16_bytes": 0}
        shapes: set[tuple[int, ...]] = set()
        entries: dict[str, tuple[dict, dict]] = {}
        batch_sizes: dict[str, int] = {}
        precision_error: dict = {}
        if item_ids:
            with (
                atomic_path(tar_path) as temporary,
                open(temporary, "wb") as stream,
                _tar_writer(stream) as writer,
            ):
                for item_id, array, meta, arrays, encoding in encode_items(
                    model, reader, item_ids, spec, torch.device(device), batch_sizes, workers, precision_error
                ):
                    stored = {
                        name: values.astype(LATENT_DTYPE) if np.issubdtype(values.dtype, np.floating) else values
                        for name, values in arrays.items()
                    }
                    for name, values in stored.items():
                        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
                            raise InputError(
                                shard_path,
                                f"item {item_id}: {name} not finite in float16 (max |value| "
                                f"{float(np.abs(arrays[name]).max()):.3g}; encoded at latents.precision "
                                f"{spec['precision']}, NaN for {int(np.isnan(arrays[name]).sum())} values)",
                                "set latents.precision: fp32 (or bf16): some VAEs overflow in fp16, e.g. the "
                                "SDXL VAE; if it is fp32 already, check the model weights",
                            )
                    labels = sample_labels(rows.loc[item_id])
                    meta = sample_meta(meta, base, encoding, stored["latent"].shape)  # item_id: the key
                    writer.write(sample_record(item_id, stored, labels if spec.get("timm_json") else None))
                    entries[item_id] = (labels, meta)
                    counts["input_float32_bytes"] += array.size * 4
                    counts["latent_float16_bytes"] += stored["latent"].nbytes
                    counts["stored_float16_bytes"] += sum(values.nbytes for values in stored.values())
                    shapes.add(stored["latent"].shape)
            write_text(meta_path, build_sidecar(tar_path.name, entries) + "\n")
        else:  # the shard used to have items: its old files must not be indexed
            tar_path.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
        part = {
            "model": spec["model"],
            "source": spec["source"],
            "shard": shard,
            "split": base["split"],
            "tar": tar_path.name if item_ids else None,
            "num_samples": len(item_ids),
            "sha256": file_sha256(tar_path) if item_ids else None,
            "bytes": tar_path.stat().st_size if item_ids else 0,
            "sidecar": meta_path.name if item_ids else None,
            "sidecar_sha256": file_sha256(meta_path) if item_ids else None,
            "sidecar_bytes": meta_path.stat().st_size if item_ids else 0,
            "timm_json": bool(spec.get("timm_json")),
            "normalized_bytes": shard_path.stat().st_size,
            **counts,
            "latent_shapes": sorted(list(shape) for shape in shapes),
            "rejected": dict(sorted(reader.rejected.items())),
            "weights_sha256": weights_sha256,
            "demo_weights": bool(model.is_demo),
            "demo_data": bool(reader.meta.get("demo", False)),
            "projected": model.projected,
            "stored": stored_arrays(model, spec["store"]),
            "factors": list(model.factors),
            "autoencoder": model.record(),
            "normalize": reader.meta.get("normalize"),
            "encoding": {key: spec[key] for key in ("window", "overlap", "blend", "precision") if key in spec},
            "precision_error": precision_error or None,
            "device": torch.device(device).type,
            "max_memory_gb": spec["max_memory_gb"],
            "batch_sizes": dict(sorted(batch_sizes.items())),
        }
    log.info("%s/%s %s: %d samples -> %s", spec["model"], spec["source"], shard, len(item_ids), part["tar"])
    return part
