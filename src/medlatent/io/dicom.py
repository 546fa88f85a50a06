"""DICOM: single images (X-ray, mammography) and directories of slices (CT/MR series).

pydicom 3 decodes the pixel data (RLE, JPEG, JPEG 2000 through the pylibjpeg plugins), then
the display pipeline of the standard is applied in its order: modality LUT (rescale to e.g.
HU), VOI LUT for projection radiography (window or LUT table), MONOCHROME1 inversion, so that
bright always means dense. Series are ordered by position along the slice normal, never by
file name, and get a RAS affine (DICOM patient space is LPS).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..errors import InputError
from .types import HeaderInfo, LoadedImage, image_meta

DICOM_SUFFIXES = (".dcm", ".dicom")
#: Modalities whose stored values need the VOI LUT to look like the image a reader sees.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "RF", "XA", "IO", "PX"})
#: Header reads leave values above this size (the pixel data) on disk.
HEADER_DEFER_SIZE = "16 KB"
PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
#: Slice gaps may differ by this much (relative) before a series counts as inconsistent.
SPACING_TOLERANCE = 0.05
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
REWRITE_FIX = "re-export or re-download the file; if it is corrupt at the source, exclude it"


def looks_like_dicom(path: Path) -> bool:
    """A .dcm/.dicom name, or the 'DICM' magic after the 128-byte preamble."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with open(path, "rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def _open(path: Path, *, pixels: bool) -> Dataset:
    """Read a DICOM file; pixel data stays on disk unless `pixels`. Refuses truncated files."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, defer_size=None if pixels else HEADER_DEFER_SIZE, force=True)
        except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(path, f"not a readable DICOM file ({type(error).__name__}: {error})", REWRITE_FIX) from None
    ends_early = [w for w in caught if "end of file" in str(w.message).lower()]
    for caught_warning in caught:  # intercepted only to spot truncation: pass the others on
        if caught_warning not in ends_early:
            warnings.warn_explicit(caught_warning.message, caught_warning.category, caught_warning.filename, caught_warning.lineno)
    if "PixelData" not in ds:
        if ends_early:
            raise InputError(path, "truncated DICOM: the file ends inside the encapsulated pixel data", REWRITE_FIX)
        raise InputError(path, "DICOM file without pixel data (not an image: report, presentation state, ...)", "remove it from the image folder")
    if "TransferSyntaxUID" not in ds.file_meta:
        # A bare dataset without file meta: the encoding pydicom found is its transfer syntax.
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    for keyword in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"):
        if keyword not in ds:
            raise InputError(path, f"DICOM image without {keyword}", REWRITE_FIX)
    _check_pixel_length(ds, path)
    return ds


def _check_pixel_length(ds: Dataset, path: Path) -> None:
    """Compare the bytes the pixel data element declares with the file and the image size."""
    element = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if isinstance(element, RawDataElement):
        declared = element.length
        if declared != UNDEFINED_LENGTH and element.value_tell + declared > path.stat().st_size:
            raise InputError(
                path,
                f"truncated DICOM: pixel data should end at byte {element.value_tell + declared} but the file has {path.stat().st_size} bytes",
                REWRITE_FIX,
            )
    else:
        declared = len(element.value) if element.value is not None else 0
    transfer_syntax = ds.file_meta.TransferSyntaxUID
    if not transfer_syntax.is_encapsulated and declared != UNDEFINED_LENGTH:
        expected = get_expected_length(ds)
        if declared < expected:
            raise InputError(path, f"pixel data shorter than expected ({declared} of {expected} bytes)", REWRITE_FIX)


def _text(ds: Dataset, keyword: str) -> str | None:
    """A tag as stripped text; None when absent or blank."""
    value = ds.get(keyword)
    if value is None:
        return None
    return str(value).strip() or None


def _header(ds: Dataset, path: Path, kind: str = "dicom") -> HeaderInfo:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(path, f"unsupported dims: multi-frame DICOM ({frames} frames)", "convert it to NIfTI (e.g. dcm2niix) or to single-frame slices")
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    return HeaderInfo(
        kind=kind,
        dims=2,
        shape=(int(ds.Rows), int(ds.Columns)),
        spacing=tuple(float(s) for s in spacing) if spacing else None,
        modality=_text(ds, "Modality"),
        photometric=_text(ds, "PhotometricInterpretation"),
        bits_stored=int(ds.BitsStored) if "BitsStored" in ds else None,
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
        view_position=_text(ds, "ViewPosition"),
        laterality=_text(ds, "ImageLaterality") or _text(ds, "Laterality"),
        presentation_intent=_text(ds, "PresentationIntentType"),
        patient_id=_text(ds, "PatientID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
    )


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    """The stored values, or an InputError naming the transfer syntax and the plugin to install."""
    transfer_syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        raise InputError(path, f"no pixel data decoder exists for transfer syntax {transfer_syntax.name} ({transfer_syntax})", "convert the file to an uncompressed or standard compressed transfer syntax") from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise InputError(path, f"cannot decode {transfer_syntax.name} ({transfer_syntax}): no decoding plugin installed", f"install one of: {missing}")
    try:
        return ds.pixel_array
    except Exception as error:  # noqa: BLE001 - plugins raise many types; all mean 'corrupt data'
        raise InputError(path, f"undecodable {transfer_syntax.name} pixel data ({type(error).__name__}: {error})", REWRITE_FIX) from None


def _stored_range(ds: Dataset) -> np.ndarray:
    bits = int(ds.BitsStored)
    if int(ds.PixelRepresentation) == 1:
        return np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], dtype=np.int64)
    return np.array([0, 2**bits - 1], dtype=np.int64)


def _display(stored: np.ndarray, ds: Dataset, *, voi: bool) -> np.ndarray:
    """Modality LUT, then (if `voi`) the VOI LUT: stored values -> values shown to a reader."""
    values = apply_modality_lut(stored, ds)
    if voi and "VOILUTSequence" in ds and not np.issubdtype(values.dtype, np.integer):
        values = np.rint(values).astype(np.int64)  # a LUT is indexed by whole modality values
    if voi and ("VOILUTSequence" in ds or "WindowCenter" in ds):
        values = apply_voi_lut(values, ds)
    return values


def read_header(path: Path) -> HeaderInfo:
    return _header(_open(path, pixels=False), path)


def read_image(path: Path) -> LoadedImage:
    ds = _open(path, pixels=True)
    header = _header(ds, path)
    if header.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(path, f"unsupported photometric interpretation {header.photometric}", "only greyscale (MONOCHROME1/2) images are used; exclude colour captures")
    voi = header.modality in PROJECTION_MODALITIES
    array = _display(_decode(ds, path), ds, voi=voi)
    if header.photometric == "MONOCHROME1":
        # Low values are white: mirror within the range the display pipeline can produce.
        low, high = np.sort(_display(_stored_range(ds), ds, voi=voi))
        array = low + high - array
    return LoadedImage(np.asarray(array, dtype=np.float32), None, header.spacing, image_meta(header))


def _series_files(directory: Path) -> list[Path]:
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name.upper() != "DICOMDIR" and looks_like_dicom(p))
    if not files:
        raise InputError(directory, "empty series: the directory holds no DICOM slices", "point the source at a directory of DICOM slices")
    return files


def _series_geometry(slices: list[Dataset], directory: Path) -> tuple[list[int], np.ndarray, tuple[float, float, float]]:
    """Slice order along the normal, the RAS affine and the voxel spacing of a series."""
    first = slices[0]
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        if any(keyword not in ds for ds in slices):
            raise InputError(directory, f"series without {keyword} on every slice: geometry unknown", "convert the series with dcm2niix and use the NIfTI")
    orientation = np.array(first.ImageOrientationPatient, dtype=np.float64)
    if any(not np.allclose(np.array(ds.ImageOrientationPatient, dtype=np.float64), orientation, atol=1e-4) for ds in slices):
        raise InputError(directory, "slices of the series differ in ImageOrientationPatient", "split the directory into one series per orientation")
    if len({(int(ds.Rows), int(ds.Columns)) for ds in slices}) > 1:
        raise InputError(directory, "slices of the series differ in size (Rows/Columns)", "split the directory into one series per image size")
    row_cosine, column_cosine = orientation[:3], orientation[3:]
    normal = np.cross(row_cosine, column_cosine)
    positions = np.array([ds.ImagePositionPatient for ds in slices], dtype=np.float64)
    order = [int(i) for i in np.argsort(positions @ normal, kind="stable")]
    row_spacing, column_spacing = (float(s) for s in first.PixelSpacing)
    if len(slices) > 1:
        gaps = np.diff((positions @ normal)[order])
        typical = float(np.median(gaps))
        if typical <= 0 or np.max(np.abs(gaps - typical)) > SPACING_TOLERANCE * typical:
            raise InputError(
                directory,
                f"inconsistent slice spacing: gaps from {gaps.min():.3g} to {gaps.max():.3g} mm between {len(slices)} slices (missing or duplicate slices?)",
                "re-fetch the complete series, or drop it",
            )
        step = (positions[order[-1]] - positions[order[0]]) / (len(slices) - 1)
    else:
        typical = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
        step = normal * typical
    lps = np.eye(4)
    lps[:3, 0] = row_cosine * column_spacing  # voxel axis i runs along a row (column index)
    lps[:3, 1] = column_cosine * row_spacing  # voxel axis j runs down a column (row index)
    lps[:3, 2] = step
    lps[:3, 3] = positions[order[0]]
    return order, LPS_TO_RAS @ lps, (column_spacing, row_spacing, typical)


def _read_series(directory: Path, *, pixels: bool) -> tuple[list[Dataset], list[int], np.ndarray, HeaderInfo]:
    slices = [_open(p, pixels=pixels) for p in _series_files(directory)]
    series = {_text(ds, "SeriesInstanceUID") for ds in slices}
    if len(series) > 1:
        raise InputError(directory, f"the directory mixes {len(series)} DICOM series", "put each series in its own directory")
    order, affine, spacing = _series_geometry(slices, directory)
    first = _header(slices[order[0]], directory, kind="dicom_series")
    header = replace(first, dims=3, shape=(first.shape[1], first.shape[0], len(slices)), spacing=spacing)
    return slices, order, affine, header


def read_series_header(directory: Path) -> HeaderInfo:
    return _read_series(directory, pixels=False)[3]


def read_series(directory: Path) -> LoadedImage:
    """The volume in modality units (HU for CT); no VOI window, normalization sets the window."""
    slices, order, affine, header = _read_series(directory, pixels=True)
    planes = []
    for index in order:
        ds = slices[index]
        path = Path(ds.filename)
        if _text(ds, "PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2"):
            raise InputError(path, f"unsupported photometric interpretation {ds.PhotometricInterpretation} in a series", "only greyscale series are used")
        planes.append(apply_modality_lut(_decode(ds, path), ds).T)  # (rows, cols) -> (i, j)
    volume = np.stack(planes, axis=-1).astype(np.float32)
    return LoadedImage(volume, affine, header.spacing, image_meta(header, affine))
