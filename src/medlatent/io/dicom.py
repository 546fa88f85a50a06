"""DICOM: single images (X-ray, mammography), multi-frame files and directories of slices (CT/MR series).

pydicom 3 decodes the pixel data through its plugins (gdcm, pyjpegls, pylibjpeg-openjpeg,
pylibjpeg-rle, Pillow: README lists which covers which transfer syntax), then the display
pipeline of the standard is applied in its order: modality LUT (rescale to e.g. HU), VOI LUT
for projection radiography (window or LUT table), MONOCHROME1 inversion, so that bright always
means dense. Colour images (RGB, YBR_*, PALETTE COLOR) become grey by the mean of their RGB
channels, as the MedVAE code does. Series, and the frames of an Enhanced CT/MR multi-frame
file, are ordered by position along the slice normal, never by file name or frame number, and
get a RAS affine (DICOM patient space is LPS).

What a file declares is checked against the decode budget (`budget.DecodeBudget`) before
anything of that size exists: the inflated size of a deflated dataset (streamed, before pydicom
inflates it), Rows x Columns x frames x samples, and the dimensions each JPEG / JPEG 2000
codestream declares in its own header (SOF / SIZ markers), which the decoder would allocate.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import parse_basic_offsets, parse_fragments
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
from pydicom.pixels.utils import get_expected_length
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGExtended12Bit,
)

from medlatent.core.errors import InputError, library_error
from medlatent.io import codestream
from medlatent.io.budget import DecodeBudget
from medlatent.io.types import (
    COLOUR_RULE,
    GREY_PHOTOMETRICS,
    HeaderInfo,
    LoadedImage,
    colour_to_grey,
    image_meta,
    require_finite,
    require_geometry,
)

DICOM_SUFFIXES = (".dcm", ".dicom")
#: Modalities whose stored values need the VOI LUT to look like the image a reader sees.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "RF", "XA", "IO", "PX"})
#: Header reads leave values above this size (the pixel data) on disk.
HEADER_DEFER_SIZE = "16 KB"
PIXEL_DATA = 0x7FE00010
SHARED_GROUPS = 0x52009229
PER_FRAME_GROUPS = 0x52009230
#: Colour photometric interpretations that pydicom decodes to RGB (YBR_RCT/ICT: JPEG 2000).
RGB_PHOTOMETRICS = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"})
UNDEFINED_LENGTH = 0xFFFFFFFF
#: Slice gaps may differ by this much (relative) before a series counts as inconsistent.
SPACING_TOLERANCE = 0.05
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
REWRITE_FIX = "re-export or re-download the file; if it is corrupt at the source, exclude it"
JPEG12_FIX = (
    "12-bit JPEG Extended needs pylibjpeg-libjpeg (GPL-3.0, not installed by default): "
    "pip install 'medlatent[jpeg12]', or convert the file to a lossless syntax"
)
#: Image Pixel module elements every decodable image needs (PS3.3 C.7.6.3).
REQUIRED_PIXEL_TAGS = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "PhotometricInterpretation",
)
#: Grey and colour images use 8, 16 or 32 bits a sample; 1 bit means a mask or an overlay.
IMAGE_BITS_ALLOCATED = frozenset({8, 16, 32})
#: Photometric interpretations a reason may name (PS3.3 C.7.6.3.1.2); any other value is file text.
KNOWN_PHOTOMETRICS = GREY_PHOTOMETRICS | RGB_PHOTOMETRICS | {"PALETTE COLOR", "YBR_PARTIAL_420", "HSV", "ARGB", "CMYK"}
#: Bytes inflated per step when a deflated dataset is measured (the inflated data is not kept).
INFLATE_STEP = 16 * 2**20
#: Header values that a malformed element (wrong VR, bad bytes) turns into these on conversion.
_HEADER_ERRORS = (
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    OverflowError,
    NotImplementedError,
    zlib.error,
    struct.error,
    BytesLengthException,
    RecursionError,  # sequences nested thousands deep
)


@contextmanager
def _header_values(path: Path) -> Iterator[None]:
    """Header values that fail to convert or to apply (wrong VR, bad bytes) become an InputError."""
    try:
        yield
    except _HEADER_ERRORS as error:
        raise InputError(path, f"malformed DICOM header ({library_error(error)})", REWRITE_FIX) from None


def looks_like_dicom(path: Path) -> bool:
    """A .dcm/.dicom name, or the 'DICM' magic after the 128-byte preamble."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with open(path, "rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def _check_inflated_size(path: Path, budget: DecodeBudget) -> None:
    """A deflated dataset is inflated whole by pydicom: measure its inflated size first, streamed,
    stopping as soon as it is over the budget."""
    with open(path, "rb") as handle:
        read_preamble(handle, force=True)
        if _read_file_meta_info(handle).get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            return
        inflater, inflated = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while (pending := handle.read(INFLATE_STEP)) and inflated <= budget.max_bytes:
            while pending and inflated <= budget.max_bytes:
                inflated += len(inflater.decompress(pending, INFLATE_STEP))
                pending = inflater.unconsumed_tail
    budget.check_bytes(path, inflated, "deflated dataset inflating to more than")


def _read(path: Path, budget: DecodeBudget, **options) -> Dataset:
    """`pydicom.dcmread(path, force=True, **options)`, a deflated file measured first; InputError if unreadable."""
    try:
        _check_inflated_size(path, budget)
        return pydicom.dcmread(path, force=True, **options)
    except (InvalidDicomError, EOFError, OSError, *_HEADER_ERRORS) as error:
        raise InputError(path, f"not a readable DICOM file ({library_error(error)})", REWRITE_FIX) from None


def _open(path: Path, budget: DecodeBudget, *, pixels: bool) -> Dataset:
    """Read a DICOM file; pixel data stays on disk unless `pixels`. Refuses truncated files and
    images over `budget`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = _read(path, budget, defer_size=None if pixels else HEADER_DEFER_SIZE)
    ends_early = [w for w in caught if "end of file" in str(w.message).lower()]
    for caught_warning in caught:  # intercepted only to spot truncation: pass the others on
        if caught_warning not in ends_early:
            warnings.warn_explicit(
                caught_warning.message, caught_warning.category, caught_warning.filename, caught_warning.lineno
            )
    if "PixelData" not in ds:
        if ends_early:
            raise InputError(path, "truncated DICOM: the file ends inside the encapsulated pixel data", REWRITE_FIX)
        raise InputError(
            path,
            "DICOM file without pixel data (not an image: report, presentation state, ...)",
            "remove it from the image folder",
        )
    if "TransferSyntaxUID" not in ds.file_meta:
        # A bare dataset without file meta: the encoding pydicom found is its transfer syntax.
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    for keyword in REQUIRED_PIXEL_TAGS:
        if keyword not in ds:
            raise InputError(path, f"DICOM image without {keyword} (0028,xxxx image pixel tags)", REWRITE_FIX)
    with _header_values(path):
        _check_pixel_module(ds, path, budget)
        _check_pixel_length(ds, path)
        if ds.file_meta.TransferSyntaxUID.is_encapsulated:
            _check_codestreams(ds, path, budget)
    return ds


def _frames(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def _check_pixel_module(ds: Dataset, path: Path, budget: DecodeBudget) -> None:
    """Refuse image pixel values no radiograph or scan has, and sizes too large to decode."""
    rows, columns, samples, frames = int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel), _frames(ds)
    bits_allocated, bits_stored = int(ds.BitsAllocated), int(ds.BitsStored)
    if bits_allocated not in IMAGE_BITS_ALLOCATED:
        raise InputError(
            path,
            f"BitsAllocated {bits_allocated}: not a grey-level or colour image (1 bit is a segmentation or overlay)",
            "exclude masks and overlays from the image folder",
        )
    if not 0 < bits_stored <= bits_allocated:
        raise InputError(
            path, f"inconsistent header: BitsStored {bits_stored} with BitsAllocated {bits_allocated}", REWRITE_FIX
        )
    if samples not in (1, 3) or int(ds.PixelRepresentation) not in (0, 1):
        raise InputError(
            path,
            f"inconsistent header: SamplesPerPixel {samples}, PixelRepresentation {ds.PixelRepresentation}",
            REWRITE_FIX,
        )
    if min(rows, columns, frames) < 1:
        raise InputError(path, f"empty image: {rows} rows, {columns} columns, {frames} frames", REWRITE_FIX)
    budget.check_samples(path, rows * columns * frames * samples, f"{rows} rows x {columns} columns x {frames} frames")


def _check_pixel_length(ds: Dataset, path: Path) -> None:
    """Compare the bytes the pixel data element declares with the file and the image size.

    A deflated dataset is inflated in memory, so its byte offsets are not offsets in the file:
    zlib and pydicom's end-of-file warning catch its truncation instead.
    """
    transfer_syntax = ds.file_meta.TransferSyntaxUID
    element = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if isinstance(element, RawDataElement):
        declared = element.length
        if (
            declared != UNDEFINED_LENGTH
            and not transfer_syntax.is_deflated
            and element.value_tell + declared > path.stat().st_size
        ):
            raise InputError(
                path,
                f"truncated DICOM: pixel data should end at byte {element.value_tell + declared} "
                f"but the file has {path.stat().st_size} bytes",
                REWRITE_FIX,
            )
    else:
        declared = len(element.value) if element.value is not None else 0
    if declared == 0:
        raise InputError(path, "empty pixel data (zero-length element)", REWRITE_FIX)
    if not transfer_syntax.is_encapsulated and declared != UNDEFINED_LENGTH:
        expected = get_expected_length(ds)
        if declared < expected:
            raise InputError(path, f"pixel data shorter than expected ({declared} of {expected} bytes)", REWRITE_FIX)
        if declared >= expected + expected // _frames(ds):
            raise InputError(
                path,
                f"pixel data holds more frames than NumberOfFrames says ({declared} bytes, {expected} expected)",
                "correct NumberOfFrames in the header, or re-export the file",
            )


def _check_codestreams(ds: Dataset, path: Path, budget: DecodeBudget) -> None:
    """The size each JPEG / JPEG 2000 codestream declares (what its decoder allocates), against
    the budget and the header's Rows x Columns, read from the first bytes of every fragment."""
    element = ds.get_item(PIXEL_DATA, keep_deferred=True)
    deferred = isinstance(element, RawDataElement) and element.value is None
    with open(path, "rb") if deferred else io.BytesIO(element.value) as buffer:
        buffer.seek(element.value_tell if deferred else 0)
        parse_basic_offsets(buffer)
        for offset in parse_fragments(buffer)[1]:
            buffer.seek(offset + 8)
            size = codestream.declared_size(buffer)
            if size is None:
                continue  # a continuation fragment, or a codestream without JPEG / JPEG 2000 markers
            width, height, components = size
            budget.check_samples(path, width * height * components, f"a codestream of {width} x {height}")
            if (height, width) != (int(ds.Rows), int(ds.Columns)) and height != 0:
                raise InputError(
                    path,
                    f"a compressed frame declares {width} x {height} pixels but the header "
                    f"{ds.Columns} x {ds.Rows} (Columns x Rows)",
                    REWRITE_FIX,
                )


def _text(ds: Dataset, keyword: str) -> str | None:
    """A tag as stripped text; None when absent or blank."""
    value = ds.get(keyword)
    if value is None:
        return None
    return str(value).strip() or None


def _pixel_spacing(ds: Dataset) -> tuple[float, ...] | None:
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    return tuple(float(s) for s in spacing) if spacing else None


def _frame_view(ds: Dataset, index: int) -> Dataset:
    """Frame `index` as one flat dataset: the top-level tags, overridden by the values of the
    shared, then the per-frame functional groups (plane position, orientation, pixel measures,
    rescale, VOI) of an Enhanced multi-frame file; `ds` itself when it has none. Pixel data
    stays in `ds`."""
    if SHARED_GROUPS not in ds and PER_FRAME_GROUPS not in ds:
        return ds
    groups = (PIXEL_DATA, SHARED_GROUPS, PER_FRAME_GROUPS)
    # Elements as read (converted lazily, deferred ones left on disk): copying is cheap.
    view = Dataset({tag: ds.get_item(tag, keep_deferred=True) for tag in ds.keys() if tag not in groups})
    view.file_meta = ds.file_meta
    for keyword, item in (("SharedFunctionalGroupsSequence", 0), ("PerFrameFunctionalGroupsSequence", index)):
        sequence = ds.get(keyword)
        if not isinstance(sequence, Sequence) or len(sequence) <= item:
            continue
        for macro in sequence[item]:  # each functional group macro is a one-item sequence
            if macro.VR == "SQ" and len(macro.value) == 1:
                for element in macro.value[0]:
                    view.add(element)
    return view


def _header(ds: Dataset, path: Path, kind: str = "dicom") -> HeaderInfo:
    """The header; a multi-frame file is a volume (dims 3) whose spacing is known when its
    frames carry plane geometry."""
    with _header_values(path):
        rows, columns, frames = int(ds.Rows), int(ds.Columns), _frames(ds)
        header = HeaderInfo(
            kind=kind,
            dims=2,
            shape=(rows, columns),
            spacing=_pixel_spacing(_frame_view(ds, 0)),
            modality=_text(ds, "Modality"),
            photometric=_text(ds, "PhotometricInterpretation"),
            bits_stored=int(ds.BitsStored),
            transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
            view_position=_text(ds, "ViewPosition"),
            laterality=_text(ds, "ImageLaterality") or _text(ds, "Laterality"),
            presentation_intent=_text(ds, "PresentationIntentType"),
            patient_id=_text(ds, "PatientID"),
            series_uid=_text(ds, "SeriesInstanceUID"),
            frames=frames,
        )
    if frames == 1:
        return header
    try:
        spacing = _series_geometry([_frame_view(ds, k) for k in range(frames)], path)[2]
    except InputError:
        spacing = None  # reading the volume raises the reason; a 2D source may still keep the frames
    return replace(header, dims=3, shape=(columns, rows, frames), spacing=spacing)


def _decode(ds: Dataset, path: Path, frame: int | None = None) -> np.ndarray:
    """The stored values (all frames, or one), RGB for colour; or an InputError naming the
    transfer syntax and the plugin to install."""
    transfer_syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        raise InputError(
            path,
            f"no pixel data decoder exists for transfer syntax {transfer_syntax.name} ({transfer_syntax})",
            "convert the file to an uncompressed or standard compressed transfer syntax",
        ) from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise InputError(
            path,
            f"cannot decode {transfer_syntax.name} ({transfer_syntax}): no decoding plugin installed",
            f"install one of: {missing}",
        )
    try:
        stored = pixel_array(ds, index=frame, as_rgb=True)  # as_rgb: YBR_FULL/_422 -> RGB
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # noqa: BLE001 - plugins raise many types, all meaning 'corrupt data';
        # pylibjpeg-rle's Rust code panics on some corrupt streams, a BaseException (pyo3).
        # Of the plugins only the GPL-licensed libjpeg decodes 12-bit JPEG Extended.
        if transfer_syntax == JPEGExtended12Bit and int(ds.BitsStored) > 8:
            what, fix = f"12-bit {transfer_syntax.name}", JPEG12_FIX
        else:
            what, fix = transfer_syntax.name, REWRITE_FIX
        raise InputError(path, f"undecodable {what} pixel data ({library_error(error)})", fix) from None
    frames = () if frame is not None or _frames(ds) == 1 else (_frames(ds),)
    samples = (3,) if int(ds.SamplesPerPixel) == 3 else ()
    expected = (*frames, int(ds.Rows), int(ds.Columns), *samples)
    if stored.shape != expected:
        raise InputError(
            path, f"decoded pixel data of shape {stored.shape} does not match the header's {expected}", REWRITE_FIX
        )
    return stored


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


def _grey_plane(stored: np.ndarray, view: Dataset, path: Path) -> tuple[np.ndarray, bool]:
    """One 2D plane as displayed grey values, and whether it was colour."""
    photometric = _text(view, "PhotometricInterpretation")
    if photometric == "PALETTE COLOR":
        return colour_to_grey(apply_color_lut(stored, view)), True
    if photometric in RGB_PHOTOMETRICS:  # YBR was converted to RGB by the decoding
        return colour_to_grey(stored), True
    if photometric not in GREY_PHOTOMETRICS:
        raise InputError(
            path,
            f"unsupported photometric interpretation {_shown(photometric)}",
            "only MONOCHROME1/2, RGB, YBR and PALETTE COLOR images are read",
        )
    voi = _text(view, "Modality") in PROJECTION_MODALITIES
    array = _display(stored, view, voi=voi)
    if photometric == "MONOCHROME1":
        # Low values are white: mirror within the range the display pipeline can produce.
        low, high = np.sort(_display(_stored_range(view), view, voi=voi))
        array = low + high - array
    return np.asarray(array, dtype=np.float32), False


def _shown(photometric: str | None) -> str:
    """A photometric interpretation as a reason may show it: a defined term, never other file text."""
    return photometric if photometric in KNOWN_PHOTOMETRICS else "(not a defined term)"


def _require_grey(view: Dataset, path: Path) -> None:
    photometric = _text(view, "PhotometricInterpretation")
    if photometric not in GREY_PHOTOMETRICS:
        raise InputError(
            path,
            f"unsupported photometric interpretation {_shown(photometric)} in a volume",
            "only greyscale (MONOCHROME1/2) series and multi-frame volumes are used",
        )


def _volume(planes: list[tuple[np.ndarray, Dataset]], path: Path) -> np.ndarray:
    """Planes in slice order, in modality units (HU for CT): (rows, cols) each -> (i, j, k).
    Filled plane by plane: the float64 modality values of one plane exist at a time."""
    rows, columns = planes[0][0].shape
    volume = np.empty((columns, rows, len(planes)), dtype=np.float32)
    for k, (stored, view) in enumerate(planes):
        volume[..., k] = apply_modality_lut(stored, view).T
    return require_finite(volume, path)


def is_series_slice(path: Path, budget: DecodeBudget) -> bool:
    """Whether a file is a slice of the series its directory holds: a regular file (not a link,
    not a DICOMDIR) that looks like DICOM and declares one frame. Any file whose header cannot
    be read is none: curation then reads it as an item of its own and records the reason."""
    try:
        if path.is_symlink() or not path.is_file() or path.name.upper() == "DICOMDIR" or not looks_like_dicom(path):
            return False
        with warnings.catch_warnings(), _header_values(path):
            warnings.simplefilter("ignore")
            return _frames(_read(path, budget, stop_before_pixels=True, specific_tags=["NumberOfFrames"])) == 1
    except Exception:  # noqa: BLE001 - whatever fails here is reported when the file is read as an item
        return False


def frame_header(header: HeaderInfo) -> HeaderInfo:
    """The header of one frame of a multi-frame file: a 2D (rows, columns) image."""
    columns, rows = header.shape[:2]
    spacing = (header.spacing[1], header.spacing[0]) if header.spacing else None
    return replace(header, dims=2, shape=(rows, columns), spacing=spacing)


def read_header(path: Path, budget: DecodeBudget) -> HeaderInfo:
    """Header of one DICOM file; pixel data is not read."""
    return _header(_open(path, budget, pixels=False), path)


def read_image(path: Path, budget: DecodeBudget, frame: int | None = None) -> LoadedImage:
    """A single-frame image (2D), one `frame` of a multi-frame file (2D), or a whole
    multi-frame file as a volume (3D, in modality units like a series)."""
    ds = _open(path, budget, pixels=True)
    header = _header(ds, path)
    if header.frames > 1 and frame is None:
        return _read_multiframe_volume(ds, path, header)
    if frame is not None and not 0 <= frame < header.frames:
        raise InputError(
            path,
            f"frame {frame} requested from a file of {header.frames} frames",
            "re-run curation: the files changed since",
        )
    view = _frame_view(ds, frame or 0)
    stored = _decode(ds, path, frame if header.frames > 1 else None)
    with _header_values(path):  # rescale, VOI and palette tags are first used here
        array, colour = _grey_plane(stored, view, path)
    meta = image_meta(replace(header, dims=2, shape=array.shape))
    if colour:
        meta["colour_rule"] = COLOUR_RULE
    if frame is not None:
        meta["frame"] = frame
    return LoadedImage(require_finite(array, path), None, _pixel_spacing(view), meta)


def _read_multiframe_volume(ds: Dataset, path: Path, header: HeaderInfo) -> LoadedImage:
    views = [_frame_view(ds, k) for k in range(header.frames)]
    order, affine, spacing = _series_geometry(views, path)
    _require_grey(views[0], path)
    stored = _decode(ds, path)
    with _header_values(path):
        volume = _volume([(stored[k], views[k]) for k in order], path)
    return LoadedImage(volume, affine, spacing, image_meta(header, affine))


def _series_files(directory: Path, budget: DecodeBudget) -> list[Path]:
    # A multi-frame file beside the slices is a volume of its own (curation lists it apart).
    files = sorted(p for p in directory.iterdir() if is_series_slice(p, budget))
    if not files:
        raise InputError(
            directory,
            "empty series: the directory holds no DICOM slices",
            "point the source at a directory of DICOM slices",
        )
    return files


def _series_geometry(
    slices: list[Dataset], directory: Path
) -> tuple[list[int], np.ndarray, tuple[float, float, float]]:
    """Slice order along the normal, the RAS affine and the voxel spacing of a series (or of
    the frame views of a multi-frame file)."""
    with _header_values(directory):
        return _stack_geometry(slices, directory)


def _stack_geometry(slices: list[Dataset], directory: Path) -> tuple[list[int], np.ndarray, tuple[float, float, float]]:
    first = slices[0]
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        if any(keyword not in ds for ds in slices):
            raise InputError(
                directory,
                f"slices or frames without {keyword} on every one: geometry unknown",
                "convert the series with dcm2niix and use the NIfTI",
            )
    orientation = np.array(first.ImageOrientationPatient, dtype=np.float64)
    if any(
        not np.allclose(np.array(ds.ImageOrientationPatient, dtype=np.float64), orientation, atol=1e-4) for ds in slices
    ):
        raise InputError(
            directory,
            "slices of the series differ in ImageOrientationPatient",
            "split the directory into one series per orientation",
        )
    if len({(int(ds.Rows), int(ds.Columns)) for ds in slices}) > 1:
        raise InputError(
            directory,
            "slices of the series differ in size (Rows/Columns)",
            "split the directory into one series per image size",
        )
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
                f"inconsistent slice spacing: gaps from {gaps.min():.3g} to {gaps.max():.3g} mm "
                f"between {len(slices)} slices (missing or duplicate slices?)",
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
    require_geometry(lps, directory)
    return order, LPS_TO_RAS @ lps, (column_spacing, row_spacing, typical)


def _read_series(
    directory: Path, budget: DecodeBudget, *, pixels: bool
) -> tuple[list[Dataset], list[int], np.ndarray, HeaderInfo]:
    slices = [_open(p, budget, pixels=pixels) for p in _series_files(directory, budget)]
    series = {_text(ds, "SeriesInstanceUID") for ds in slices}
    if len(series) > 1:
        raise InputError(
            directory, f"the directory mixes {len(series)} DICOM series", "put each series in its own directory"
        )
    order, affine, spacing = _series_geometry(slices, directory)
    first = _header(slices[order[0]], directory, kind="dicom_series")
    header = replace(first, dims=3, shape=(first.shape[1], first.shape[0], len(slices)), spacing=spacing)
    budget.check_samples(directory, int(np.prod(header.shape)), f"a series of {len(slices)} slices")
    return slices, order, affine, header


def read_series_header(directory: Path, budget: DecodeBudget) -> HeaderInfo:
    return _read_series(directory, budget, pixels=False)[3]


def read_series(directory: Path, budget: DecodeBudget) -> LoadedImage:
    """The volume in modality units (HU for CT); no VOI window, normalization sets the window."""
    slices, order, affine, header = _read_series(directory, budget, pixels=True)
    planes = []
    for index in order:
        ds = slices[index]
        path = Path(ds.filename)
        _require_grey(ds, path)
        planes.append((_decode(ds, path), ds))
    with _header_values(directory):
        volume = _volume(planes, directory)
    return LoadedImage(volume, affine, header.spacing, image_meta(header, affine))
