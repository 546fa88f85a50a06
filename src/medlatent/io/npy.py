"""NumPy arrays (MRNet publishes (slices, H, W) uint8 stacks this way). An .npy carries no
geometry: 3D arrays get unit spacing and an identity affine, 2D arrays none."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medlatent.core.errors import InputError
from medlatent.io.types import HeaderInfo, LoadedImage, image_meta, require_dims, require_finite

_FIX = "re-export the array with numpy.save (numeric dtype, no pickled objects)"


def _load(path: Path, *, mmap: bool) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise InputError(path, f"not a readable .npy array ({type(error).__name__}: {error})", _FIX) from None
    if not isinstance(array, np.ndarray) or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(path, f"not a numeric array (dtype {getattr(array, 'dtype', type(array).__name__)})", _FIX)
    require_dims(array.shape, path, "array")
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


def read_header(path: Path) -> HeaderInfo:
    return _header(_load(path, mmap=True))


def read_image(path: Path) -> LoadedImage:
    array = _load(path, mmap=False)
    header = _header(array)
    affine = np.eye(4) if array.ndim == 3 else None
    image = require_finite(array.astype(np.float32), path)
    return LoadedImage(image, affine, header.spacing, image_meta(header, affine))
