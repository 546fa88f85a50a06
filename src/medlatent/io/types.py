"""What every reader returns: a header for curation and a decoded image for normalization."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from medlatent.core.errors import InputError

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
#: Photometric interpretations of grey images; any other is colour.
GREY_PHOTOMETRICS = frozenset({"MONOCHROME1", "MONOCHROME2"})
#: How colour becomes grey: the mean of the R, G and B channels, as the public MedVAE code
#: averages RGB to one channel. Recorded in the meta of every image it was applied to.
COLOUR_RULE = "mean_rgb"
#: |det| of the affine's axes below this fraction of their lengths' product: collinear axes.
SINGULAR_TOLERANCE = 1e-6
#: No scanner has voxels this large; a corrupt header that claims them would make a resampled grid of billions.
MAX_VOXEL_MM = 100.0
REEXPORT_FIX = "re-export the image from its source, or exclude the file"


@dataclass(frozen=True)
class HeaderInfo:
    """What curation needs to keep or reject an item, read without decoding pixels.

    `shape` follows the array `read_image` returns: (H, W) in 2D, voxel axes (i, j, k) in 3D;
    `spacing` is in mm along those axes. `frames` counts the frames of a multi-frame DICOM
    file (read as a volume, or frame by frame in a 2D source). `patient_id` is the raw id: the
    caller hashes it and must never store it.
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
    frames: int = 1


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
    if header.frames > 1:
        meta["frames"] = header.frames
    if affine is not None:
        meta["original_orientation"] = "".join(nib.aff2axcodes(affine))
    return meta


def is_colour(photometric: str | None) -> bool:
    """Whether an image of this photometric interpretation is colour (RGB, YBR_*, PALETTE COLOR, ...)."""
    return photometric is not None and photometric not in GREY_PHOTOMETRICS


def colour_to_grey(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB -> grey by COLOUR_RULE, float32."""
    return np.asarray(rgb, dtype=np.float32).mean(axis=-1, dtype=np.float32)


def require_finite(array: np.ndarray, path: Path) -> np.ndarray:
    """NaN/Inf would poison every loss and metric downstream: refuse them here."""
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InputError(
            path,
            f"{bad} NaN/Inf values in the image",
            "fix or mask the non-finite voxels at the source, or exclude the file",
        )
    return array


def require_shape(shape: tuple[int, ...], path: Path, what: str) -> int:
    """2 or 3 spatial dimensions, none of length zero (normalization divides by them); the dims."""
    if len(shape) not in (2, 3):
        raise InputError(
            path,
            f"unsupported dims: {what} of shape {tuple(shape)} is neither 2D nor 3D",
            "convert it to one 2D image or 3D volume per file",
        )
    if min(shape) < 1:
        raise InputError(path, f"empty image: {what} of shape {tuple(shape)} has an axis of length 0", REEXPORT_FIX)
    return len(shape)


def require_real(dtype: np.dtype, path: Path, what: str) -> None:
    """Integer or floating-point samples only: a complex image would lose its imaginary part,
    a boolean one is a mask, structured (RGB NIfTI) and object arrays are no grey levels."""
    if dtype.kind not in "iuf":
        raise InputError(
            path,
            f"unsupported sample type: {what} of dtype {dtype} is not real-valued grey levels",
            "store the magnitude (or the channel to use) as an integer or float image",
        )


def require_geometry(affine: np.ndarray, path: Path) -> None:
    """A voxel-to-world affine normalization can reorient and resample: finite, no zero-length
    axis, axes not collinear (a singular or zero affine has no RAS grid), voxels of at most
    MAX_VOXEL_MM."""
    axes = np.asarray(affine, dtype=np.float64)[:3, :3]
    lengths = np.linalg.norm(axes, axis=0)
    fix = "fix the header's orientation and voxel size (sform/qform, ImageOrientationPatient, PixelSpacing)"
    if (
        not np.isfinite(affine).all()
        or lengths.min() <= 0
        or abs(np.linalg.det(axes)) <= SINGULAR_TOLERANCE * lengths.prod()
    ):
        raise InputError(path, "unusable geometry: the voxel-to-world affine is non-finite, zero or singular", fix)
    if lengths.max() > MAX_VOXEL_MM:
        raise InputError(
            path, f"implausible geometry: a voxel of {lengths.max():.3g} mm (more than {MAX_VOXEL_MM} mm)", fix
        )
