"""Image readers behind one factory: `read_header` for curation, `read_image` for normalization.

The format is recognised by content (magic bytes), the file name only breaks ties, so an
`x.png` that holds text is refused as 'not an image file' rather than half-decoded. A
directory is a DICOM series. One module per format: dicom, nifti, npy, raster. Every reader
checks what a file declares against a `budget.DecodeBudget` before decoding it. Reasons
never quote a path, a file name or the file's bytes (`core.errors.library_error`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medlatent.core.errors import InputError
from medlatent.io import dicom, nifti, npy, raster
from medlatent.io.budget import DEFAULT_BUDGET, DecodeBudget, TooLargeError
from medlatent.io.types import HeaderInfo, LoadedImage

_RASTER_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
_NPY_MAGIC = b"\x93NUMPY"
#: A DICOM file written without its preamble starts with a group 0002 or 0008 tag (little endian).
_BARE_DICOM_STARTS = (b"\x02\x00", b"\x08\x00")

_READERS: dict[str, tuple[Callable[[Path, DecodeBudget], HeaderInfo], Callable[[Path, DecodeBudget], LoadedImage]]] = {
    "dicom": (dicom.read_header, dicom.read_image),
    "dicom_series": (dicom.read_series_header, dicom.read_series),
    "nifti": (nifti.read_header, nifti.read_image),
    "npy": (npy.read_header, npy.read_image),
    "raster": (raster.read_header, raster.read_image),
}


def detect_kind(path: Path) -> str:
    """'dicom', 'dicom_series', 'nifti', 'npy' or 'raster'; InputError for anything else."""
    path = Path(path)
    if path.is_dir():
        return "dicom_series"
    if not path.is_file():
        raise InputError(path, "no such file", "check the fetch receipt and the raw data folder")
    with open(path, "rb") as handle:
        start = handle.read(132)
    if not start:
        raise InputError(path, "empty file (0 bytes)", "re-fetch the file, or remove it from the image folder")
    if start[128:132] == b"DICM":
        return "dicom"
    if start.startswith(_NPY_MAGIC):
        return "npy"
    if start.startswith(_RASTER_MAGIC):
        return "raster"
    if nifti.is_nifti_name(path):
        return "nifti"
    if path.suffix.lower() in dicom.DICOM_SUFFIXES and start[:2] in _BARE_DICOM_STARTS:
        return "dicom"
    raise InputError(
        path,
        "not an image file: its content is not DICOM, NIfTI, NPY, PNG or JPEG",
        "remove it from the image folder, or list it as metadata if it describes the data",
    )


def read_header(path: Path, budget: DecodeBudget = DEFAULT_BUDGET) -> HeaderInfo:
    """Header of a file or series, without decoding pixels: enough for curation filters.
    TooLargeError when the image it declares is over `budget`."""
    path = Path(path)
    return _READERS[detect_kind(path)][0](path, budget)


def read_image(path: Path, frame: int | None = None, budget: DecodeBudget = DEFAULT_BUDGET) -> LoadedImage:
    """Decoded float32 image with geometry and allow-listed metadata; InputError if unusable,
    TooLargeError (before decoding) when it declares more than `budget`.

    `frame` picks one frame of a multi-frame DICOM file as a 2D image; without it such a file
    is read as one volume.
    """
    path = Path(path)
    kind = detect_kind(path)
    if frame is not None:
        if kind != "dicom":
            raise InputError(
                path,
                f"frame {frame} requested from a {kind} file, which has no frames",
                "re-run curation: the files changed since",
            )
        return dicom.read_image(path, budget, frame)
    return _READERS[kind][1](path, budget)


__all__ = ["DecodeBudget", "HeaderInfo", "LoadedImage", "TooLargeError", "detect_kind", "read_header", "read_image"]
