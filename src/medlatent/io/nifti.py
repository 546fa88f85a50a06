"""NIfTI volumes through nibabel. The affine is kept as written (orientation and spacing of the
file); normalization reorients to RAS with MONAI, so nothing is resampled twice."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from medlatent.core.errors import InputError, library_error
from medlatent.io.budget import DecodeBudget
from medlatent.io.types import (
    HeaderInfo,
    LoadedImage,
    image_meta,
    require_finite,
    require_geometry,
    require_real,
    require_shape,
)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_READ_ERRORS = (
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
    OSError,
    EOFError,
    ValueError,
    gzip.BadGzipFile,
    zlib.error,
)
_REWRITE_FIX = "re-download or re-export the file; exclude it if it is corrupt at the source"


def is_nifti_name(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _load(path: Path, budget: DecodeBudget) -> tuple[nib.Nifti1Image, tuple[int, ...]]:
    """The lazily loaded image (header only: a .nii.gz is not inflated) and its 3D shape, 4D
    only when the 4th axis has length 1; checked before any voxel is read."""
    try:
        image = nib.load(path)
    except _READ_ERRORS as error:
        raise InputError(path, f"not a readable NIfTI file ({library_error(error)})", _REWRITE_FIX) from None
    shape = tuple(int(s) for s in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) == 4:
        raise InputError(
            path,
            f"4D NIfTI of shape {shape}: a time series or several volumes in one file",
            "split it into 3D volumes (e.g. fslsplit) and keep the one to use",
        )
    if len(shape) != 3:
        raise InputError(
            path, f"unsupported dims: NIfTI of shape {shape} is not a 3D volume", "store one 3D volume per file"
        )
    # RGB NIfTI (a structured dtype) is refused too: the colour rule is for 2D radiographs
    require_real(image.header.get_data_dtype(), path, "NIfTI volume")
    require_shape(shape, path, "NIfTI volume")
    require_geometry(image.affine, path)
    budget.check_samples(path, int(np.prod(shape)), f"NIfTI volume of shape {shape}")
    return image, shape


def _header(image: nib.Nifti1Image, shape: tuple[int, ...]) -> HeaderInfo:
    return HeaderInfo(kind="nifti", dims=3, shape=shape, spacing=tuple(float(z) for z in image.header.get_zooms()[:3]))


def read_header(path: Path, budget: DecodeBudget) -> HeaderInfo:
    return _header(*_load(path, budget))


def read_image(path: Path, budget: DecodeBudget) -> LoadedImage:
    image, shape = _load(path, budget)
    try:
        array = image.get_fdata(dtype=np.float32).reshape(shape)
    except _READ_ERRORS as error:
        raise InputError(path, f"truncated or corrupt NIfTI data ({library_error(error)})", _REWRITE_FIX) from None
    header = _header(image, shape)
    affine = np.asarray(image.affine, dtype=np.float64)
    return LoadedImage(require_finite(array, path), affine, header.spacing, image_meta(header, affine))
