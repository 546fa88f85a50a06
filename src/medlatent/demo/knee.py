"""Knee MRI stacks in MRNet's layout: {train,valid}/<plane>/<case>.npy and per-label CSV tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medlatent.core.errors import ConfigError
from medlatent.demo.shapes import ellipse, segment_distance, smooth_noise, soft

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
    image = 70.0 * ellipse([x, y], (0, 0), (0.9, 0.85), 0.05)
    image = image + 100.0 * ellipse(coords, (0, -0.05, 0.62), (0.65, 0.6, 0.56), 0.06)
    image = image + 90.0 * ellipse(coords, (0, 0.0, -0.62), (0.6, 0.55, 0.56), 0.06)
    horns = soft(np.abs(z) - 0.07, 0.02) * soft(np.abs(np.abs(y) - 0.45) - 0.12, 0.03) * soft(np.abs(x) - 0.55, 0.05)
    image = image * (1 - horns) + 25.0 * horns
    if meniscus_tear:
        tear = horns * soft(np.abs(z) - 0.035, 0.01) * (y < 0)
        image = image * (1 - tear) + 210.0 * tear
    distance, t = segment_distance(
        coords, np.array([0.0, -0.3, 0.2]), np.array([0.0, 0.25, -0.2]), np.array([0.2, 0.09, 0.09])
    )
    ligament = soft(distance - 1.0, 0.2)
    image = image * (1 - ligament) + 35.0 * ligament
    if acl_tear:
        gap = ligament * soft(np.abs(t - 0.5) - 0.22, 0.05)
        image = image * (1 - gap) + 220.0 * gap
    return np.clip(image + 8.0 * smooth_noise(rng, x.shape, 0.05) + 6.0 * rng.standard_normal(x.shape), 0, 255)


def mrnet_npy(spec: dict, out: Path, rng: np.random.Generator, seed: int) -> list[dict]:
    """Knee stacks in MRNet's layout, one label row per stack.

    uint8 `{train,valid}/<plane>/<case>.npy` (80% of the cases in train) and the header-less
    `{train,valid}-{acl,meniscus}.csv` tables; stack depth varies by up to 2 slices.
    """
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
            rows.append(
                {"file": relative, "patient_id": case_id, "split": "train" if folder == "train" else "test", **labels}
            )
        for label, value in labels.items():
            tables.setdefault(f"{folder}-{label}.csv", []).append(f"{case_id},{value}\n")
    for name, lines in tables.items():
        (out / name).write_text("".join(lines), encoding="utf-8")
    return rows
