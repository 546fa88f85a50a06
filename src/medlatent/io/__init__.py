"""Image readers behind one factory: `read_header` for curation, `read_image` for normalization.

The format is recognised by content (magic bytes), the file name only breaks ties, so an
`x.png` that holds text is refused as 'not an image file' rather than half-decoded. A
directory is a DICOM series. One module per format: dicom, nifti, npy, raster.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medlatent.core.errors import InputError
from medlatent.io import dicom, nifti, npy, raster
from medlatent.io.types import HeaderInfo, LoadedImage

_RASTER_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
_NPY_MAGIC = b"\x93NUMPY"
#: A DICOM file written without its preamble starts with a group 0002 or 0008 tag (little endian).
_BARE_DICOM_STARTS = (b"\x02\x00", b"\x08\x00")

_READERS: dict[str, tuple[Callable[[Path], HeaderInfo], Callable[[Path], LoadedImage]]] = {
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
    return _unrecognised(path, start)


def _unrecognised(path: Path, start: bytes) -> str:
    named = f"named {path.suffix} but " if path.suffix else ""
    shown = start[:8].hex(" ")
    raise InputError(
        path,
        f"not an image file: {named}its content is not DICOM, NIfTI, NPY, PNG or JPEG (first bytes {shown})",
        "remove it from the image folder, or list it as metadata if it describes the data",
    )


def read_header(path: Path) -> HeaderInfo:
    """Header of a file or series, without decoding pixels: enough for curation filters."""
    path = Path(path)
    return _READERS[detect_kind(path)][0](path)


def read_image(path: Path, frame: int | None = None) -> LoadedImage:
    """Decoded float32 image with geometry and allow-listed metadata; InputError if unusable.

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
        return dicom.read_image(path, frame)
    return _READERS[kind][1](path)


__all__ = ["HeaderInfo", "LoadedImage", "detect_kind", "read_header", "read_image"]
