"""The one-pass 3D geometry against MONAI's Orientation + Spacing + ResizeWithPadOrCrop.

MONAI is the oracle: the same grid (shape, resampled shape, affine to 1e-4) and the same
voxels to 1e-4. Rotated grids keep their axes (MONAI's Spacing keeps the direction cosines)
and take the separable path, whose float64 positions differ from MONAI's float32 sampling
coordinates by rounding only (values within ~1e-7); sheared grids take grid_sample with
float32 coordinates as MONAI does (within a few 1e-5). Nearest is compared where no sampling
position falls on a half voxel: there MONAI's float32 coordinates break the tie either way.
"""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from dicom_fixtures import CT_NORMALIZE as SPEC_CT
from nibabel.testing import data_path

from medlatent import io
from medlatent.normalize.geometry import RAS_LABELS
from medlatent.normalize.run import normalize_3d, scale_intensity

SPEC_MRI = {**SPEC_CT, "modality": "mri", "intensity": "percentile", "percentiles": [0.0, 100.0]}


def _affine(columns: list[list[float]], origin: list[float]) -> np.ndarray:
    """A voxel-to-RAS affine from its three direction x spacing columns and its origin."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(columns, dtype=np.float64).T
    affine[:3, 3] = origin
    return affine


def _oblique() -> np.ndarray:
    angle = 0.3  # about the z axis, then anisotropic voxels
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 1.1, 2.0])
    affine[:3, 3] = [10.0, -5.0, 3.0]
    return affine


AFFINES = {
    # DICOM axial series in RAS: columns run R->L, rows A->P (LPS patient space), slices up
    "lps_dicom_like": _affine([[-0.7, 0, 0], [0, -0.7, 0], [0, 0, 2.5]], [160.0, 150.0, -300.0]),
    "permuted_axes": _affine([[0, -0.8, 0], [0, 0, 1.2], [1.5, 0, 0]], [12.3, -40.1, 7.7]),
    "flipped_axes": _affine([[1.0, 0, 0], [0, -1.3, 0], [0, 0, -0.9]], [-3.0, 20.0, 11.0]),
    "anisotropic": _affine([[0.5, 0, 0], [0, 1.7, 0], [0, 0, 3.0]], [0.0, 0.0, 0.0]),
    "oblique": _oblique(),
    # gantry-tilted CT: slices sheared along y, the one case that needs a full sampling grid
    "gantry_tilt": _affine([[-0.7, 0, 0], [0, -0.7, 0], [0, 0.4, 2.5]], [160.0, 150.0, -300.0]),
}


def monai_normalize_3d(array: np.ndarray, affine: np.ndarray, spec: dict) -> tuple[np.ndarray, np.ndarray, list]:
    """The reference: intensity scaling, then MONAI Orientation, Spacing, ResizeWithPadOrCrop."""
    from monai.data import MetaTensor
    from monai.transforms import Orientation, ResizeWithPadOrCrop, Spacing

    scaled, _ = scale_intensity(array, spec)
    image = MetaTensor(torch.from_numpy(scaled)[None], affine=torch.as_tensor(affine))
    image = Orientation(axcodes="RAS", labels=RAS_LABELS)(image)
    if spec.get("spacing"):
        mode = "nearest" if spec["interpolation"] == "nearest" else "bilinear"
        image = Spacing(pixdim=spec["spacing"], mode=mode, padding_mode="border")(image)
    resampled_shape = list(image.shape[1:])
    if spec.get("size"):
        image = ResizeWithPadOrCrop(spatial_size=spec["size"], value=spec["output_range"][0])(image)
    return np.asarray(image[0], dtype=np.float32), np.asarray(image.affine, dtype=np.float64), resampled_shape


def assert_matches_monai(array: np.ndarray, affine: np.ndarray, spec: dict) -> np.ndarray:
    out, out_affine, transform = normalize_3d(array, affine, spec)
    expected, expected_affine, expected_resampled = monai_normalize_3d(array, affine, spec)
    assert out.shape == expected.shape and out.dtype == np.float32
    assert transform["resampled_shape"] == expected_resampled
    np.testing.assert_allclose(out_affine, expected_affine, atol=1e-4)
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)
    assert nib.aff2axcodes(out_affine) == ("R", "A", "S") or spec.get("spacing") is None
    return out


@pytest.mark.parametrize("size", [None, [15, 30, 21]], ids=["whole", "pad_crop"])
@pytest.mark.parametrize("spacing", [[1.0, 1.0, 1.0], [2.0, 0.8, 1.3], None], ids=["1mm", "aniso_mm", "no_spacing"])
@pytest.mark.parametrize("name", list(AFFINES))
def test_one_pass_geometry_equals_monai(name, spacing, size):
    volume = np.random.default_rng(0).uniform(-1200, 1200, size=(24, 20, 12)).astype(np.float32)
    out = assert_matches_monai(volume, AFFINES[name], {**SPEC_CT, "spacing": spacing, "size": size})
    assert np.ptp(out) > 1.0  # a real comparison: the volume is not all background


def test_nearest_equals_monai_away_from_ties():
    volume = np.random.default_rng(1).uniform(-1000, 1000, size=(24, 20, 12)).astype(np.float32)
    spec = {**SPEC_CT, "spacing": [2.0, 0.8, 1.3], "interpolation": "nearest", "size": [15, 30, 21]}
    out = assert_matches_monai(volume, AFFINES["lps_dicom_like"], spec)
    # nearest only copies voxels (or pads with the background)
    assert np.isin(out, np.append(scale_intensity(volume, spec)[0], -1.0)).all()


def test_grid_already_at_the_target_spacing_keeps_its_affine_as_monai_does():
    # 1 mm RAS off by less than MONAI's 1e-3 affine tolerance: no resampling, affine unchanged
    affine = np.diag([1.0 + 5e-4, 1.0, 1.0, 1.0])
    volume = np.random.default_rng(2).uniform(-1000, 1000, size=(10, 9, 8)).astype(np.float32)
    out = assert_matches_monai(volume, affine, SPEC_CT)
    np.testing.assert_array_equal(out, scale_intensity(volume, SPEC_CT)[0])


def test_nibabel_anatomical_nifti_equals_monai():
    # nibabel's test brain: 33 x 41 x 25 at 2 mm, LAS
    loaded = io.read_image(Path(data_path) / "anatomical.nii")
    spec = {**SPEC_MRI, "spacing": [1.5, 1.5, 1.5], "size": [48, 48, 32]}
    out = assert_matches_monai(loaded.array, loaded.affine, spec)
    assert (out > -1.0).mean() > 0.2


def test_nibabel_oblique_scanner_nifti_equals_monai():
    # first volume of nibabel's example4d: a scanner affine rotated about x (takes grid_sample)
    image = nib.load(Path(data_path) / "example4d.nii.gz")
    volume = np.asarray(image.dataobj[..., 0], dtype=np.float32)
    assert_matches_monai(volume, image.affine, {**SPEC_MRI, "spacing": [2.5, 2.5, 2.5]})
