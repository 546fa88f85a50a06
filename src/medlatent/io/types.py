"""What every reader returns: a header for curation and a decoded image for normalization."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError

#: The only header fields an image's `meta` may carry downstream: none of them is PHI.
META_FIELDS = (
    "kind",
    "modality",
    "view_position",
    "laterality",
    "photometric",
    "bits_stored",
    "transfer_syntax",
    "presentation_intent",
)


@dataclass(frozen=True)
class HeaderInfo:
    """What curation needs to keep or reject an item, read without decoding pixels.

    `shape` follows the array `read_image` returns: (H, W) in 2D, voxel axes (i, j, k) in 3D;
    `spacing` is in mm along those axes. `patient_id` is the raw id: the caller hashes it and
    must never store it.
    """

    kind: str
    dims: int
    shape: tuple[int, ...]
    spacing: tuple[float, ...] | None = None
    modality: str | None = None
    photometric: str | None = None
    bits_stored: int | None = None
    transfer_syntax: str | None = None
    view_position: str | None = None
    laterality: str | None = None
    presentation_intent: str | None = None
    patient_id: str | None = None
    series_uid: str | None = None


@dataclass
class LoadedImage:
    """A decoded image in display orientation of intensities (bright = dense).

    `array` is float32, (H, W) in 2D or (i, j, k) voxel axes in 3D; `affine` maps voxel
    indices to RAS+ world mm (the nibabel convention); the voxel axes themselves need not be
    RAS-aligned, normalization reorients. `meta` holds allow-listed, PHI-free fields only.
    """

    array: np.ndarray
    affine: np.ndarray | None
    spacing: tuple[float, ...] | None
    meta: dict


def image_meta(header: HeaderInfo, affine: np.ndarray | None = None) -> dict:
    """The allow-listed, JSON-ready part of a header, plus the original grid of the image."""
    fields = asdict(header)
    meta = {name: fields[name] for name in META_FIELDS if fields[name] not in (None, "")}
    meta["original_shape"] = [int(s) for s in header.shape]
    if affine is not None:
        meta["original_orientation"] = "".join(nib.aff2axcodes(affine))
    return meta


def require_finite(array: np.ndarray, path: Path) -> np.ndarray:
    """NaN/Inf would poison every loss and metric downstream: refuse them here."""
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InputError(path, f"{bad} NaN/Inf values in the image", "fix or mask the non-finite voxels at the source, or exclude the file")
    return array


def require_dims(shape: tuple[int, ...], path: Path, what: str) -> int:
    """2 or 3 spatial dimensions, or raise naming the shape."""
    if len(shape) not in (2, 3):
        raise InputError(path, f"unsupported dims: {what} of shape {tuple(shape)} is neither 2D nor 3D", "convert it to one 2D image or 3D volume per file")
    return len(shape)
