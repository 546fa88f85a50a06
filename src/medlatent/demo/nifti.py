"""NIfTI volumes (stands for TotalSegmentator CT / OASIS MRI), stored in non-RAS orientations."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from medlatent.core.errors import ConfigError
from medlatent.demo.ct import body_ct
from medlatent.demo.mri import brain_mri

#: Non-RAS orientations the volumes are stored in, cycled over patients.
_NIFTI_ORIENTATIONS = ("LPS", "LAS", "ASL", "PIL")


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


def nifti_volume(spec: dict, out: Path, rng: np.random.Generator, seed: int) -> list[dict]:
    """Trunk CT or T1-like brain MRI volumes in non-RAS orientations, one label row per volume.

    CT: int16 `<patient>/ct.nii.gz`; MRI: float32 `sub-<id>/anat/sub-<id>_T1w.nii.gz`. One extra volume
    is planted and left out of the labels: a 4D CT, or an MRI with NaNs.
    """
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
            patient, volume, dtype = f"BODY{seed}{n:04d}", body_ct(rng, shape), np.int16
            relative = f"{patient}/ct.nii.gz"
            if planted:  # two volumes in one file
                volume = np.stack([volume, volume], axis=-1)
        else:
            patient, volume, dtype = f"OAS{seed}{n:04d}", brain_mri(rng, shape), np.float32
            relative = f"sub-{patient}/anat/sub-{patient}_T1w.nii.gz"
            if planted:  # a reconstruction that failed inside the brain
                volume[: shape[0] // 3, : shape[1] // 3] = np.nan
        _save_nifti(out / relative, np.round(volume) if dtype == np.int16 else volume, zooms, axcodes, dtype)
        if not planted:
            rows.append({"file": relative, "patient_id": patient})
    return rows
