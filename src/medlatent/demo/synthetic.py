"""Embedded demo data: small synthetic sources written in the real file formats.

Each generator stands for one published dataset and writes what that dataset ships: DICOM
with the encodings and display pipeline quirks of X-ray, mammography and CT (MONOCHROME1,
VOI LUTs, rescale to HU, RLE and JPEG 2000 compression, shuffled slice files), NIfTI with
non-RAS affines, PNG/JPEG radiographs, MRNet's .npy layout. Images are smooth anatomy-like
backgrounds with noise plus obvious findings (bright blobs, speck clusters, gaps), so the
labels are learnable by a small network. A few broken files are planted on purpose; they
are missing from labels.csv and must be found by scanning. DICOM headers carry fake PHI
(`phi_strings` lists it) so tests can prove that none of it leaks downstream.

Output is a pure function of (spec, seed): UIDs come from the seed, nothing reads a clock,
and the encoders are fixed, so the same call writes byte-identical files.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from medlatent.core.errors import ConfigError

LABELS_FILE = "labels.csv"
#: DICOM keywords that identify a person or an encounter; the generators fill all of them.
PHI_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "ContentDate", "InstitutionName", "AccessionNumber")
#: Label-table patient ids shorter than this are dataset-assigned case numbers (MRNet's
#: "0042"), not PHI, and would match unrelated text when searched for.
MIN_PHI_ID_LENGTH = 6
INSTITUTION = "SYNTHETIC GENERAL HOSPITAL"


# ---------------------------------------------------------------- shapes and textures


def _grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Pixel-centre coordinates per axis, centred, in units of half the smallest side (circles stay round)."""
    half = min(shape) / 2
    axes = [(np.arange(n) + 0.5 - n / 2) / half for n in shape]
    return np.meshgrid(*axes, indexing="ij")


def _soft(signed: np.ndarray, edge: float) -> np.ndarray:
    """1 where `signed` < 0, 0 where > 0, with a smooth edge of width ~`edge`."""
    return 0.5 * (1.0 - np.tanh(signed / edge))


def _ellipse(coords: list[np.ndarray], centre: tuple[float, ...], radii: tuple[float, ...], edge: float = 0.1) -> np.ndarray:
    """Soft ellipse/ellipsoid mask; `edge` is relative to the radii."""
    radius = np.sqrt(sum(((c - m) / r) ** 2 for c, m, r in zip(coords, centre, radii)))
    return _soft(radius - 1.0, edge)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered noise; `sigma` is a fraction of the smallest side."""
    white = rng.standard_normal(shape)
    frequencies = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    transfer = np.exp(-2.0 * (np.pi * sigma * min(shape)) ** 2 * sum(f**2 for f in frequencies))
    smooth = np.fft.ifftn(np.fft.fftn(white) * transfer).real
    return (smooth - smooth.mean()) / (smooth.std() + 1e-12)


def _segment_distance(coords: list[np.ndarray], start: np.ndarray, end: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scaled distance of every point to a segment, and the position t in [0, 1] along it."""
    points = np.stack(coords, axis=-1)
    direction = end - start
    t = np.clip(((points - start) @ direction) / (direction @ direction), 0.0, 1.0)
    nearest = start + t[..., None] * direction
    return np.sqrt((((points - nearest) / scale) ** 2).sum(axis=-1)), t


def _to_uint(display: np.ndarray, low: float, gain: float, bits: int) -> np.ndarray:
    return np.clip(np.round(low + display * gain), 0, 2**bits - 1).astype(np.uint16)


# ---------------------------------------------------------------- DICOM writing


def _uid(seed: int, *parts: object) -> UID:
    return generate_uid(entropy_srcs=[str(seed), *map(str, parts)])


def _phi(seed: int, code: str, n: int, given: str) -> dict:
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
        voi_lut = (int(top + 2 * intercept) - (first + len(table) - 1), (wide.max() + wide.min() - wide[::-1]).astype(np.uint16))
    return mirrored, window, voi_lut


def _window_from(stored: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(stored, [0.5, 99.5])
    return (low + high) / 2, max(high - low, 2.0)


def _sigmoid_lut(stored: np.ndarray) -> tuple[int, np.ndarray]:
    """A sigmoid VOI LUT over the 1st-99th percentile of the stored values, spanning 0..65535."""
    low, high = (int(v) for v in np.percentile(stored, [1, 99]))
    t = np.linspace(-4.0, 4.0, max(high - low + 1, 2))
    curve = 1.0 / (1.0 + np.exp(-t))
    curve = (curve - curve[0]) / (curve[-1] - curve[0])
    return low, np.round(curve * 65535).astype(np.uint16)


def _radiograph_attrs(phi: dict, key: tuple, sop_class: UID, modality: str, body_part: str, pixel_mm: float, bits: int, **tags) -> dict:
    """Header of projection radiograph `key` = (seed, source, patient, image): PHI, UIDs, detector, pixel format."""
    seed, source, n, j = key
    return {
        **phi,
        "SOPClassUID": sop_class,
        "SOPInstanceUID": _uid(seed, source, n, j, "image"),
        "StudyInstanceUID": _uid(seed, source, n, "study"),
        "SeriesInstanceUID": _uid(seed, source, n, j, "series"),
        "Modality": modality,
        "BodyPartExamined": body_part,
        "ContentDate": phi["StudyDate"],
        "ImagerPixelSpacing": [round(pixel_mm, 4)] * 2,
        "BitsStored": bits,
        "PixelRepresentation": 0,
        **tags,
    }


def _pick(rng: np.random.Generator, options: tuple, weights: tuple[float, ...]):
    return options[int(rng.choice(len(options), p=weights))]


# ---------------------------------------------------------------- chest X-ray (MIMIC-CXR)


def _chest(rng: np.random.Generator, shape: tuple[int, int], view: str, nodule: tuple[float, float] | None) -> np.ndarray:
    y, x = _grid(shape)
    image = 0.05 + 0.35 * _ellipse([y, x], (0.1, 0.0), (1.3, 0.95), 0.05)
    if view == "LATERAL":
        lungs = _ellipse([y, x], (-0.1, -0.1), (0.75, 0.55))
        bone = 0.25 * _ellipse([y, x], (0.1, 0.72), (1.1, 0.1), 0.3)
    else:
        lungs = _ellipse([y, x], (-0.1, -0.47), (0.78, 0.33)) + _ellipse([y, x], (-0.1, 0.47), (0.78, 0.33))
        bone = 0.18 * _ellipse([y, x], (0.0, 0.0), (1.3, 0.13), 0.3) + 0.15 * _ellipse([y, x], (0.35, 0.1), (0.3, 0.22), 0.3)
    ribs = 0.06 * lungs * (0.5 + 0.5 * np.cos(2 * np.pi * (3.5 * y + 0.8 * x**2)))
    image = image - 0.25 * lungs + ribs + bone + 0.03 * _smooth_noise(rng, shape, 0.06)
    if nodule is not None:
        image = image + 0.4 * _ellipse([y, x], nodule, (0.2, 0.2), 0.3)
    return image * rng.uniform(0.9, 1.1) + 0.012 * rng.standard_normal(shape)


def _cxr_dicom(spec: dict, out: Path, rng: np.random.Generator, seed: int) -> list[dict]:
    shape = tuple(spec.get("size", (96, 80)))
    rows = []
    n_patients = int(spec.get("n_patients", 12))
    for n in range(n_patients):
        phi = _phi(seed, "C", n, "JOHN")
        has_nodule = bool(rng.random() < 0.5)
        side = rng.choice([-1.0, 1.0])
        nodule_yx = (rng.uniform(-0.45, 0.15), side * rng.uniform(0.4, 0.55))
        for j in range(int(spec.get("images_per_patient", 3))):
            view = _pick(rng, ("PA", "AP", "LATERAL"), (0.45, 0.35, 0.2))
            nodule = None if not has_nodule else (nodule_yx if view != "LATERAL" else (nodule_yx[0], rng.uniform(-0.35, 0.15)))
            stored = _to_uint(_chest(rng, shape, view, nodule), 300, 3300, 12)
            modality = _pick(rng, ("DX", "CR"), (0.7, 0.3))
            attrs = _radiograph_attrs(
                phi,
                (seed, "cxr", n, j),
                DigitalXRayImageStorageForPresentation if modality == "DX" else ComputedRadiographyImageStorage,
                modality,
                "CHEST",
                430.0 / shape[0],
                12,
                ViewPosition=view,
                PresentationIntentType="FOR PRESENTATION",
            )
            relative = f"files/{phi['PatientID']}/s{50000 + n * 10 + j}/{view.lower()}_{j}.dcm"
            write_dicom(
                out / relative,
                stored,
                attrs,
                photometric=_pick(rng, ("MONOCHROME2", "MONOCHROME1"), (0.6, 0.4)),
                transfer_syntax=_pick(rng, (ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless), (0.4, 0.3, 0.3)),
                window=_window_from(stored),
            )
            rows.append({"file": relative, "patient_id": phi["PatientID"], "view": view, "nodule": int(has_nodule)})
    truncated = out / f"files/{phi['PatientID']}/s{50000 + n * 10 + 9}/truncated.dcm"
    write_dicom(truncated, stored, {**attrs, "SOPInstanceUID": _uid(seed, "cxr", "truncated")}, transfer_syntax=RLELossless, window=_window_from(stored))
    _cut_in_half(truncated)
    return rows


def _cut_in_half(path: Path) -> None:
    """A download that stopped midway."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ---------------------------------------------------------------- mammography (CMMD / VinDr)

_MAMMO_IMAGES = (("R", "CC"), ("R", "MLO"), ("L", "CC"), ("L", "MLO"))


def _breast(rng: np.random.Generator, shape: tuple[int, int], view: str, side: str, mass, calcification) -> np.ndarray:
    """Breast with the chest wall on the left (right breast); the left breast is mirrored."""
    v, u = _grid(shape)
    wall = u.min()
    reach = 0.82 * (u.max() - wall)
    breast = _ellipse([v, u], (0.0, wall), (0.85 * v.max(), reach), 0.05)
    glandular = 0.1 * _soft(-_smooth_noise(rng, shape, 0.05) - 0.3, 0.4) * _ellipse([v, u], (0.0, wall), (0.6 * v.max(), 0.7 * reach), 0.3)
    tissue = 0.3 + glandular + 0.03 * _smooth_noise(rng, shape, 0.02)
    if view == "MLO":
        tissue = tissue + 0.25 * _soft((u - wall) - 0.45 * (-0.35 * v.max() - v), 0.05)
    if mass is not None:
        tissue = tissue + 0.4 * _ellipse([v, u], mass, (0.2, 0.2), 0.25)
        angle = np.arctan2(v - mass[0], u - mass[1])
        spicules = (np.cos(7 * angle) > 0.8) * _ellipse([v, u], mass, (0.34, 0.34), 0.2)
        tissue = tissue + 0.12 * spicules
    if calcification is not None:
        for dv, du in rng.uniform(-0.2, 0.2, size=(8, 2)):
            tissue = tissue + 0.7 * _ellipse([v, u], (calcification[0] + dv, calcification[1] + du), (0.055, 0.055), 0.3)
    image = 0.03 + breast * tissue + 0.01 * rng.standard_normal(shape)
    return image[:, ::-1] if side == "L" else image


def _finding_centre(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[float, float]:
    v, u = _grid(shape)
    return rng.uniform(-0.5, 0.5) * v.max(), u.min() + rng.uniform(0.35, 0.75) * (u.max() - u.min()) * 0.82


def _mammo_dicom(spec: dict, out: Path, rng: np.random.Generator, seed: int) -> list[dict]:
    shape = tuple(spec.get("size", (128, 64)))
    per_patient = int(spec.get("images_per_patient", 4))
    if per_patient > len(_MAMMO_IMAGES):
        raise ConfigError(f"mammo_dicom writes at most {len(_MAMMO_IMAGES)} images (L/R x CC/MLO) per patient, not {per_patient}")
    rows = []
    for n in range(int(spec.get("n_patients", 10))):
        phi = _phi(seed, "M", n, "JANE")
        breasts = {
            side: {
                "calcification": _finding_centre(rng, shape) if rng.random() < 0.45 else None,
                "malignancy": _finding_centre(rng, shape) if rng.random() < 0.45 else None,
            }
            for side in ("R", "L")
        }
        for j, (side, view) in enumerate(_MAMMO_IMAGES[:per_patient]):
            found = breasts[side]
            stored = _to_uint(_breast(rng, shape, view, side, found["malignancy"], found["calcification"]), 600, 14000, 14)
            processing = bool(rng.random() < 0.1)
            attrs = _radiograph_attrs(
                phi,
                (seed, "mammo", n, j),
                DigitalMammographyXRayImageStorageForProcessing if processing else DigitalMammographyXRayImageStorageForPresentation,
                "MG",
                "BREAST",
                240.0 / shape[0],
                14,
                ImageLaterality=side,
                ViewPosition=view,
                PresentationIntentType="FOR PROCESSING" if processing else "FOR PRESENTATION",
            )
            use_lut = not processing and rng.random() < 0.5
            relative = f"{phi['PatientID']}/{side}_{view}.dcm"
            write_dicom(
                out / relative,
                stored,
                attrs,
                photometric=_pick(rng, ("MONOCHROME2", "MONOCHROME1"), (0.7, 0.3)),
                transfer_syntax=_pick(rng, (ExplicitVRLittleEndian, JPEG2000Lossless), (0.65, 0.35)),
                window=None if processing or use_lut else _window_from(stored),
                voi_lut=_sigmoid_lut(stored) if use_lut else None,
            )
            rows.append(
                {
                    "file": relative,
                    "patient_id": phi["PatientID"],
                    "view": view,
                    "laterality": side,
                    "calcification": int(found["calcification"] is not None),
                    "malignancy": int(found["malignancy"] is not None),
                }
            )
    return rows


# ---------------------------------------------------------------- wrist radiographs (GRAZPEDWRI-DX)


def _bone(v: np.ndarray, u: np.ndarray, centre: float, width: float, length: float) -> np.ndarray:
    """A long bone seen from the side: bright cortex, darker marrow, wider distal end."""
    half = width * (1.0 + 0.5 * _soft(0.75 * length - v, 0.05))
    shaft = _soft(np.abs(u - centre) - half, 0.03) * _soft(v - length, 0.03)
    marrow = _soft(np.abs(u - centre) - 0.5 * half, 0.03) * shaft
    return 0.55 * shaft - 0.15 * marrow


def _wrist(rng: np.random.Generator, shape: tuple[int, int], projection: str, fracture: float | None, metal: bool, cast: bool) -> np.ndarray:
    v, u = _grid(shape)
    v = v - v.min()  # 0 at the top (forearm), growing towards the hand
    jitter = rng.uniform(-0.06, 0.06)
    image = 0.06 + 0.28 * _soft(np.abs(u - jitter) - 0.78, 0.04)
    if projection == "AP":
        bones = [(-0.32 + jitter, 0.15), (0.32 + jitter, 0.11)]
    else:
        bones = [(jitter, 0.2)]
    length = 0.8 * v.max()
    for centre, width in bones:
        image = image + _bone(v, u, centre, width, length)
    carpals = sum(_ellipse([v, u], (length + 0.2 + 0.15 * k % 0.3, -0.35 + 0.23 * k + jitter), (0.12, 0.1), 0.2) for k in range(4))
    image = image + 0.35 * carpals
    if fracture is not None:
        centre, width = bones[0]
        line = _soft(np.abs(v - fracture - 0.25 * (u - centre)) - 0.07, 0.02) * _soft(np.abs(u - centre) - 2.2 * width, 0.03)
        image = image - 0.9 * line * (image - 0.34).clip(0)
    if metal:
        image = np.maximum(image, 0.98 * _soft(np.abs(u - bones[0][0]) - 0.06, 0.02) * _soft(np.abs(v - 0.5 * length) - 0.35, 0.02))
    if cast:
        image = image + (0.18 + 0.02 * _smooth_noise(rng, shape, 0.01)) * _soft(np.abs(u - jitter) - 0.92, 0.03)
    return image + 0.015 * rng.standard_normal(shape)


def _xray_png(spec: dict, out: Path, rng: np.random.Generator, seed: int) -> list[dict]:
    shape = tuple(spec.get("size", (96, 64)))
    rows = []
    for n in range(int(spec.get("n_patients", 20))):
        patient = f"WRI{seed}{n:04d}"
        fracture = rng.uniform(0.35, 0.6) * 2 * shape[0] / min(shape) if rng.random() < 0.5 else None
        for j in range(int(spec.get("images_per_patient", 2))):
            projection = ("AP", "LAT")[j % 2]
            metal, cast = bool(rng.random() < 0.08), bool(rng.random() < 0.08)
            display = np.clip(_wrist(rng, shape, projection, fracture, metal, cast), 0.0, 1.0)
            encoding = _pick(rng, ("png16", "jpeg", "jpeg_rgb"), (0.7, 0.2, 0.1))
            relative = f"images/{patient}_{j + 1:02d}_{projection}.{'png' if encoding == 'png16' else 'jpg'}"
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            if encoding == "png16":
                Image.fromarray(_to_uint(display, 1000, 60000, 16)).save(out / relative, format="PNG", optimize=False)
            else:
                grey = Image.fromarray(np.round(display * 255).astype(np.uint8))
                (grey.convert("RGB") if encoding == "jpeg_rgb" else grey).save(out / relative, format="JPEG", quality=92, optimize=False, progressive=False)
            rows.append({"file": relative, "patient_id": patient, "projection": projection, "fracture": int(fracture is not None), "metal": int(metal), "cast": int(cast)})
    (out / "images" / "x.png").write_text("this file is named like an image but holds text\n", encoding="utf-8")
    (out / "notes.txt").write_text("Synthetic wrist radiographs. Not an image.\n", encoding="utf-8")
    return rows


# ---------------------------------------------------------------- head CT series (CQ500)


def _head_ct(rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float], fracture_angle: float | None) -> np.ndarray:
    """HU volume indexed (slice, row, col): air, scalp, skull ring, brain, ventricles."""
    slices, rows, cols = shape
    z, y, x = np.meshgrid(*[(np.arange(n) + 0.5 - n / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    radii = (0.4 * cols * spacing[2], 0.42 * rows * spacing[1], 0.62 * slices * spacing[0])
    r = np.sqrt((x / radii[0]) ** 2 + (y / radii[1]) ** 2 + (z / radii[2]) ** 2)
    brain = 32.0 + 6.0 * _smooth_noise(rng, shape, 0.1)
    hu = np.where(r < 1.05, 40.0, -1000.0)
    skull = (r >= 0.8) & (r < 1.0)
    if fracture_angle is not None:
        # A gap in the skull ring over the middle slices, under a scalp haematoma.
        angle = np.abs(np.angle(np.exp(1j * (np.arctan2(y, x) - fracture_angle))))
        middle = np.abs(z) < 0.3 * slices * spacing[0]
        skull &= ~((angle < np.radians(30)) & middle)
        hu = np.where((angle < np.radians(40)) & middle & (r >= 1.0) & (r < 1.2), 65.0, hu)
    hu = np.where(skull, 1000.0 + 60.0 * _smooth_noise(rng, shape, 0.05), hu)
    hu = np.where(r < 0.8, brain, hu)
    for side in (-1, 1):
        ventricle = ((x - side * 0.18 * radii[0]) / (0.12 * radii[0])) ** 2 + (y / (0.35 * radii[1])) ** 2 + (z / (0.3 * radii[2])) ** 2 < 1
        hu = np.where(ventricle, 5.0, hu)
    return hu + 5.0 * rng.standard_normal(shape)


def write_ct_series(
    directory: Path,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    attrs: dict,
    *,
    slope: float = 1.0,
    intercept: float = -1024.0,
    ascending: bool = True,
    order: np.ndarray | None = None,
    seed: int = 0,
) -> None:
    """Write an axial HU volume (slice, row, col) as int16 CT slices with rescale and geometry.

    `spacing` is (slice, row, col) in mm; slice k sits at z = k * spacing[0] (or the reverse
    when not `ascending`); file number `order[k]` holds slice k, so file order is not
    slice order. `attrs` adds PHI and UIDs; SOP instance UIDs derive from the series UID.
    """
    slices, rows, cols = hu.shape
    order = np.arange(slices) if order is None else order
    stored = np.round((hu - intercept) / slope)
    if stored.min() < -(2**15) or stored.max() >= 2**15:
        raise ValueError("HU values do not fit int16 with this rescale")
    origin = (-(cols / 2) * spacing[2], -(rows / 2) * spacing[1])
    thickness = f"{spacing[0]:g}"
    for k in range(slices):
        z = (k if ascending else slices - 1 - k) * spacing[0]
        slice_attrs = {
            **attrs,
            "SOPClassUID": CTImageStorage,
            "SOPInstanceUID": _uid(seed, attrs["SeriesInstanceUID"], k),
            "Modality": "CT",
            "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
            "InstanceNumber": int(order[k]) + 1,
            "ImagePositionPatient": [round(origin[0], 4), round(origin[1], 4), round(z, 4)],
            "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
            "PixelSpacing": [spacing[1], spacing[2]],
            "SliceThickness": thickness,
            "RescaleIntercept": f"{intercept:g}",
            "RescaleSlope": f"{slope:g}",
            "RescaleType": "HU",
            "BitsStored": 16,
            "PixelRepresentation": 1,
        }
        write_dicom(directory / f"CT{int(order[k]):06d}.dcm", stored[k], slice_attrs)


def _ct_dicom_series(spec: dict, out: Path, rng: np.random.Generator, seed: int) -> list[dict]:
    rows_n, cols_n, slices_n = (int(s) for s in spec.get("size", (48, 48, 16)))
    rows = []
    n_patients = int(spec.get("n_patients", 8))
    for n in range(n_patients + 1):
        planted = n == n_patients
        phi = _phi(seed, "H", n, "JOHN")
        pixel = float(rng.choice([1.0, 1.25]))
        spacing = (float(rng.choice([2.5, 3.0])), pixel, pixel)
        fracture = bool(rng.random() < 0.5)
        # Temporo-parietal, the commonest site: within 40 degrees of either side of the head.
        angle = rng.choice([0.0, np.pi]) + rng.uniform(-0.7, 0.7)
        hu = _head_ct(rng, (slices_n, rows_n, cols_n), spacing, angle if fracture else None)
        slope = 0.5 if n % 3 == 2 else 1.0
        order = rng.permutation(slices_n)
        relative = f"{phi['PatientID']}/Unknown Study/CT {spacing[0]:g}mm"
        attrs = {
            **phi,
            "StudyInstanceUID": _uid(seed, "ct", n, "study"),
            "SeriesInstanceUID": _uid(seed, "ct", n, "series"),
            "ContentDate": phi["StudyDate"],
            "BodyPartExamined": "HEAD",
        }
        write_ct_series(
            out / relative,
            hu,
            spacing,
            attrs,
            slope=slope,
            ascending=bool(n % 2),
            order=order,
            seed=seed,
        )
        if planted:  # a series with a slice missing in the middle
            (out / relative / f"CT{order[slices_n // 2]:06d}.dcm").unlink()
        else:
            rows.append({"file": relative, "patient_id": phi["PatientID"], "fracture": int(fracture)})
    return rows


# ---------------------------------------------------------------- NIfTI volumes (TotalSegmentator / OASIS)

#: Non-RAS orientations the volumes are stored in, cycled over patients.
_NIFTI_ORIENTATIONS = ("LPS", "LAS", "ASL", "PIL")


def _body_ct(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Trunk in HU on an RAS grid: fat, soft tissue, lungs above the liver, spine, aorta."""
    x, y, z = _grid(shape)
    hu = -1000.0 + 900.0 * _ellipse([x, y], (0, 0), (0.95, 0.7), 0.03)
    hu = hu + 140.0 * _ellipse([x, y], (0, 0), (0.85, 0.6), 0.05)
    upper = _soft(-z, 0.1)
    for side in (-1, 1):
        hu = hu - 890.0 * upper * _ellipse([x, y], (side * 0.4, 0.0), (0.3, 0.42), 0.1)
    hu = hu + 20.0 * (1 - upper) * _ellipse([x, y], (0.35, 0.05), (0.4, 0.35), 0.1)
    hu = hu + 660.0 * _ellipse([x, y], (0.0, -0.5), (0.13, 0.12), 0.1)
    hu = hu + 150.0 * _ellipse([x, y], (0.1, -0.3), (0.07, 0.07), 0.1)
    return hu + 12.0 * _smooth_noise(rng, shape, 0.08) + 8.0 * rng.standard_normal(shape)


def _brain_mri(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """T1-like head on an RAS grid: bright scalp fat, dark skull, CSF, grey and white matter, bias field."""
    x, y, z = _grid(shape)
    head = [x, y, z]
    signal = 900.0 * _ellipse(head, (0, 0, 0), (0.92, 0.95, 0.95), 0.04)
    signal = signal - 750.0 * _ellipse(head, (0, 0, 0), (0.84, 0.87, 0.87), 0.04)
    signal = signal + 100.0 * _ellipse(head, (0, 0, 0), (0.78, 0.81, 0.81), 0.04)
    signal = signal + 300.0 * _ellipse(head, (0, 0, 0), (0.74, 0.77, 0.77), 0.04)
    signal = signal + 250.0 * _ellipse(head, (0, 0.05, 0.05), (0.55, 0.6, 0.55), 0.15) * _soft(_smooth_noise(rng, shape, 0.04), 0.6)
    for side in (-1, 1):
        signal = signal - 550.0 * _ellipse(head, (side * 0.12, 0.0, 0.1), (0.08, 0.3, 0.15), 0.2)
    bias = np.exp(0.12 * _smooth_noise(rng, shape, 0.3))
    signal = signal.clip(0) * bias
    return np.hypot(signal + 15.0 * rng.standard_normal(shape), 15.0 * rng.standard_normal(shape))


def _save_nifti(path: Path, ras_volume: np.ndarray, zooms: tuple[float, float, float], axcodes: str, dtype) -> None:
    """Store an RAS-grid volume in another voxel orientation, with the affine that says so."""
    ras_affine = np.diag([*zooms, 1.0])
    ras_affine[:3, 3] = -np.array(zooms) * (np.array(ras_volume.shape[:3]) - 1) / 2
    transform = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(axcodes))
    data = apply_orientation(ras_volume, transform)
    affine = ras_affine @ inv_ornt_aff(transform, ras_volume.shape[:3])
    image = nib.Nifti1Image(data.astype(dtype), affine)
    image.set_data_dtype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)


def _nifti_volume(spec: dict, out: Path, rng: np.random.Generator, seed: int) -> list[dict]:
    modality = spec.get("modality", "ct")
    if modality not in ("ct", "mri"):
        raise ConfigError(f"nifti_volume: modality must be ct or mri, not {modality!r}")
    shape = tuple(int(s) for s in spec.get("size", (40, 40, 24)))
    zooms = (1.5, 1.5, 2.5) if modality == "ct" else (1.2, 1.2, 2.0)
    rows = []
    n_patients = int(spec.get("n_patients", 6))
    for n in range(n_patients + 1):
        planted = n == n_patients
        axcodes = _NIFTI_ORIENTATIONS[n % len(_NIFTI_ORIENTATIONS)]
        if modality == "ct":
            patient, volume, dtype = f"BODY{seed}{n:04d}", _body_ct(rng, shape), np.int16
            relative = f"{patient}/ct.nii.gz"
            if planted:  # two volumes in one file
                volume = np.stack([volume, volume], axis=-1)
        else:
            patient, volume, dtype = f"OAS{seed}{n:04d}", _brain_mri(rng, shape), np.float32
            relative = f"sub-{patient}/anat/sub-{patient}_T1w.nii.gz"
            if planted:  # a reconstruction that failed inside the brain
                volume[: shape[0] // 3, : shape[1] // 3] = np.nan
        _save_nifti(out / relative, np.round(volume) if dtype == np.int16 else volume, zooms, axcodes, dtype)
        if not planted:
            rows.append({"file": relative, "patient_id": patient})
    return rows


# ---------------------------------------------------------------- knee MRI stacks (MRNet)

_MRNET_PLANES = ("axial", "coronal", "sagittal")


def _plane_grid(plane: str, shape: tuple[int, int, int]) -> list[np.ndarray]:
    """(x: lateral, y: anterior, z: superior) in [-1, 1] for a stack (slices, H, W) of `plane`."""
    s, h, w = (np.linspace(-1, 1, n) for n in shape)
    stack, rows, cols = np.meshgrid(s, h, w, indexing="ij")
    if plane == "sagittal":
        return [stack, cols, -rows]
    if plane == "coronal":
        return [cols, stack, -rows]
    return [cols, -rows, stack]


def _knee(rng: np.random.Generator, coords: list[np.ndarray], acl_tear: bool, meniscus_tear: bool) -> np.ndarray:
    """PD-like knee: femur and tibia marrow, dark menisci and ACL; tears are bright fluid."""
    x, y, z = coords
    image = 70.0 * _ellipse([x, y], (0, 0), (0.9, 0.85), 0.05)
    image = image + 100.0 * _ellipse(coords, (0, -0.05, 0.62), (0.65, 0.6, 0.56), 0.06)
    image = image + 90.0 * _ellipse(coords, (0, 0.0, -0.62), (0.6, 0.55, 0.56), 0.06)
    horns = _soft(np.abs(z) - 0.07, 0.02) * _soft(np.abs(np.abs(y) - 0.45) - 0.12, 0.03) * _soft(np.abs(x) - 0.55, 0.05)
    image = image * (1 - horns) + 25.0 * horns
    if meniscus_tear:
        tear = horns * _soft(np.abs(z) - 0.035, 0.01) * (y < 0)
        image = image * (1 - tear) + 210.0 * tear
    distance, t = _segment_distance(coords, np.array([0.0, -0.3, 0.2]), np.array([0.0, 0.25, -0.2]), np.array([0.2, 0.09, 0.09]))
    ligament = _soft(distance - 1.0, 0.2)
    image = image * (1 - ligament) + 35.0 * ligament
    if acl_tear:
        gap = ligament * _soft(np.abs(t - 0.5) - 0.22, 0.05)
        image = image * (1 - gap) + 220.0 * gap
    return np.clip(image + 8.0 * _smooth_noise(rng, x.shape, 0.05) + 6.0 * rng.standard_normal(x.shape), 0, 255)


def _mrnet_npy(spec: dict, out: Path, rng: np.random.Generator, seed: int) -> list[dict]:
    slices, height, width = (int(s) for s in spec.get("size", (16, 48, 48)))
    planes = list(spec.get("planes", _MRNET_PLANES))
    unknown = sorted(set(planes) - set(_MRNET_PLANES))
    if unknown:
        raise ConfigError(f"mrnet_npy: unknown planes {unknown}; choose from {list(_MRNET_PLANES)}")
    n_cases = int(spec.get("n_patients", 12))
    n_train = max(1, round(0.8 * n_cases))
    rows, tables = [], {}
    for case in range(n_cases):
        folder = "train" if case < n_train else "valid"
        labels = {"acl": int(rng.random() < 0.45), "meniscus": int(rng.random() < 0.45)}
        case_id = f"{case:04d}"
        for plane in planes:
            shape = (slices + int(rng.integers(-2, 3)), height, width)
            array = _knee(rng, _plane_grid(plane, shape), bool(labels["acl"]), bool(labels["meniscus"]))
            relative = f"{folder}/{plane}/{case_id}.npy"
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            np.save(out / relative, np.round(array).astype(np.uint8))
            rows.append({"file": relative, "patient_id": case_id, "split": "train" if folder == "train" else "test", **labels})
        for label, value in labels.items():
            tables.setdefault(f"{folder}-{label}.csv", []).append(f"{case_id},{value}\n")
    for name, lines in tables.items():
        (out / name).write_text("".join(lines), encoding="utf-8")
    return rows


# ---------------------------------------------------------------- entry points

GENERATORS: dict[str, Callable[[dict, Path, np.random.Generator, int], list[dict]]] = {
    "cxr_dicom": _cxr_dicom,
    "mammo_dicom": _mammo_dicom,
    "xray_png": _xray_png,
    "ct_dicom_series": _ct_dicom_series,
    "nifti_volume": _nifti_volume,
    "mrnet_npy": _mrnet_npy,
}


def generate(spec: dict, out_dir: Path, seed: int) -> None:
    """Write one synthetic source (its config `access` block) and its labels.csv into out_dir."""
    name = spec.get("generator")
    if name not in GENERATORS:
        raise ConfigError(f"access.generator={name!r} is not a synthetic generator; choose one of {sorted(GENERATORS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    rows = GENERATORS[name](spec, out_dir, rng, seed)
    pd.DataFrame(rows).to_csv(out_dir / LABELS_FILE, index=False, lineterminator="\n")


def phi_strings(out_dir: Path) -> set[str]:
    """The PHI written into a generated source: identifying DICOM tags and raw patient ids."""
    out_dir = Path(out_dir)
    values: set[str] = set()
    for path in sorted(out_dir.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        values |= {str(ds.get(k)) for k in PHI_KEYWORDS if ds.get(k)}
    labels = out_dir / LABELS_FILE
    if labels.exists():
        ids = pd.read_csv(labels, dtype={"patient_id": str})["patient_id"]
        values |= {i for i in ids if len(i) >= MIN_PHI_ID_LENGTH}
    return values
