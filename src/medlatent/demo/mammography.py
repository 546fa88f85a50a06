"""Mammography DICOMs (stands for CMMD / VinDr-Mammo): CC and MLO views of both breasts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.uid import (
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
)

from medlatent.core.errors import ConfigError
from medlatent.demo.dicom import phi_tags, radiograph_attrs, sigmoid_lut, window_from, write_dicom
from medlatent.demo.shapes import ellipse, grid, pick, smooth_noise, soft, to_uint

_MAMMO_IMAGES = (("R", "CC"), ("R", "MLO"), ("L", "CC"), ("L", "MLO"))


def _breast(rng: np.random.Generator, shape: tuple[int, int], view: str, side: str, mass, calcification) -> np.ndarray:
    """Breast with the chest wall on the left (right breast); the left breast is mirrored."""
    v, u = grid(shape)
    wall = u.min()
    reach = 0.82 * (u.max() - wall)
    breast = ellipse([v, u], (0.0, wall), (0.85 * v.max(), reach), 0.05)
    glandular = (
        0.1
        * soft(-smooth_noise(rng, shape, 0.05) - 0.3, 0.4)
        * ellipse([v, u], (0.0, wall), (0.6 * v.max(), 0.7 * reach), 0.3)
    )
    tissue = 0.3 + glandular + 0.03 * smooth_noise(rng, shape, 0.02)
    if view == "MLO":
        tissue = tissue + 0.25 * soft((u - wall) - 0.45 * (-0.35 * v.max() - v), 0.05)
    if mass is not None:
        tissue = tissue + 0.4 * ellipse([v, u], mass, (0.2, 0.2), 0.25)
        angle = np.arctan2(v - mass[0], u - mass[1])
        spicules = (np.cos(7 * angle) > 0.8) * ellipse([v, u], mass, (0.34, 0.34), 0.2)
        tissue = tissue + 0.12 * spicules
    if calcification is not None:
        for dv, du in rng.uniform(-0.2, 0.2, size=(8, 2)):
            tissue = tissue + 0.7 * ellipse([v, u], (calcification[0] + dv, calcification[1] + du), (0.055, 0.055), 0.3)
    image = 0.03 + breast * tissue + 0.01 * rng.standard_normal(shape)
    return image[:, ::-1] if side == "L" else image


def _finding_centre(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[float, float]:
    """A random finding position inside the breast (chest wall on the left)."""
    v, u = grid(shape)
    return rng.uniform(-0.5, 0.5) * v.max(), u.min() + rng.uniform(0.35, 0.75) * (u.max() - u.min()) * 0.82


def mammo_dicom(spec: dict, out: Path, rng: np.random.Generator, seed: int) -> list[dict]:
    """Mammograms `<patient>/<side>_<view>.dcm`, one label row per image.

    MONOCHROME1 or 2, uncompressed or JPEG 2000, a window or a sigmoid VOI LUT, about 10% FOR PROCESSING;
    calcification and malignancy are drawn per breast.
    """
    shape = tuple(spec.get("size", (128, 64)))
    per_patient = int(spec.get("images_per_patient", 4))
    if per_patient > len(_MAMMO_IMAGES):
        raise ConfigError(
            f"mammo_dicom writes at most {len(_MAMMO_IMAGES)} images (L/R x CC/MLO) per patient, not {per_patient}"
        )
    rows = []
    for n in range(int(spec.get("n_patients", 10))):
        phi = phi_tags(seed, "M", n, "JANE")
        breasts = {
            side: {
                "calcification": _finding_centre(rng, shape) if rng.random() < 0.45 else None,
                "malignancy": _finding_centre(rng, shape) if rng.random() < 0.45 else None,
            }
            for side in ("R", "L")
        }
        for j, (side, view) in enumerate(_MAMMO_IMAGES[:per_patient]):
            found = breasts[side]
            stored = to_uint(
                _breast(rng, shape, view, side, found["malignancy"], found["calcification"]), 600, 14000, 14
            )
            processing = bool(rng.random() < 0.1)
            attrs = radiograph_attrs(
                phi,
                (seed, "mammo", n, j),
                DigitalMammographyXRayImageStorageForProcessing
                if processing
                else DigitalMammographyXRayImageStorageForPresentation,
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
                photometric=pick(rng, ("MONOCHROME2", "MONOCHROME1"), (0.7, 0.3)),
                transfer_syntax=pick(rng, (ExplicitVRLittleEndian, JPEG2000Lossless), (0.65, 0.35)),
                window=None if processing or use_lut else window_from(stored),
                voi_lut=sigmoid_lut(stored) if use_lut else None,
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
