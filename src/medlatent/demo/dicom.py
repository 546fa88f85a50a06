"""DICOM writing shared by the generators.

Deterministic UIDs, fake PHI, and the display pipeline (window, VOI LUT, MONOCHROME1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

#: DICOM keywords that identify a person or an encounter; the generators fill all of them.
PHI_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "StudyDate",
    "ContentDate",
    "InstitutionName",
    "AccessionNumber",
)
INSTITUTION = "SYNTHETIC GENERAL HOSPITAL"


def uid(seed: int, *parts: object) -> UID:
    """A DICOM UID derived from the seed and `parts`: the same inputs give the same UID."""
    return generate_uid(entropy_srcs=[str(seed), *map(str, parts)])


def phi_tags(seed: int, code: str, n: int, given: str) -> dict:
    """Fake but realistic-looking identifying tags for patient n."""
    return {
        "PatientName": f"DOE^{given}{n}",
        "PatientID": f"PID{seed}{code}{n:04d}",
        "PatientBirthDate": f"{1940 + n % 50}{n % 12 + 1:02d}{n % 28 + 1:02d}",
        "PatientSex": "F" if given == "JANE" else "M",
        "StudyDate": f"{2015 + n % 8}{(n * 7) % 12 + 1:02d}{(n * 5) % 28 + 1:02d}",
        "InstitutionName": INSTITUTION,
        "AccessionNumber": f"ACC{seed}{code}{n:05d}",
    }


def _voi_lut_item(first_mapped: int, table: np.ndarray) -> Dataset:
    """One VOILUTSequence item: a 16-bit table that starts at stored value `first_mapped`."""
    item = Dataset()
    item.add_new(0x00283002, "US", [len(table), int(first_mapped), 16])  # LUTDescriptor
    item.add_new(0x00283006, "OW", table.astype("<u2").tobytes())  # LUTData
    item.LUTExplanation = "SYNTHETIC"
    return item


def write_dicom(
    path: Path,
    stored: np.ndarray,
    attrs: dict,
    *,
    photometric: str = "MONOCHROME2",
    transfer_syntax: UID = ExplicitVRLittleEndian,
    window: tuple[float, float] | None = None,
    voi_lut: tuple[int, np.ndarray] | None = None,
) -> None:
    """Write one single-frame greyscale DICOM file.

    `stored`, `window` (centre, width) and `voi_lut` (first mapped value, 16-bit table) are
    given as for MONOCHROME2; for MONOCHROME1 the stored values and the VOI are mirrored, so
    the correctly displayed image is the same. `attrs` are DICOM keywords, at least
    SOPClassUID, SOPInstanceUID, Modality, BitsStored and PixelRepresentation. Also used by
    the tests to write controlled twins.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = attrs["SOPClassUID"]
    ds.file_meta.MediaStorageSOPInstanceUID = attrs["SOPInstanceUID"]
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    bits = int(attrs["BitsStored"])
    signed = int(attrs["PixelRepresentation"]) == 1
    ds.Rows, ds.Columns = (int(s) for s in stored.shape)
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = 16
    ds.HighBit = bits - 1
    ds.PhotometricInterpretation = photometric
    if photometric == "MONOCHROME1":
        stored, window, voi_lut = _mirror_for_monochrome1(stored, attrs, window, voi_lut)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = (round(float(v), 2) for v in window)
    if voi_lut is not None:
        ds.VOILUTSequence = [_voi_lut_item(*voi_lut)]
    pixels = stored.astype(np.int16 if signed else np.uint16)
    ds.PixelData = pixels.tobytes()
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, pixels, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _mirror_for_monochrome1(
    stored: np.ndarray, attrs: dict, window: tuple[float, float] | None, voi_lut: tuple[int, np.ndarray] | None
) -> tuple[np.ndarray, tuple[float, float] | None, tuple[int, np.ndarray] | None]:
    """MONOCHROME1 twin of MONOCHROME2 data: stored values inverted, window and LUT mirrored."""
    top = 2 ** int(attrs["BitsStored"]) - 1
    slope = float(attrs.get("RescaleSlope", 1.0))
    intercept = float(attrs.get("RescaleIntercept", 0.0))
    mirrored = top - stored.astype(np.int64)
    if window is not None:
        # The DICOM linear window is centred at c - 0.5, hence the +1 (PS3.3 C.11.2.1.2.1).
        window = (slope * top + 2 * intercept + 1 - window[0], window[1])
    if voi_lut is not None:
        if slope != 1.0:
            raise ValueError("a VOI LUT table can only be mirrored with RescaleSlope 1")
        first, table = voi_lut
        wide = table.astype(np.int64)
        voi_lut = (
            int(top + 2 * intercept) - (first + len(table) - 1),
            (wide.max() + wide.min() - wide[::-1]).astype(np.uint16),
        )
    return mirrored, window, voi_lut


def window_from(stored: np.ndarray) -> tuple[float, float]:
    """Window (centre, width) over the 0.5th-99.5th percentile of the stored values."""
    low, high = np.percentile(stored, [0.5, 99.5])
    return (low + high) / 2, max(high - low, 2.0)


def sigmoid_lut(stored: np.ndarray) -> tuple[int, np.ndarray]:
    """A sigmoid VOI LUT over the 1st-99th percentile of the stored values, spanning 0..65535."""
    low, high = (int(v) for v in np.percentile(stored, [1, 99]))
    t = np.linspace(-4.0, 4.0, max(high - low + 1, 2))
    curve = 1.0 / (1.0 + np.exp(-t))
    curve = (curve - curve[0]) / (curve[-1] - curve[0])
    return low, np.round(curve * 65535).astype(np.uint16)


def radiograph_attrs(
    phi: dict, key: tuple, sop_class: UID, modality: str, body_part: str, pixel_mm: float, bits: int, **tags
) -> dict:
    """Header of projection radiograph `key` = (seed, source, patient, image): PHI, UIDs, detector, pixel format."""
    seed, source, n, j = key
    return {
        **phi,
        "SOPClassUID": sop_class,
        "SOPInstanceUID": uid(seed, source, n, j, "image"),
        "StudyInstanceUID": uid(seed, source, n, "study"),
        "SeriesInstanceUID": uid(seed, source, n, j, "series"),
        "Modality": modality,
        "BodyPartExamined": body_part,
        "ContentDate": phi["StudyDate"],
        "ImagerPixelSpacing": [round(pixel_mm, 4)] * 2,
        "BitsStored": bits,
        "PixelRepresentation": 0,
        **tags,
    }
