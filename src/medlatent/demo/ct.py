"""CT: head CT DICOM series (stands for CQ500) and the trunk CT volume of the NIfTI generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.uid import CTImageStorage

from medlatent.demo.dicom import phi_tags, uid, write_dicom
from medlatent.demo.shapes import ellipse, grid, smooth_noise, soft


def _head_ct(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    fracture_angle: float | None,
) -> np.ndarray:
    """HU volume indexed (slice, row, col): air, scalp, skull ring, brain, ventricles."""
    slices, rows, cols = shape
    z, y, x = np.meshgrid(*[(np.arange(n) + 0.5 - n / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    radii = (0.4 * cols * spacing[2], 0.42 * rows * spacing[1], 0.62 * slices * spacing[0])
    r = np.sqrt((x / radii[0]) ** 2 + (y / radii[1]) ** 2 + (z / radii[2]) ** 2)
    brain = 32.0 + 6.0 * smooth_noise(rng, shape, 0.1)
    hu = np.where(r < 1.05, 40.0, -1000.0)
    skull = (r >= 0.8) & (r < 1.0)
    if fracture_angle is not None:
        # A gap in the skull ring over the middle slices, under a scalp haematoma.
        angle = np.abs(np.angle(np.exp(1j * (np.arctan2(y, x) - fracture_angle))))
        middle = np.abs(z) < 0.3 * slices * spacing[0]
        skull &= ~((angle < np.radians(30)) & middle)
        hu = np.where((angle < np.radians(40)) & middle & (r >= 1.0) & (r < 1.2), 65.0, hu)
    hu = np.where(skull, 1000.0 + 60.0 * smooth_noise(rng, shape, 0.05), hu)
    hu = np.where(r < 0.8, brain, hu)
    for side in (-1, 1):
        ventricle = ((x - side * 0.18 * radii[0]) / (0.12 * radii[0])) ** 2 + (y / (0.35 * radii[1])) ** 2 + (
            z / (0.3 * radii[2])
        ) ** 2 < 1
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
            "SOPInstanceUID": uid(seed, attrs["SeriesInstanceUID"], k),
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


def ct_dicom_series(spec: dict, out: Path, rng: np.random.Generator, seed: int) -> list[dict]:
    """Head CT series in CQ500's layout (`<patient>/Unknown Study/CT <thickness>mm/`), one label row per series.

    Slice files are shuffled, rescale slopes are 1 or 0.5, slice order ascends or descends. One extra
    series with a slice missing is planted and left out of the labels.
    """
    rows_n, cols_n, slices_n = (int(s) for s in spec.get("size", (48, 48, 16)))
    rows = []
    n_patients = int(spec.get("n_patients", 8))
    for n in range(n_patients + 1):
        planted = n == n_patients
        phi = phi_tags(seed, "H", n, "JOHN")
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
            "StudyInstanceUID": uid(seed, "ct", n, "study"),
            "SeriesInstanceUID": uid(seed, "ct", n, "series"),
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


def body_ct(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Trunk in HU on an RAS grid: fat, soft tissue, lungs above the liver, spine, aorta."""
    x, y, z = grid(shape)
    hu = -1000.0 + 900.0 * ellipse([x, y], (0, 0), (0.95, 0.7), 0.03)
    hu = hu + 140.0 * ellipse([x, y], (0, 0), (0.85, 0.6), 0.05)
    upper = soft(-z, 0.1)
    for side in (-1, 1):
        hu = hu - 890.0 * upper * ellipse([x, y], (side * 0.4, 0.0), (0.3, 0.42), 0.1)
    hu = hu + 20.0 * (1 - upper) * ellipse([x, y], (0.35, 0.05), (0.4, 0.35), 0.1)
    hu = hu + 660.0 * ellipse([x, y], (0.0, -0.5), (0.13, 0.12), 0.1)
    hu = hu + 150.0 * ellipse([x, y], (0.1, -0.3), (0.07, 0.07), 0.1)
    return hu + 12.0 * smooth_noise(rng, shape, 0.08) + 8.0 * rng.standard_normal(shape)
