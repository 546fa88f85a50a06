"""NumPy arrays (MRNet publishes (slices, H, W) uint8 stacks this way). An .npy carries no
geometry: 3D arrays get unit spacing and an identity affine, 2D arrays none."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medlatent.core.errors import InputError, library_error
from medlatent.io.budget import DecodeBudget
from medlatent.io.types import HeaderInfo, LoadedImage, image_meta, require_finite, require_real, require_shape

_FIX = "re-export the array with numpy.save (numeric dtype, no pickled objects)"


def _load(path: Path, budget: DecodeBudget) -> np.ndarray:
    """The array memory-mapped (nothing read yet), checked on its header."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise InputError(path, f"not a readable .npy array ({library_error(error)})", _FIX) from None
    if not isinstance(array, np.ndarray):
        raise InputError(path, "not a single .npy array", _FIX)
    require_real(array.dtype, path, "array")
    require_shape(array.shape, path, "array")
    budget.check_samples(path, array.size, f"array of shape {array.shape}")
    return array


def _header(array: np.ndarray) -> HeaderInfo:
    dims = array.ndim
    return HeaderInfo(
        kind="npy",
        dims=dims,
        shape=tuple(int(s) for s in array.shape),
        spacing=(1.0,) * dims if dims == 3 else None,
        bits_stored=array.dtype.itemsize * 8,
    )


def read_header(path: Path, budget: DecodeBudget) -> HeaderInfo:
    return _header(_load(path, budget))


def read_image(path: Path, budget: DecodeBudget) -> LoadedImage:
    array = _load(path, budget)
    header = _header(array)
    affine = np.eye(4) if array.ndim == 3 else None
    image = require_finite(array.astype(np.float32), path)
    return LoadedImage(image, affine, header.spacing, image_meta(header, affine))
