"""Projection radiographs: chest X-ray DICOMs (stands for MIMIC-CXR) and wrist PNG/JPEG (GRAZPEDWRI-DX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from medlatent.demo.dicom import phi_tags, radiograph_attrs, uid, window_from, write_dicom
from medlatent.demo.shapes import ellipse, grid, pick, smooth_noise, soft, to_uint


def _chest(
    rng: np.random.Generator, shape: tuple[int, int], view: str, nodule: tuple[float, float] | None
) -> np.ndarray:
    """Chest radiograph in display units: body, lungs, ribs, bone and mediastinum, an optional nodule."""
    y, x = grid(shape)
    image = 0.05 + 0.35 * ellipse([y, x], (0.1, 0.0), (1.3, 0.95), 0.05)
    if view == "LATERAL":
        lungs = ellipse([y, x], (-0.1, -0.1), (0.75, 0.55))
        bone = 0.25 * ellipse([y, x], (0.1, 0.72), (1.1, 0.1), 0.3)
    else:
        lungs = ellipse([y, x], (-0.1, -0.47), (0.78, 0.33)) + ellipse([y, x], (-0.1, 0.47), (0.78, 0.33))
        bone = 0.18 * ellipse([y, x], (0.0, 0.0), (1.3, 0.13), 0.3) + 0.15 * ellipse(
            [y, x], (0.35, 0.1), (0.3, 0.22), 0.3
        )
    ribs = 0.06 * lungs * (0.5 + 0.5 * np.cos(2 * np.pi * (3.5 * y + 0.8 * x**2)))
    image = image - 0.25 * lungs + ribs + bone + 0.03 * smooth_noise(rng, shape, 0.06)
    if nodule is not None:
        image = image + 0.4 * ellipse([y, x], nodule, (0.2, 0.2), 0.3)
    return image * rng.uniform(0.9, 1.1) + 0.012 * rng.standard_normal(shape)


def cxr_dicom(spec: dict, out: Path, rng: np.random.Generator, seed: int) -> list[dict]:
    """Chest X-rays in MIMIC-CXR's layout `files/<patient>/s<study>/<view>_<j>.dcm`, one label row per image.

    DX or CR, MONOCHROME1 or 2, uncompressed, RLE or JPEG 2000, with a window. A truncated file is
    planted and left out of the labels.
    """
    shape = tuple(spec.get("size", (96, 80)))
    rows = []
    n_patients = int(spec.get("n_patients", 12))
    for n in range(n_patients):
        phi = phi_tags(seed, "C", n, "JOHN")
        has_nodule = bool(rng.random() < 0.5)
        side = rng.choice([-1.0, 1.0])
        nodule_yx = (rng.uniform(-0.45, 0.15), side * rng.uniform(0.4, 0.55))
        for j in range(int(spec.get("images_per_patient", 3))):
            view = pick(rng, ("PA", "AP", "LATERAL"), (0.45, 0.35, 0.2))
            nodule = (
                None
                if not has_nodule
                else (nodule_yx if view != "LATERAL" else (nodule_yx[0], rng.uniform(-0.35, 0.15)))
            )
            stored = to_uint(_chest(rng, shape, view, nodule), 300, 3300, 12)
            modality = pick(rng, ("DX", "CR"), (0.7, 0.3))
            attrs = radiograph_attrs(
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
                photometric=pick(rng, ("MONOCHROME2", "MONOCHROME1"), (0.6, 0.4)),
                transfer_syntax=pick(rng, (ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless), (0.4, 0.3, 0.3)),
                window=window_from(stored),
            )
            rows.append({"file": relative, "patient_id": phi["PatientID"], "view": view, "nodule": int(has_nodule)})
    truncated = out / f"files/{phi['PatientID']}/s{50000 + n * 10 + 9}/truncated.dcm"
    write_dicom(
        truncated,
        stored,
        {**attrs, "SOPInstanceUID": uid(seed, "cxr", "truncated")},
        transfer_syntax=RLELossless,
        window=window_from(stored),
    )
    _cut_in_half(truncated)
    return rows


def _cut_in_half(path: Path) -> None:
    """A download that stopped midway."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bone(v: np.ndarray, u: np.ndarray, centre: float, width: float, length: float) -> np.ndarray:
    """A long bone seen from the side: bright cortex, darker marrow, wider distal end."""
    half = width * (1.0 + 0.5 * soft(0.75 * length - v, 0.05))
    shaft = soft(np.abs(u - centre) - half, 0.03) * soft(v - length, 0.03)
    marrow = soft(np.abs(u - centre) - 0.5 * half, 0.03) * shaft
    return 0.55 * shaft - 0.15 * marrow


def _wrist(
    rng: np.random.Generator, shape: tuple[int, int], projection: str, fracture: float | None, metal: bool, cast: bool
) -> np.ndarray:
    """Wrist radiograph in display units: forearm bones, carpals, optional fracture line, metal and cast."""
    v, u = grid(shape)
    v = v - v.min()  # 0 at the top (forearm), growing towards the hand
    jitter = rng.uniform(-0.06, 0.06)
    image = 0.06 + 0.28 * soft(np.abs(u - jitter) - 0.78, 0.04)
    if projection == "AP":
        bones = [(-0.32 + jitter, 0.15), (0.32 + jitter, 0.11)]
    else:
        bones = [(jitter, 0.2)]
    length = 0.8 * v.max()
    for centre, width in bones:
        image = image + _bone(v, u, centre, width, length)
    carpals = sum(
        ellipse([v, u], (length + 0.2 + 0.15 * k % 0.3, -0.35 + 0.23 * k + jitter), (0.12, 0.1), 0.2) for k in range(4)
    )
    image = image + 0.35 * carpals
    if fracture is not None:
        centre, width = bones[0]
        line = soft(np.abs(v - fracture - 0.25 * (u - centre)) - 0.07, 0.02) * soft(
            np.abs(u - centre) - 2.2 * width, 0.03
        )
        image = image - 0.9 * line * (image - 0.34).clip(0)
    if metal:
        image = np.maximum(
            image, 0.98 * soft(np.abs(u - bones[0][0]) - 0.06, 0.02) * soft(np.abs(v - 0.5 * length) - 0.35, 0.02)
        )
    if cast:
        image = image + (0.18 + 0.02 * smooth_noise(rng, shape, 0.01)) * soft(np.abs(u - jitter) - 0.92, 0.03)
    return image + 0.015 * rng.standard_normal(shape)


def xray_png(spec: dict, out: Path, rng: np.random.Generator, seed: int) -> list[dict]:
    """Wrist radiographs `images/<patient>_<j>_<projection>.{png,jpg}`, one label row per image.

    16-bit PNG, 8-bit JPEG or RGB JPEG. A text file named like an image and a notes.txt are planted.
    """
    shape = tuple(spec.get("size", (96, 64)))
    rows = []
    for n in range(int(spec.get("n_patients", 20))):
        patient = f"WRI{seed}{n:04d}"
        fracture = rng.uniform(0.35, 0.6) * 2 * shape[0] / min(shape) if rng.random() < 0.5 else None
        for j in range(int(spec.get("images_per_patient", 2))):
            projection = ("AP", "LAT")[j % 2]
            metal, cast = bool(rng.random() < 0.08), bool(rng.random() < 0.08)
            display = np.clip(_wrist(rng, shape, projection, fracture, metal, cast), 0.0, 1.0)
            encoding = pick(rng, ("png16", "jpeg", "jpeg_rgb"), (0.7, 0.2, 0.1))
            relative = f"images/{patient}_{j + 1:02d}_{projection}.{'png' if encoding == 'png16' else 'jpg'}"
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            if encoding == "png16":
                Image.fromarray(to_uint(display, 1000, 60000, 16)).save(out / relative, format="PNG", optimize=False)
            else:
                grey = Image.fromarray(np.round(display * 255).astype(np.uint8))
                (grey.convert("RGB") if encoding == "jpeg_rgb" else grey).save(
                    out / relative, format="JPEG", quality=92, optimize=False, progressive=False
                )
            rows.append(
                {
                    "file": relative,
                    "patient_id": patient,
                    "projection": projection,
                    "fracture": int(fracture is not None),
                    "metal": int(metal),
                    "cast": int(cast),
                }
            )
    (out / "images" / "x.png").write_text("this file is named like an image but holds text\n", encoding="utf-8")
    (out / "notes.txt").write_text("Synthetic wrist radiographs. Not an image.\n", encoding="utf-8")
    return rows
