"""Readers on real files: the DICOM display pipeline, CT series geometry, NIfTI, NPY, PNG/JPEG, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from medlatent import io
from medlatent.core.errors import InputError
from medlatent.demo.ct import write_ct_series
from medlatent.demo.dicom import write_dicom
from medlatent.demo.registry import generate, phi_strings
from medlatent.io.types import META_FIELDS

TOP_12BIT = 4095


def xray_attrs(name: str, **extra) -> dict:
    return {
        "SOPClassUID": DigitalXRayImageStorageForPresentation,
        "SOPInstanceUID": generate_uid(entropy_srcs=[name]),
        "Modality": "DX",
        "PatientID": "PID-TEST-1",
        "BitsStored": 12,
        "PixelRepresentation": 0,
        **extra,
    }


@pytest.fixture(scope="module")
def stored() -> np.ndarray:
    """12-bit image: a smooth ramp with noise and a bright square (the 'dense' structure)."""
    rng = np.random.default_rng(0)
    image = np.add.outer(np.arange(40) * 40.0, np.arange(32) * 25.0) + 400 + rng.integers(0, 50, (40, 32))
    image[10:20, 8:16] += 1200
    return np.clip(image, 0, TOP_12BIT).astype(np.uint16)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("io")
    specs = {
        "cxr": {"generator": "cxr_dicom", "n_patients": 6, "images_per_patient": 3},
        "mammo": {"generator": "mammo_dicom", "n_patients": 4},
        "headct": {"generator": "ct_dicom_series", "n_patients": 3, "size": [32, 32, 8]},
        "bodyct": {"generator": "nifti_volume", "modality": "ct", "n_patients": 4, "size": [24, 24, 12]},
        "knee": {"generator": "mrnet_npy", "n_patients": 2, "size": [8, 24, 24]},
        "wrist": {"generator": "xray_png", "n_patients": 12, "images_per_patient": 2, "size": [48, 32]},
    }
    for name, spec in specs.items():
        generate(spec, root / name, seed=3)
    return {name: root / name for name in specs}


def _files(root: Path) -> list[Path]:
    return [root / f for f in pd.read_csv(root / "labels.csv", dtype=str)["file"]]


# ---- DICOM 2D: decoding and the display pipeline


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless], ids=["native", "rle", "j2k"]
)
def test_compressed_dicom_decodes_to_the_stored_pixels(tmp_path, stored, syntax):
    path = tmp_path / "image.dcm"
    write_dicom(path, stored, xray_attrs("compressed"), transfer_syntax=syntax)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    header = io.read_header(path)
    assert (header.kind, header.dims, header.shape, header.transfer_syntax) == ("dicom", 2, (40, 32), syntax)
    image = io.read_image(path)
    assert image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array, stored)  # no rescale, no VOI: the stored values


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless], ids=["native", "rle", "j2k"]
)
@pytest.mark.parametrize("voi", ["window", "lut", "none"])
def test_monochrome1_twin_displays_like_monochrome2(tmp_path, stored, syntax, voi):
    window = (2000.0, 3000.0) if voi == "window" else None
    lut = (300, np.round(np.linspace(0, 65535, 3001) ** 1.2 / 65535**0.2).astype(np.uint16)) if voi == "lut" else None
    decoded = {}
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        path = tmp_path / f"{photometric}.dcm"
        write_dicom(
            path,
            stored,
            xray_attrs(photometric),
            photometric=photometric,
            transfer_syntax=syntax,
            window=window,
            voi_lut=lut,
        )
        decoded[photometric] = (pydicom.dcmread(path).pixel_array, io.read_image(path).array)
    (raw2, image2), (raw1, image1) = decoded["MONOCHROME2"], decoded["MONOCHROME1"]
    np.testing.assert_array_equal(raw1, TOP_12BIT - raw2.astype(int))  # the file really is inverted
    np.testing.assert_allclose(image1, image2, atol=1.0)
    assert image1[10:20, 8:16].mean() > image1.mean() and raw1[10:20, 8:16].mean() < raw1.mean(), "dense stays bright"


def test_window_maps_below_and_above_to_the_output_range(tmp_path):
    values = np.array([[0, 1000, 2048, 3000, TOP_12BIT]], dtype=np.uint16)
    path = tmp_path / "window.dcm"
    write_dicom(path, values, xray_attrs("window"), window=(2048.0, 1024.0))
    out = io.read_image(path).array[0]
    assert out[0] == out[1] == 0 and out[3] == out[4] == TOP_12BIT
    assert abs(out[2] - TOP_12BIT / 2) < 5


def test_voi_lut_table_is_applied(tmp_path):
    table = np.arange(0, 2001, dtype=np.uint16) * 30
    values = np.array([[100, 1000, 1500, 3000]], dtype=np.uint16)
    path = tmp_path / "lut.dcm"
    write_dicom(path, values, xray_attrs("lut"), voi_lut=(1000, table))
    np.testing.assert_array_equal(io.read_image(path).array[0], [0, 0, 500 * 30, 2000 * 30])


def test_rescale_is_applied_to_2d_images(tmp_path, stored):
    path = tmp_path / "rescaled.dcm"
    write_dicom(path, stored, xray_attrs("rescaled", RescaleSlope="2", RescaleIntercept="-100"))
    np.testing.assert_array_equal(io.read_image(path).array, stored * 2.0 - 100)


def test_generated_radiographs_are_bright_where_dense_whatever_the_photometric(sources):
    photometrics = set()
    for path in _files(sources["cxr"]):
        header = io.read_header(path)
        if header.view_position == "LATERAL":
            continue
        photometrics.add(header.photometric)
        image = io.read_image(path).array
        width = image.shape[1]
        spine = image[:, width // 2 - 2 : width // 2 + 2].mean()
        lungs = image[: image.shape[0] // 2, [width // 5, 4 * width // 5]].mean()
        assert spine > lungs, path
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}


def test_mammo_header_fields_for_curation(sources):
    headers = [io.read_header(p) for p in _files(sources["mammo"])]
    assert {h.laterality for h in headers} == {"L", "R"} and {h.view_position for h in headers} == {"CC", "MLO"}
    assert {h.modality for h in headers} == {"MG"} and {h.bits_stored for h in headers} == {14}
    assert {h.presentation_intent for h in headers} <= {"FOR PRESENTATION", "FOR PROCESSING"}
    assert all(h.patient_id.startswith("PID3M") for h in headers)


def test_meta_is_allow_listed_json_and_free_of_phi(sources):
    phi = set().union(*(phi_strings(sources[name]) for name in ("cxr", "mammo", "headct")))
    assert phi
    items = _files(sources["cxr"]) + _files(sources["mammo"]) + _files(sources["headct"])
    for path in items:
        meta = io.read_image(path).meta
        assert set(meta) <= set(META_FIELDS) | {"original_shape", "original_orientation"}
        text = json.dumps(meta)
        assert not any(value in text for value in phi), (path, meta)


# ---- DICOM series (CT)


def _known_hu(slope: float) -> np.ndarray:
    rng = np.random.default_rng(1)
    hu = np.full((6, 12, 10), -1000.0)
    hu[:, 2:10, 2:8] = rng.integers(0, 80, (6, 8, 6)) + (0.5 if slope == 0.5 else 0.0)
    hu[2, 5, 3] = 1000.0  # a bone marker: slice 2, row 5, column 3
    return hu


@pytest.mark.parametrize("slope", [1.0, 0.5])
def test_ct_series_returns_hu_in_ras_whatever_the_file_order(tmp_path, slope):
    hu = _known_hu(slope)
    spacing = (3.0, 0.8, 0.7)  # slice, row, column (mm)
    attrs = {
        "PatientID": "PID-CT",
        "StudyInstanceUID": generate_uid(entropy_srcs=["s"]),
        "SeriesInstanceUID": generate_uid(entropy_srcs=["ct", str(slope)]),
    }
    loaded = []
    for name, order, ascending in (
        ("sorted", None, True),
        ("shuffled", np.array([4, 0, 5, 2, 1, 3]), True),
        ("reversed", np.array([3, 1, 5, 0, 2, 4]), False),
    ):
        write_ct_series(tmp_path / name, hu, spacing, attrs, slope=slope, ascending=ascending, order=order)
        loaded.append(io.read_image(tmp_path / name))
    header = io.read_header(tmp_path / "shuffled")
    assert (header.kind, header.dims, header.shape, header.spacing) == ("dicom_series", 3, (10, 12, 6), (0.7, 0.8, 3.0))
    sorted_, shuffled, reversed_ = loaded
    np.testing.assert_array_equal(sorted_.array, np.transpose(hu, (2, 1, 0)))  # (column, row, slice), exact HU
    np.testing.assert_array_equal(shuffled.array, sorted_.array)
    np.testing.assert_array_equal(
        reversed_.array, sorted_.array[:, :, ::-1]
    )  # slices stored top-down come back bottom-up
    expected = np.array(
        [[-0.7, 0, 0, 5 * 0.7], [0, -0.8, 0, 6 * 0.8], [0, 0, 3.0, 0], [0, 0, 0, 1]]
    )  # LPS -> RAS flips x and y
    for image in loaded:
        np.testing.assert_allclose(image.affine, expected, atol=1e-6)
        assert image.meta["original_orientation"] == "LPS" and image.spacing == (0.7, 0.8, 3.0)
    marker = np.argwhere(reversed_.array == 1000.0)[0]
    world = reversed_.affine @ np.array([*marker, 1.0])
    np.testing.assert_allclose(world[:3], [-(3 * 0.7 - 5 * 0.7), -(5 * 0.8 - 6 * 0.8), (6 - 1 - 2) * 3.0])


def test_generated_head_ct_is_in_hu_for_both_rescale_slopes(sources):
    slopes = set()
    for series in _files(sources["headct"]):
        slopes.add(float(pydicom.dcmread(next(series.glob("*.dcm")), stop_before_pixels=True).RescaleSlope))
        volume = io.read_image(series).array
        assert abs(np.percentile(volume, 1) + 1000) < 30, "air is -1000 HU"
        assert 900 < np.percentile(volume, 99.5) < 1200, "skull is about 1000 HU"
        assert 20 < np.median(volume[np.abs(volume) < 100]) < 50, "brain is soft tissue"
    assert slopes == {1.0, 0.5}


# ---- NIfTI, NPY, PNG/JPEG


def test_nifti_affine_is_kept_and_anatomy_lands_where_the_affine_says(sources):
    orientations = set()
    for path in _files(sources["bodyct"]):
        image = io.read_image(path)
        on_disk = nib.load(path)
        np.testing.assert_allclose(image.affine, on_disk.affine)
        assert image.array.shape == on_disk.shape and image.spacing == tuple(
            float(z) for z in on_disk.header.get_zooms()
        )
        orientations.add(image.meta["original_orientation"])
        spine = np.argwhere(image.array > 500).mean(axis=0)  # the only bone in the trunk
        assert (image.affine @ np.array([*spine, 1.0]))[1] < 0, "the spine is posterior in world space"
    assert len(orientations) > 1 and "RAS" not in orientations


def test_mrnet_npy_reads_as_a_unit_spaced_volume(sources):
    path = next((sources["knee"] / "train" / "sagittal").glob("*.npy"))
    header, image = io.read_header(path), io.read_image(path)
    raw = np.load(path)
    assert header.kind == "npy" and header.dims == 3 and header.shape == raw.shape
    np.testing.assert_array_equal(image.array, raw.astype(np.float32))
    np.testing.assert_array_equal(image.affine, np.eye(4))
    assert image.spacing == (1.0, 1.0, 1.0)


def test_png_and_jpeg_radiographs(tmp_path):
    values = (np.arange(48 * 32).reshape(48, 32) * 40).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(io.read_image(tmp_path / "deep.png").array, values)
    assert io.read_header(tmp_path / "deep.png").bits_stored == 16
    grey = (values // 256).astype(np.uint8)
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "colour.jpg", quality=95)
    colour = io.read_image(tmp_path / "colour.jpg").array
    assert colour.shape == (48, 32) and np.abs(colour - grey).mean() < 3
    Image.fromarray(grey).save(tmp_path / "named_wrong.jpg", format="PNG")  # content decides, not the name
    np.testing.assert_array_equal(io.read_image(tmp_path / "named_wrong.jpg").array, grey)


def test_generated_wrist_images_decode_in_every_encoding(sources):
    modes = set()
    for path in _files(sources["wrist"]):
        with Image.open(path) as image:
            modes.add(image.mode)
        assert io.read_image(path).array.shape == (48, 32)
    assert {"I;16", "RGB"} <= modes


def test_dicom_without_suffix_or_without_preamble_is_recognised(tmp_path, stored):
    write_dicom(tmp_path / "IM0001", stored, xray_attrs("bare"))
    assert io.detect_kind(tmp_path / "IM0001") == "dicom"
    ds = pydicom.dcmread(tmp_path / "IM0001")
    del ds.file_meta
    ds.preamble = None
    ds.save_as(tmp_path / "bare.dcm", implicit_vr=True, little_endian=True)  # no preamble, no file meta
    assert io.read_header(tmp_path / "bare.dcm").transfer_syntax == pydicom.uid.ImplicitVRLittleEndian
    np.testing.assert_array_equal(io.read_image(tmp_path / "bare.dcm").array, stored)


# ---- refusals: every unusable file raises InputError with a specific reason


def _refused(path: Path, reason: str) -> InputError:
    with pytest.raises(InputError, match=reason) as caught:
        io.read_header(path)
        io.read_image(path)
    assert str(path) in str(caught.value)
    return caught.value


def test_truncated_uncompressed_dicom(tmp_path, stored):
    path = tmp_path / "cut.dcm"
    write_dicom(path, stored, xray_attrs("cut"))
    path.write_bytes(path.read_bytes()[:-500])
    _refused(path, "truncated DICOM")


def test_pixel_data_shorter_than_the_header_says(tmp_path, stored):
    path = tmp_path / "short.dcm"
    write_dicom(path, stored, xray_attrs("short"))
    ds = pydicom.dcmread(path)
    ds.Rows = 80  # the pixel data holds 40 rows
    ds.save_as(path)
    _refused(path, r"pixel data shorter than expected \(2560 of 5120 bytes\)")


def test_missing_decoder_names_the_transfer_syntax_and_the_plugin(tmp_path, stored, monkeypatch):
    path = tmp_path / "jpegls.dcm"
    write_dicom(path, stored, xray_attrs("jpegls"))
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\xff\xd8 not really JPEG-LS \xff\xd9"])
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.save_as(path)
    assert io.read_header(path).transfer_syntax == JPEGLSLossless
    decoder = get_decoder(JPEGLSLossless)  # as installed without gdcm and pyjpegls
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pyjpegls": ("numpy", "pyjpegls")})
    error = _refused(path, "JPEG-LS Lossless")
    assert "no decoding plugin" in error.reason and "pyjpegls" in error.fix
    monkeypatch.undo()
    assert (
        "undecodable JPEG-LS Lossless" in _refused(path, "JPEG-LS Lossless").reason
    )  # plugin present: the data is bad


def test_corrupt_jpeg2000_data_is_undecodable(tmp_path, stored):
    path = tmp_path / "j2k.dcm"
    write_dicom(path, stored, xray_attrs("j2k"), transfer_syntax=JPEG2000Lossless)
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])
    ds.save_as(path)
    _refused(path, "undecodable JPEG 2000")


def test_text_files_are_not_images_whatever_their_name(tmp_path):
    for name in ("report.dcm", "scan.png", "volume.npy", "notes.txt"):
        (tmp_path / name).write_text("hello, this is text\n", encoding="utf-8")
        _refused(tmp_path / name, "not an image file")
    _refused(tmp_path / "missing.png", "no such file")


def test_corrupt_nifti_files(tmp_path):
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), affine), tmp_path / "four.nii.gz")
    _refused(tmp_path / "four.nii.gz", r"4D NIfTI of shape \(4, 4, 4, 3\)")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 1), np.float32), affine), tmp_path / "singleton.nii.gz")
    assert io.read_image(tmp_path / "singleton.nii.gz").array.shape == (4, 4, 4)
    volume = np.ones((4, 4, 4), np.float32)
    volume[0, 0, :2] = [np.nan, np.inf]
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "nan.nii.gz")
    _refused(tmp_path / "nan.nii.gz", "2 NaN/Inf values")
    data = (tmp_path / "singleton.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    _refused(tmp_path / "cut.nii.gz", "NIfTI")


def test_unusable_npy_arrays(tmp_path):
    np.save(tmp_path / "four.npy", np.zeros((2, 3, 4, 5), np.uint8))
    _refused(tmp_path / "four.npy", "unsupported dims")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _refused(tmp_path / "objects.npy", "not a readable .npy")


def test_unusable_series_directories(tmp_path, stored):
    (tmp_path / "empty").mkdir()
    _refused(tmp_path / "empty", "empty series")
    attrs = {"PatientID": "PID-CT", "StudyInstanceUID": generate_uid(entropy_srcs=["s"])}
    hu = np.zeros((3, 4, 4))
    for k, uid in enumerate(("1.2.3.1", "1.2.3.2")):
        write_ct_series(tmp_path / "mixed" / str(k), hu, (2.0, 1.0, 1.0), {**attrs, "SeriesInstanceUID": uid})
    for k, path in enumerate(sorted((tmp_path / "mixed").rglob("*.dcm"))):
        path.rename(tmp_path / "mixed" / f"slice{k}.dcm")
    _refused(tmp_path / "mixed", "mixes 2 DICOM series")
