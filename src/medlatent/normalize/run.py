"""Modality-specific intensity and geometry normalization into the model's input range.

2D: intensity to [0, 1] (min-max within percentiles), aspect-preserving resize to fit the
configured size, pad with the background value. 3D: reorient to RAS, resample to the
configured spacing, intensity (CT: HU window; MRI: percentile scaling), optional centre
pad/crop. The 3D geometry is one torch pass (`normalize.geometry`) onto the grid MONAI's
Orientation + Spacing + ResizeWithPadOrCrop would produce; the 2D path is a plain resize and
pad in torch/numpy. Normalization does not import MONAI (seconds per job); only decoding's
inverse map (`resample_3d`) uses it. The parameters of every step are recorded so a latent can
be mapped back to the original grid.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from medlatent import io
from medlatent.core import rawpaths
from medlatent.core.errors import InputError, library_error
from medlatent.io.budget import DEFAULT_BUDGET, DecodeBudget
from medlatent.io.h5 import ShardWriter
from medlatent.normalize.geometry import plan_ras_grid, resample_to_grid

log = logging.getLogger(__name__)

#: Modes of the 3D resampling (grid_sample/MONAI names) for the configured interpolation (no bicubic/area in 3D).
INTERPOLATION_3D = {"nearest": "nearest", "bilinear": "bilinear", "bicubic": "bilinear", "area": "bilinear"}


def intensity_window(array: np.ndarray, spec: dict) -> tuple[float, float]:
    """The input intensities mapped to the ends of the output range: the CT HU window, else
    the configured percentiles of `array` (min and max read directly for 0 and 100: same
    values, no sort)."""
    if spec["modality"] == "ct":
        lo, hi = spec["hu_window"]
        return float(lo), float(hi)
    if list(spec["percentiles"]) == [0.0, 100.0]:
        return float(array.min()), float(array.max())
    lo, hi = np.percentile(array, spec["percentiles"])
    return float(lo), float(hi)


def scale_intensity(array: np.ndarray, spec: dict, overwrite: bool = False) -> tuple[np.ndarray, dict]:
    """Map intensities to spec['output_range'] in float32; returns the array and the mapping used.
    `overwrite`: scale a writable float32 `array` in place (its owner no longer needs it: one
    copy of a large volume less at the peak)."""
    lo_out, hi_out = spec["output_range"]
    lo, hi = intensity_window(array, spec)
    if hi <= lo:
        raise InputError(
            "<array>", f"constant image (intensity window {lo}..{hi} is empty)", "drop the image or check its decoding"
        )
    # one float32 buffer, updated in place: the same operations as the plain expression, no temporaries
    in_place = overwrite and array.dtype == np.float32 and array.flags.writeable
    scaled = np.subtract(array, np.float32(lo), dtype=np.float32, out=array if in_place else None)
    scaled /= np.float32(hi - lo)
    scaled *= np.float32(hi_out - lo_out)
    scaled += np.float32(lo_out)
    np.clip(scaled, lo_out, hi_out, out=scaled)
    return scaled, {"window": [lo, hi], "output_range": [lo_out, hi_out]}


def resize_2d(image: np.ndarray, shape: tuple[int, int], mode: str) -> np.ndarray:
    """A 2D float32 image resized to `shape` with torch `mode` (also how decoding maps back)."""
    # antialias when shrinking, as a radiologist's viewer does; only the smooth kernels take it
    antialias = (shape[0] < image.shape[0] or shape[1] < image.shape[1]) and mode in ("bilinear", "bicubic")
    smooth = {} if mode in ("nearest", "area") else {"align_corners": False}
    resized = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None],
        size=tuple(shape),
        mode=mode,
        antialias=antialias,
        **smooth,
    )
    return resized[0, 0].numpy()


def normalize_2d(array: np.ndarray, spec: dict, overwrite: bool = False) -> tuple[np.ndarray, dict]:
    """Intensity-scale an image, resize it to fit spec['size'] keeping its aspect and pad it
    centrally with the background; returns the image and the transform record."""
    scaled, intensity = scale_intensity(array, spec, overwrite)
    target_h, target_w = spec["size"]
    height, width = scaled.shape
    scale = min(target_h / height, target_w / width)
    resized_shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    lo_out, hi_out = spec["output_range"]
    pad_top = (target_h - resized_shape[0]) // 2
    pad_left = (target_w - resized_shape[1]) // 2
    out = np.full((target_h, target_w), lo_out, dtype=np.float32)
    inside = out[pad_top : pad_top + resized_shape[0], pad_left : pad_left + resized_shape[1]]
    np.clip(resize_2d(scaled, resized_shape, spec["interpolation"]), lo_out, hi_out, out=inside)  # bicubic overshoots
    transform = {
        "intensity": intensity,
        "scale": scale,
        "resized_shape": list(resized_shape),
        "pad_offset": [pad_top, pad_left],
    }
    return out, transform


def normalize_3d(
    array: np.ndarray, affine: np.ndarray, spec: dict, budget: DecodeBudget = DEFAULT_BUDGET, overwrite: bool = False
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Intensity-scale a volume, then reorient it to RAS, resample it to spec['spacing'] and
    centre pad/crop it to spec['size'] in one pass; returns the volume, its affine and the
    transform record (`resampled_shape` is the grid before pad/crop). TooLargeError, before
    sampling, when the sampled grid is over `budget`."""
    grid = plan_ras_grid(affine, array.shape, spec.get("spacing"), spec.get("size"))
    sampled = int(np.prod([stop - start for start, stop in grid.window], dtype=np.float64))
    budget.check_samples(Path("<volume>"), sampled, f"the resampled grid of {list(grid.resampled_shape)} voxels")
    scaled, intensity = scale_intensity(array, spec, overwrite)
    out = resample_to_grid(
        torch.from_numpy(scaled), grid, INTERPOLATION_3D[spec["interpolation"]], spec["output_range"][0]
    )
    transform = {"intensity": intensity, "orientation": "RAS", "resampled_shape": list(grid.resampled_shape)}
    return out.numpy(), grid.affine, transform


def resample_3d(
    volume: np.ndarray,
    affine: np.ndarray,
    target_affine: np.ndarray,
    target_shape: tuple[int, ...],
    mode: str,
    background: float,
) -> np.ndarray:
    """A float32 volume on the voxel grid (`target_affine`, `target_shape`) of the same world space.

    The inverse of `normalize_3d`'s geometry (how decoding maps a volume back onto its
    acquisition grid): MONAI `SpatialResample` with `mode` (INTERPOLATION_3D), voxels outside
    the volume's field of view set to `background`.
    """
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    # SpatialResample pads with zeros: shift so that zero is the background
    image = MetaTensor(
        torch.from_numpy(np.asarray(volume, dtype=np.float32) - background)[None],
        affine=torch.as_tensor(affine, dtype=torch.float64),
    )
    resampled = SpatialResample(mode=mode, padding_mode="zeros", dtype=torch.float32)(
        image, dst_affine=torch.as_tensor(target_affine, dtype=torch.float64), spatial_size=tuple(target_shape)
    )
    return np.asarray(resampled[0], dtype=np.float32) + np.float32(background)


def normalize_item(
    path: Path, spec: dict, frame: int | None = None, budget: DecodeBudget = DEFAULT_BUDGET
) -> tuple[np.ndarray, dict]:
    """Read (within `budget`) and normalize one item (one `frame` of a multi-frame file if
    given); returns the array and its allow-listed attributes."""
    loaded = io.read_image(path, frame=frame, budget=budget)
    attrs = {"original_shape": list(loaded.array.shape), **loaded.meta}
    if spec["dims"] == 2:
        array, transform = normalize_2d(loaded.array, spec, overwrite=True)
        attrs["spacing"] = list(loaded.spacing) if loaded.spacing else None
    else:
        # without a reader's geometry (e.g. .npy stacks) normalization takes voxels for 1 mm RAS
        original_affine = loaded.affine if loaded.affine is not None else np.eye(4)
        array, affine, transform = normalize_3d(loaded.array, original_affine, spec, budget, overwrite=True)
        attrs["original_affine"] = np.asarray(original_affine, dtype=np.float64).tolist()
        attrs["affine"] = affine.tolist()
        attrs["spacing"] = [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]
        attrs["orientation"] = "RAS"
    if not np.isfinite(array).all():
        raise InputError(path, "non-finite values after normalization", "check the source image for NaN/Inf")
    attrs["transform"] = transform
    return array, attrs


def normalize_shard(
    spec: dict,
    shard: str,
    manifest: pd.DataFrame,
    files_index: pd.DataFrame,
    root: Path,
    out: Path,
    demo: bool,
    budget: DecodeBudget = DEFAULT_BUDGET,
) -> dict:
    """Write one HDF5 shard; items that fail, whatever the error, are recorded in the shard with
    the reason (never a path), never dropped silently and never the end of the job."""
    rows = manifest[manifest["shard"] == shard]
    files = files_index.set_index("file_key")
    frames = files["frame"] if "frame" in files else pd.Series(pd.NA, index=files.index)
    counts = {"items": 0, "failed": 0}
    with ShardWriter(out, {"shard": shard, "normalize": spec, "demo": demo}) as writer:
        for row in tqdm(
            rows.itertuples(index=False), total=len(rows), desc=f"normalize {shard}", unit="item", mininterval=5
        ):
            try:
                frame = frames[row.file_key]
                path = root / rawpaths.from_bytes(files.at[row.file_key, "path_bytes"])
                array, attrs = normalize_item(path, spec, None if pd.isna(frame) else int(frame), budget)
            except Exception as error:  # noqa: BLE001 - one item must not end the shard
                reason = error.reason if isinstance(error, InputError) else f"{library_error(error)} while normalizing"
                writer.reject(row.item_id, reason)
                log.warning("failed %s: %s", row.item_id, reason)
                counts["failed"] += 1
                continue
            writer.add(row.item_id, array, {**attrs, "split": row.split})
            counts["items"] += 1
    log.info("normalized %s: %d items, %d failed", shard, counts["items"], counts["failed"])
    return counts
