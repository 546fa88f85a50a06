import nibabel as nib
import numpy as np
import pytest
from dicom_fixtures import CT_NORMALIZE
from dicom_fixtures import XRAY_NORMALIZE as SPEC_2D

from medlatent.normalize.run import normalize_2d, normalize_3d, scale_intensity

SPEC_CT = {**CT_NORMALIZE, "spacing": [2.0, 2.0, 2.0]}


def test_2d_keeps_aspect_and_pads_with_background():
    image = np.random.default_rng(0).uniform(100, 4000, size=(96, 48)).astype(np.float32)
    out, transform = normalize_2d(image, SPEC_2D)
    assert out.shape == (64, 64)
    assert transform["resized_shape"] == [64, 32] and transform["pad_offset"] == [0, 16]
    assert np.all(out[:, :16] == -1.0) and np.all(out[:, 48:] == -1.0)
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_ct_hu_window_maps_known_values():
    hu = np.array([[-2000.0, -1000.0], [0.0, 1000.0]], dtype=np.float32)
    scaled, mapping = scale_intensity(hu, SPEC_CT)
    np.testing.assert_allclose(scaled, [[-1.0, -1.0], [0.0, 1.0]])
    assert mapping["window"] == [-1000.0, 1000.0]


def test_constant_image_is_refused():
    from medlatent.core.errors import InputError

    with pytest.raises(InputError, match="constant image"):
        scale_intensity(np.ones((8, 8), np.float32), SPEC_2D)


def test_non_ras_volume_ends_up_ras_at_the_configured_spacing():
    # LPS orientation: x and y axes point the other way; 1 x 1 x 4 mm voxels.
    affine = np.diag([-1.0, -1.0, 4.0, 1.0])
    volume = np.full((40, 40, 10), -1000.0, dtype=np.float32)
    volume[2:6, 30:34, 1:3] = 1000.0  # bright marker near voxel-x low, voxel-y high
    out, out_affine, transform = normalize_3d(volume, affine, SPEC_CT)
    assert nib.aff2axcodes(out_affine) == ("R", "A", "S")
    np.testing.assert_allclose(np.linalg.norm(out_affine[:3, :3], axis=0), [2.0, 2.0, 2.0])
    assert out.shape == (20, 20, 19)  # MONAI keeps the span between voxel centres: 9 * 4 mm / 2 + 1
    # world position of the marker is preserved: compare its centre before and after
    marker_world = affine @ np.array([3.5, 31.5, 1.5, 1.0])
    index = np.argwhere(out > 0.5).mean(axis=0)
    found_world = out_affine @ np.array([*index, 1.0])
    np.testing.assert_allclose(found_world[:3], marker_world[:3], atol=2.5)


def test_3d_size_pads_with_background():
    spec = {**SPEC_CT, "spacing": None, "size": [16, 16, 16]}
    out, _, _ = normalize_3d(np.zeros((8, 8, 8), np.float32), np.eye(4), spec)
    assert out.shape == (16, 16, 16)
    assert out[0, 0, 0] == -1.0 and out[8, 8, 8] == 0.0


def test_a_resampled_grid_over_the_budget_is_refused_before_sampling():
    from medlatent.io.budget import DecodeBudget, TooLargeError

    # 4 x 4 x 4 voxels of 50 mm (150 mm between centres) at 0.5 mm: 301^3 samples, 104 MiB as float32
    spec = {**SPEC_CT, "spacing": [0.5, 0.5, 0.5], "size": None}
    with pytest.raises(TooLargeError, match="the resampled grid"):
        normalize_3d(
            np.zeros((4, 4, 4), np.float32), np.diag([50.0, 50.0, 50.0, 1.0]), spec, DecodeBudget.for_process(256)
        )


def test_an_item_failing_with_any_error_is_recorded_in_its_shard_without_its_path(tmp_path, monkeypatch):
    import pandas as pd

    from medlatent.core import rawpaths
    from medlatent.io.h5 import ShardReader
    from medlatent.normalize import run

    def failing(path, *args, **kwargs):
        raise RuntimeError(f"bug while reading {path}")

    monkeypatch.setattr(run, "normalize_item", failing)
    manifest = pd.DataFrame({"item_id": ["s_1"], "file_key": ["k1"], "shard": ["train-000"], "split": ["train"]})
    files = pd.DataFrame({"file_key": ["k1"], "path": ["PID4711.dcm"], "path_bytes": [rawpaths.to_bytes("PID4711.dcm")],
                          "frame": pd.array([None], dtype="Int64")})  # fmt: skip
    counts = run.normalize_shard(SPEC_2D, "train-000", manifest, files, tmp_path, tmp_path / "s.h5", demo=False)
    assert counts == {"items": 0, "failed": 1}
    with ShardReader(tmp_path / "s.h5") as reader:
        assert reader.rejected == {"s_1": "RuntimeError while normalizing"}
