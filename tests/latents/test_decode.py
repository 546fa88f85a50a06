"""`medlatent decode` on the demo's own data: geometry back on each item's grid, values equal
to the model's own decode of the stored posterior mean, weights checked against the index."""

from __future__ import annotations

import json
import shutil
import tarfile

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from latent_fixtures import demo_dataset, tiny_model
from PIL import Image

from medlatent import cli, load_latents
from medlatent.core.errors import InputError
from medlatent.io.h5 import ShardReader
from medlatent.latents.decode import decode_dataset
from medlatent.models.registry import load_model


def _normalized_items(built: dict) -> dict:
    """{item_id: (normalized array, item attributes)} from the normalized HDF5 shards."""
    items = {}
    for path in sorted(built["normalized"].glob("*.h5")):
        with ShardReader(path) as reader:
            items.update({item: reader.read(item) for item in reader.item_ids()})
    return items


@pytest.fixture(scope="module")
def cxr(tmp_path_factory) -> dict:
    """Synthetic chest X-ray DICOMs (96 x 80, letterboxed into 64 x 64) as a 2D latent dataset."""
    from conftest import DEMO_CONFIG, FULL_CONFIG

    from medlatent import config as mlconfig

    tmp = tmp_path_factory.mktemp("cxr")
    weights = tiny_model(tmp / "results" / "models" / "tiny" / "stage2.pt")
    config = mlconfig.load(FULL_CONFIG, DEMO_CONFIG)
    built = demo_dataset(config, "demo_cxr", tmp, {"n_patients": 4, "images_per_patient": 2}, weights)
    return {
        **built,
        "tmp": tmp,
        "weights": weights,
        "interpolation": mlconfig.normalize_slice(config, "demo_cxr")["interpolation"],
    }


def test_2d_decode_has_each_items_original_shape_and_equals_the_models_decode_of_the_mean(cxr):
    out = cxr["tmp"] / "decoded"
    assert (
        cli.main(
            [
                "decode",
                str(cxr["dataset"]),
                "--out",
                str(out),
                "--format",
                "nifti",
                "--workdir",
                str(cxr["tmp"]),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    model = load_model(cxr["weights"])
    files = cxr["files_index"].set_index("item_id")["path"]
    normalized = _normalized_items(cxr)
    seen = 0
    for split in ("train", "val", "test"):
        if not cxr["index"]["splits"][split]:
            continue
        for latent, _, meta, posterior in load_latents(cxr["dataset"], split=split, posterior=("mean",)):
            decoded = np.asarray(nib.load(out / split / f"{meta['item_id']}.nii.gz").dataobj)
            dicom = pydicom.dcmread(cxr["raw"] / files[meta["item_id"]], stop_before_pixels=True)
            assert decoded.shape == (dicom.Rows, dicom.Columns)  # the source image's own pixel grid
            image, attrs = normalized[meta["item_id"]]
            with torch.inference_mode():  # the stored mean is the encoder's unprojected mean (float16)
                posterior_mean = model.autoencoder.encode(torch.from_numpy(image)[None, None]).mean[0]
                torch.testing.assert_close(posterior["mean"], posterior_mean, rtol=2**-9, atol=1e-3)
                assert not torch.allclose(posterior["mean"], latent, atol=1e-2)  # the latent is projected
                oracle = model.autoencoder.decode(posterior["mean"][None])[0, 0]
            (top, left), (height, width) = attrs["transform"]["pad_offset"], attrs["transform"]["resized_shape"]
            assert dicom.Rows > height and dicom.Columns > width  # enlarged back: no antialiasing
            oracle = F.interpolate(
                oracle[None, None, top : top + height, left : left + width],
                size=(dicom.Rows, dicom.Columns),
                mode=cxr["interpolation"],
                align_corners=False,
            )[0, 0]
            np.testing.assert_allclose(decoded, oracle.numpy(), atol=1e-5)
            seen += 1
    assert seen == cxr["index"]["num_samples"] > 0


def test_2d_png_is_16_bit_on_the_model_range_and_source_intensities_invert_the_window(cxr):
    split = min((s for s, n in cxr["index"]["splits"].items() if n), key=cxr["index"]["splits"].get)
    first = next(iter(load_latents(cxr["dataset"], split=split)))[2]
    pngs = decode_dataset(cxr["dataset"], cxr["tmp"] / "png", split=split, workdir=cxr["tmp"])
    nifti = decode_dataset(
        cxr["dataset"], cxr["tmp"] / "source", split=split, fmt="nifti", intensity="source", weights=cxr["weights"]
    )
    model_scale = decode_dataset(cxr["dataset"], cxr["tmp"] / "model", split=split, fmt="nifti", weights=cxr["weights"])
    assert len(pngs) == len(nifti) == cxr["index"]["splits"][split]
    png = np.asarray(Image.open(cxr["tmp"] / "png" / split / f"{first['item_id']}.png"))
    model = np.asarray(nib.load(model_scale[0]).dataobj)
    assert png.dtype == np.uint16 and png.shape == model.shape
    np.testing.assert_array_equal(png, np.round(np.clip((model + 1) / 2, 0, 1) * 65535).astype(np.uint16))
    low, high = first["normalization"]["intensity"]["window"]
    np.testing.assert_allclose(
        np.asarray(nib.load(nifti[0]).dataobj),
        (model + 1) / 2 * (high - low) + low,
        rtol=1e-5,
        atol=1e-3 * (high - low),
    )


def test_weights_other_than_the_indexed_ones_are_refused_naming_both_hashes(cxr, tmp_path):
    other = tiny_model(tmp_path / "other" / "stage2.pt", seed=1)
    with pytest.raises(InputError) as error:
        decode_dataset(cxr["dataset"], tmp_path / "out", weights=other)
    from medlatent.core.hashing import file_sha256

    assert file_sha256(other) in str(error.value) and cxr["index"]["weights_sha256"] in str(error.value)
    with pytest.raises(InputError, match="--weights PATH"):
        decode_dataset(cxr["dataset"], tmp_path / "out", workdir=tmp_path)
    assert not (tmp_path / "out").exists()


def test_projected_dataset_without_the_stored_mean_names_latents_store(cxr, tmp_path):
    dataset = tmp_path / "classifier_only"
    dataset.mkdir()
    index = json.loads((cxr["dataset"] / "index.json").read_text())
    index["latent"]["stored"] = ["latent"]
    (dataset / "index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match=r"latents\.store"):
        decode_dataset(dataset, tmp_path / "out", weights=cxr["weights"])


def test_decoding_without_the_acquisition_grid_names_both_ways_out(cxr, tmp_path):
    from medlatent.latents.decode import original_grid

    with pytest.raises(InputError, match="--grid normalized"):  # a 3D dataset extracted before original_affine
        original_grid(np.zeros((4, 4, 4), np.float32), {"item_id": "old", "affine": np.eye(4).tolist()}, {}, "x.tar")
    with pytest.raises(InputError, match="original pixels only"):
        decode_dataset(cxr["dataset"], tmp_path / "out", grid="normalized", weights=cxr["weights"])
    assert not (tmp_path / "out").exists()


def _ct_dataset(tmp_path_factory, source_id: str, access: dict) -> dict:
    """A demo CT source generated small, normalized to RAS at 2 mm into 32^3, as a 3D latent dataset."""
    from conftest import DEMO_CONFIG, FULL_CONFIG

    from medlatent import config as mlconfig

    tmp = tmp_path_factory.mktemp(source_id)
    weights = tiny_model(tmp / "results" / "models" / "tiny" / "stage2.pt", dims=3, latent_channels=1)
    config = mlconfig.load(FULL_CONFIG, DEMO_CONFIG)
    built = demo_dataset(config, source_id, tmp, access, weights, window=[32, 32, 32], store=["logvar"])
    return {**built, "tmp": tmp, "weights": weights, "files": built["files_index"].set_index("item_id")["path"]}


@pytest.fixture(scope="module")
def bodyct(tmp_path_factory) -> dict:
    """Synthetic body CT NIfTI files in three voxel orientations (LPS, LAS, ASL: the last permutes the axes)."""
    return _ct_dataset(tmp_path_factory, "demo_bodyct", {"n_patients": 3})


@pytest.fixture(scope="module")
def headct(tmp_path_factory) -> dict:
    """A synthetic head CT DICOM series (slices out of file order), as a 3D latent dataset."""
    return _ct_dataset(tmp_path_factory, "demo_headct", {"n_patients": 1})


def _nifti_source(path) -> tuple[np.ndarray, np.ndarray]:
    """Volume and affine of a NIfTI file as nibabel reads them."""
    image = nib.load(path)
    return np.asarray(image.get_fdata(), dtype=np.float32), image.affine


def _dicom_series_source(directory) -> tuple[np.ndarray, np.ndarray]:
    """HU volume (column, row, slice) and RAS affine of a DICOM series from pydicom's attributes.

    Voxel (i, j, k) sits at ImagePositionPatient of slice k + i * column spacing * row cosine
    + j * row spacing * column cosine (DICOM PS3.3 C.7.6.2.1.1), in LPS: x and y flip for RAS.
    """
    slices = [pydicom.dcmread(path) for path in sorted(directory.iterdir())]
    orientation = np.asarray(slices[0].ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    slices.sort(key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=np.float64), normal)))
    first, last = (np.asarray(ds.ImagePositionPatient, dtype=np.float64) for ds in (slices[0], slices[-1]))
    row_spacing, column_spacing = (float(v) for v in slices[0].PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = orientation[:3] * column_spacing, orientation[3:] * row_spacing
    lps[:3, 2], lps[:3, 3] = (last - first) / (len(slices) - 1), first
    volume = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices], -1)
    return volume.transpose(1, 0, 2).astype(np.float32), np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


CT_SOURCES = {"bodyct": _nifti_source, "headct": _dicom_series_source}


@pytest.mark.parametrize("fixture", sorted(CT_SOURCES))
def test_3d_decode_lands_on_each_source_files_own_grid_and_affine(fixture, request):
    built = request.getfixturevalue(fixture)
    out = built["tmp"] / "decoded"
    assert (
        cli.main(
            ["decode", str(built["dataset"]), "--out", str(out), "--weights", str(built["weights"]), "--device", "cpu"]
        )
        == 0
    )
    metas = {
        meta["item_id"]: meta
        for split in ("train", "val", "test")
        if built["index"]["splits"][split]
        for _, _, meta in load_latents(built["dataset"], split=split)
    }
    orientations = set()
    for item, meta in metas.items():
        split = meta["split"]
        source, affine = CT_SOURCES[fixture](built["raw"] / built["files"][item])
        decoded = nib.load(out / split / f"{item}.nii.gz")
        assert decoded.shape == source.shape == tuple(meta["original_shape"])
        np.testing.assert_allclose(decoded.affine, affine, atol=1e-5)
        np.testing.assert_allclose(meta["original_affine"], affine, atol=1e-5)
        assert decoded.header["qform_code"] == decoded.header["sform_code"] == 1
        orientations.add(nib.aff2axcodes(affine))
    assert len(metas) == built["index"]["num_samples"] > 0 and ("R", "A", "S") not in orientations
    assert len(orientations) == (3 if fixture == "bodyct" else 1)


@pytest.mark.parametrize("fixture", sorted(CT_SOURCES))
def test_resampling_the_normalized_input_back_reproduces_the_source_volume(fixture, request):
    """The geometry decode uses, applied to the normalized input itself: it lines up with the source
    volume (windowed as normalization did) better than with the grid flipped or moved half a voxel."""
    from medlatent.normalize.run import resample_3d

    built = request.getfixturevalue(fixture)
    for item, (image, attrs) in _normalized_items(built).items():
        source, _ = CT_SOURCES[fixture](built["raw"] / built["files"][item])
        (low, high), (out_low, out_high) = (attrs["transform"]["intensity"][key] for key in ("window", "output_range"))
        expected = np.clip((source - low) / (high - low), 0, 1) * (out_high - out_low) + out_low
        interior = (slice(2, -2),) * 3  # the 2 mm grid's border voxels blend with the background

        def error(affine):
            back = resample_3d(image, np.asarray(attrs["affine"]), affine, attrs["original_shape"], "bilinear", out_low)
            assert back.shape == source.shape
            return float(np.abs(back - expected)[interior].mean()), back

        affine = np.asarray(attrs["original_affine"])
        best, back = error(affine)
        assert np.corrcoef(back[interior].ravel(), expected[interior].ravel())[0, 1] > 0.95 and best < 0.1
        for axis in range(3):
            flip = np.array([[a, -1.0 if a == axis else 1.0] for a in range(3)])
            assert best < error(affine @ nib.orientations.inv_ornt_aff(flip, source.shape))[0]
            for half in (-0.5, 0.5):
                moved = affine.copy()
                moved[:3, 3] += affine[:3, axis] * half
                assert best < error(moved)[0]


def test_3d_decode_on_the_normalized_grid_is_the_models_decode_with_the_normalized_affine(bodyct):
    written = decode_dataset(
        bodyct["dataset"], bodyct["tmp"] / "normalized_grid", grid="normalized", weights=bodyct["weights"]
    )
    model = load_model(bodyct["weights"])
    normalized = _normalized_items(bodyct)
    stored = {
        meta["item_id"]: latent
        for split in ("train", "val", "test")
        if bodyct["index"]["splits"][split]
        for latent, _, meta in load_latents(bodyct["dataset"], split=split)
    }
    assert len(written) == bodyct["index"]["num_samples"] == len(normalized) == len(stored) > 0
    for path in written:
        item = path.name.removesuffix(".nii.gz")
        image, attrs = normalized[item]
        decoded = nib.load(path)
        assert decoded.shape == image.shape == (32, 32, 32)
        np.testing.assert_allclose(decoded.affine, np.asarray(attrs["affine"]), atol=1e-5)
        assert nib.aff2axcodes(decoded.affine) == ("R", "A", "S")
        with torch.inference_mode():  # one window covers the volume: exactly the model's decode of the stored mean
            oracle = model.autoencoder.decode(stored[item][None])[0, 0].numpy()
        np.testing.assert_allclose(np.asarray(decoded.dataobj), oracle, atol=1e-5)


def test_3d_logvar_is_stored_beside_the_mean_and_is_the_encoders(bodyct):
    model = load_model(bodyct["weights"])
    normalized = _normalized_items(bodyct)
    for latent, _, meta, posterior in load_latents(bodyct["dataset"], split="train", posterior=("logvar",)):
        with torch.inference_mode():
            expected = model.autoencoder.encode(torch.from_numpy(normalized[meta["item_id"]][0])[None, None])
        torch.testing.assert_close(latent, expected.mean[0], rtol=2**-9, atol=1e-3)
        torch.testing.assert_close(posterior["logvar"], expected.logvar[0], rtol=2**-9, atol=1e-3)
    assert bodyct["index"]["latent"]["stored"] == ["latent", "logvar"]
    with pytest.raises(InputError, match=r"latents\.store"):
        load_latents(bodyct["dataset"], split="train", posterior=("mean",))


def test_3d_latent_larger_than_the_window_is_decoded_window_by_window(bodyct, tmp_path, monkeypatch):
    from medlatent.models.projection import MedVAE

    index = json.loads((bodyct["dataset"] / "index.json").read_text())
    index["encoding"] = {**index["encoding"], "window": [24, 24, 24], "overlap": 0.5}  # latent window 12^3 of 16^3
    split = min((s for s, n in index["splits"].items() if n), key=index["splits"].get)
    shard = next(shard for shard in index["shards"] if shard["split"] == split)
    index["shards"] = [shard]  # its first sample only: one item shows the windowing
    dataset = tmp_path / "windowed"
    dataset.mkdir()
    (dataset / "index.json").write_text(json.dumps(index))
    with tarfile.open(bodyct["dataset"] / shard["file"]) as source, tarfile.open(dataset / shard["file"], "w") as tar:
        members = source.getmembers()
        item = members[0].name.split(".")[0]
        for member in members:
            if member.name.split(".")[0] == item:
                tar.addfile(member, source.extractfile(member))
    shutil.copy(bodyct["dataset"] / shard["sidecar"], dataset)  # entries beyond the tar's are never looked up
    seen = []
    real = MedVAE.decode

    def recording(self, z):
        seen.append(tuple(z.shape[2:]))
        return real(self, z)

    monkeypatch.setattr(MedVAE, "decode", recording)
    written = decode_dataset(dataset, tmp_path / "out", split=split, grid="normalized", weights=bodyct["weights"])
    assert written == [tmp_path / "out" / split / f"{item}.nii.gz"] and nib.load(written[0]).shape == (32, 32, 32)
    assert set(seen) == {(12, 12, 12)} and len(seen) == 8  # stride 6: 2 windows per axis
    from monai.inferers import sliding_window_inference

    model = load_model(bodyct["weights"])
    latent = next(latent for latent, _, meta in load_latents(bodyct["dataset"], split=split) if meta["item_id"] == item)
    with torch.inference_mode():  # how the public MedVAE code decodes 3D latents (MVAE.decode)
        oracle = sliding_window_inference(
            latent[None], [12, 12, 12], 1, model.autoencoder.decode, overlap=0.5, mode="gaussian"
        )[0, 0]
    np.testing.assert_allclose(np.asarray(nib.load(written[0]).dataobj), oracle.numpy(), atol=1e-5)
