"""Real DICOM archives: every transfer syntax, colour, multi-frame, through curation and normalization.

The files are pydicom's and pydicom-data's test files (both pinned), written by other tools
(dcmtk, GDCM, vendors). Oracles: the same image stored uncompressed beside its compressed
twin, dcmtk's own decompression of a JPEG (`*_dcmd.dcm`), and the raw header values.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from dicom_fixtures import XRAY_NORMALIZE, real_file, run_source, source_spec
from PIL import Image
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from medlatent import io
from medlatent.core.errors import InputError


def grey(name: str, **kwargs) -> np.ndarray:
    return io.read_image(real_file(name), **kwargs).array


# ---- one real file per transfer syntax, against its uncompressed twin or dcmtk's decoding

TWINS = {
    # transfer syntax: (encoded file, reference stored or decoded by another tool)
    JPEGBaseline8Bit: ("SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_dcmtk_ebcynp_dcmd.dcm"),  # YBR_FULL_422, dcmtk-decoded
    JPEGLosslessSV1: ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm"),
    JPEGLSLossless: ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
    JPEG2000Lossless: ("693_J2KR.dcm", "693_UNCR.dcm"),
    JPEG2000: ("693_J2KI.dcm", "693_UNCI.dcm"),  # UNCI: the lossy image, stored uncompressed
    RLELossless: ("MR_small_RLE.dcm", "MR_small.dcm"),
    ExplicitVRBigEndian: ("MR_small_bigendian.dcm", "MR_small.dcm"),
}


@pytest.mark.parametrize("syntax", list(TWINS), ids=[s.name for s in TWINS])
def test_each_transfer_syntax_decodes_like_its_twin(syntax):
    encoded, reference = TWINS[syntax]
    assert io.read_header(real_file(encoded)).transfer_syntax == syntax
    np.testing.assert_array_equal(grey(encoded), grey(reference))


def test_htj2k_syntax_reaches_the_openjpeg_decoder(tmp_path):
    """No HT-coded file ships offline (pydicom's HTJ2K test files are download-only): the
    J2K codestream of a real file, filed under HTJ2K Lossless, must reach a decoder that reads
    it (openjpeg decodes Part 1 and Part 15 code-blocks alike) and equal its twin."""
    ds = pydicom.dcmread(real_file("MR_small_jp2klossless.dcm"))
    ds.file_meta.TransferSyntaxUID = HTJ2KLossless
    ds.save_as(tmp_path / "htj2k.dcm")
    assert io.read_header(tmp_path / "htj2k.dcm").transfer_syntax == HTJ2KLossless
    np.testing.assert_array_equal(io.read_image(tmp_path / "htj2k.dcm").array, grey("MR_small.dcm"))


def test_jpeg_ls_near_lossless_stays_within_its_bound():
    path = real_file("SC_rgb_jls_lossy_line.dcm")
    assert io.read_header(path).transfer_syntax == JPEGLSNearLossless
    near = pydicom.dcmread(path).pixel_array.astype(int) - pydicom.dcmread(real_file("SC_rgb.dcm")).pixel_array
    assert 0 < np.abs(near).max() <= 2  # lossy, as the syntax says, within NEAR
    difference = np.abs(grey("SC_rgb_jls_lossy_line.dcm") - grey("SC_rgb.dcm"))
    assert 0 < difference.max() <= 2
    for name in ("JPEGLSNearLossless_08.dcm", "JPEGLSNearLossless_16.dcm"):  # 8 and 16 bit grey
        assert io.read_image(real_file(name)).array.shape == io.read_header(real_file(name)).shape


def test_jpeg_lossless_8_bit_and_16_bit_grey():
    for name, bits in (("JPGLosslessP14SV1_1s_1f_8b.dcm", 8), ("JPEG-LL.dcm", 16)):
        header = io.read_header(real_file(name))
        assert (header.transfer_syntax, header.photometric) == (JPEGLosslessSV1, "MONOCHROME2")
        image = grey(name)
        assert image.shape == header.shape and 0 <= image.min() < image.max() < 2**bits


def gdcm_transcode(source: Path, target: Path, syntax: str) -> Path:
    """GDCM's own encoder (not ours) writes `source` in transfer syntax `syntax`."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(syntax)))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(target))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    return target


@pytest.mark.parametrize("syntax", [JPEGLossless, JPEGLosslessSV1], ids=["process14", "process14_sv1"])
def test_jpeg_lossless_written_by_gdcm_decodes_to_its_source(tmp_path, syntax):
    path = gdcm_transcode(real_file("MR_small.dcm"), tmp_path / "mr.dcm", syntax)
    assert io.read_header(path).transfer_syntax == syntax
    np.testing.assert_array_equal(io.read_image(path).array, grey("MR_small.dcm"))


def test_8_bit_jpeg_extended_written_by_gdcm_is_close_to_its_source(tmp_path):
    source = "JPGLosslessP14SV1_1s_1f_8b.dcm"  # 8-bit ultrasound
    path = gdcm_transcode(real_file(source), tmp_path / "us.dcm", "1.2.840.10008.1.2.4.51")
    assert io.read_header(path).transfer_syntax == "1.2.840.10008.1.2.4.51"
    error = io.read_image(path).array - grey(source)
    assert 0 < np.abs(error).mean() < 2 and np.abs(error).max() < 64  # lossy, but the same image


def test_deflated_dataset_is_read_and_its_truncation_refused(tmp_path):
    path = real_file("image_dfl.dcm")
    assert io.read_header(path).transfer_syntax == DeflatedExplicitVRLittleEndian
    np.testing.assert_array_equal(grey("image_dfl.dcm"), pydicom.dcmread(path).pixel_array)
    cut = tmp_path / "cut_dfl.dcm"
    cut.write_bytes(path.read_bytes()[:-1500])
    with pytest.raises(InputError, match=r"not a readable DICOM file \(zlib.error\)"):
        io.read_header(cut)


def test_jpeg_extended_12_bit_needs_the_optional_gpl_plugin():
    path = real_file("JPGExtended.dcm")
    assert io.read_header(path).transfer_syntax == JPEGExtended12Bit
    try:
        import libjpeg  # noqa: F401  (pylibjpeg-libjpeg, the optional extra)
    except ImportError:
        with pytest.raises(InputError) as caught:
            io.read_image(path)
        assert "12-bit" in caught.value.reason and "medlatent[jpeg12]" in caught.value.fix
    else:
        assert io.read_image(path).array.shape == (1024, 256)


def test_truncated_encapsulated_pixel_data_is_refused(tmp_path):
    with pytest.raises(InputError, match="truncated DICOM"):
        io.read_header(real_file("emri_small_jpeg_2k_lossless_too_short.dcm"))
    cut = tmp_path / "cut_rle.dcm"
    cut.write_bytes(real_file("MR_small_RLE.dcm").read_bytes()[:-2000])
    with pytest.raises(InputError, match="truncated DICOM: the file ends inside the encapsulated pixel data"):
        io.read_header(cut)


# ---- colour: one rule, the mean of RGB, with YBR converted and palettes applied first


@pytest.mark.parametrize(
    ("colour", "rgb"),
    [
        ("SC_ybr_full_uncompressed.dcm", "SC_rgb.dcm"),
        ("SC_ybr_full_422_uncompressed.dcm", "SC_rgb.dcm"),
        ("SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC_rgb_dcmtk_ebcyn1_dcmd.dcm"),  # YBR_FULL JPEG, dcmtk-decoded
        ("US1_J2KR.dcm", "US1_UNCR.dcm"),  # YBR_RCT JPEG 2000
    ],
)
def test_ybr_becomes_the_mean_of_its_rgb(colour, rgb):
    reference = pydicom.dcmread(real_file(rgb))
    assert reference.PhotometricInterpretation == "RGB"
    expected = reference.pixel_array.mean(axis=-1)
    image = io.read_image(real_file(colour))
    assert io.read_header(real_file(colour)).photometric.startswith("YBR")
    assert image.meta["colour_rule"] == "mean_rgb"
    tolerance = 3 if "uncompressed" in colour else 0  # YBR -> RGB rounding of an 8-bit round trip
    np.testing.assert_allclose(image.array, expected, atol=tolerance + 1e-4)
    assert np.abs(image.array - expected).mean() < 0.5


def test_palette_colour_is_looked_up_then_averaged():
    path = real_file("OBXXXX1A.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    lut = np.stack(
        [np.frombuffer(ds[f"{c}PaletteColorLookupTableData"].value, "<u2") for c in ("Red", "Green", "Blue")], axis=-1
    )
    first_mapped = ds.RedPaletteColorLookupTableDescriptor[1]
    expected = lut[np.clip(ds.pixel_array.astype(int) - first_mapped, 0, len(lut) - 1)].mean(
        axis=-1
    )  # PS3.3 C.7.6.3.1.5
    np.testing.assert_allclose(grey("OBXXXX1A.dcm"), expected, rtol=1e-6)
    np.testing.assert_array_equal(grey("OBXXXX1A_rle.dcm"), grey("OBXXXX1A.dcm"))


# ---- a local-style source through curation and normalization


def copy_files(names: list[str], root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(real_file(name), root / name)
    return root


LOSSLESS_TWIN_GROUPS = [
    [
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
    ],
    ["693_UNCR.dcm", "693_J2KR.dcm"],
    ["MR2_UNCR.dcm", "MR2_J2KR.dcm"],
    ["SC_rgb.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_gdcm_KY.dcm", "SC_rgb_expb.dcm"],
]


def test_lossless_twins_normalize_to_identical_arrays(tmp_path):
    root = copy_files([name for group in LOSSLESS_TWIN_GROUPS for name in group], tmp_path / "raw")
    result = run_source(root, tmp_path / "out", source_spec("twins", 2), XRAY_NORMALIZE)
    report = result["report"]
    assert report["found"] == report["kept"] + report["rejected"] == sum(map(len, LOSSLESS_TWIN_GROUPS))
    assert report["rejected"] == 0 and result["counts"] == {"items": report["found"], "failed": 0}
    item_of = dict(zip(result["files"]["path"], result["files"]["item_id"]))
    for group in LOSSLESS_TWIN_GROUPS:
        first, first_meta = result["arrays"][item_of[group[0]]]
        assert first.shape == (64, 64) and first.min() == -1.0 and first.max() > 0
        for twin in group[1:]:
            array, meta = result["arrays"][item_of[twin]]
            np.testing.assert_array_equal(array, first, err_msg=f"{twin} differs from {group[0]}")
            assert meta["transform"] == first_meta["transform"]
    colour = result["manifest"].set_index("item_id")["colour_rule"]
    assert colour[item_of["SC_rgb.dcm"]] == "mean_rgb" and pd.isna(colour[item_of["MR_small.dcm"]])
    assert result["arrays"][item_of["SC_rgb_rle.dcm"]][1]["colour_rule"] == "mean_rgb"


def test_colour_can_be_rejected_per_source(tmp_path):
    root = copy_files(["SC_rgb.dcm", "OBXXXX1A.dcm", "SC_ybr_full_uncompressed.dcm", "MR_small.dcm"], tmp_path / "raw")
    rgb = pydicom.dcmread(root / "SC_rgb.dcm").pixel_array
    Image.fromarray(rgb).save(root / "colour.png")
    Image.fromarray(rgb[..., 0]).convert("LA").save(root / "grey_alpha.png")  # grey with alpha: not colour
    result = run_source(root, tmp_path / "out", source_spec("grey_only", 2, colour="reject"))
    assert (result["report"]["kept"], result["report"]["rejected_by_category"]) == (2, {"filtered_colour": 4})
    assert set(result["rejected"]["reason"]) == {
        f"colour image ({p}) and curation.colour is reject" for p in ("RGB", "PALETTE COLOR", "YBR_FULL")
    }
    png = io.read_image(root / "colour.png")
    assert png.meta["colour_rule"] == "mean_rgb"
    np.testing.assert_allclose(png.array, grey("SC_rgb.dcm"), atol=1e-4)  # one rule for PNG and DICOM


# ---- multi-frame


def test_enhanced_ct_is_one_volume_with_the_geometry_of_its_functional_groups(tmp_path):
    root = copy_files(["eCT_Supplemental.dcm"], tmp_path / "raw" / "study")
    shutil.copy(real_file("CT_small.dcm"), root / "CT_small.dcm")  # a one-slice series beside it
    result = run_source(tmp_path / "raw", tmp_path / "out", source_spec("enhanced", 3))
    kept = result["manifest"].set_index("file_key")
    files = result["files"].set_index("path")
    assert result["report"]["found"] == 2 and result["report"]["kept"] == 2
    assert list(kept.loc[files.at["study/eCT_Supplemental.dcm", "file_key"], "shape"]) == [512, 512, 2]

    ds = pydicom.dcmread(real_file("eCT_Supplemental.dcm"))
    shared = ds.SharedFunctionalGroupsSequence[0]
    row_cosine, column_cosine = np.reshape(
        np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float), (2, 3)
    )
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    positions = np.array(
        [f.PlanePositionSequence[0].ImagePositionPatient for f in ds.PerFrameFunctionalGroupsSequence], float
    )
    assert positions[0, 2] < positions[1, 2]  # the file stores the frames inferior first
    normal = np.cross(row_cosine, column_cosine)  # here (0, 0, -1): slices run superior to inferior
    first = int(np.argmin(positions @ normal))
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = row_cosine * column_spacing, column_cosine * row_spacing
    lps[:3, 2], lps[:3, 3] = positions[1 - first] - positions[first], positions[first]
    image = io.read_image(root / "eCT_Supplemental.dcm")
    np.testing.assert_allclose(image.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, atol=1e-6)
    assert image.spacing == pytest.approx((column_spacing, row_spacing, 10.0))
    transform = shared.PixelValueTransformationSequence[0]
    hu = ds.pixel_array * float(transform.RescaleSlope) + float(transform.RescaleIntercept)
    np.testing.assert_array_equal(image.array[..., 0], hu[first].T)
    np.testing.assert_array_equal(image.array[..., 1], hu[1 - first].T)


def test_multi_frame_without_plane_geometry_is_no_volume(tmp_path):
    root = copy_files(["emri_small.dcm"], tmp_path / "raw")
    result = run_source(root, tmp_path / "out", source_spec("mr", 3))
    assert result["report"]["rejected_by_category"] == {"undecodable": 1}
    assert "without ImageOrientationPatient" in result["rejected"]["reason"].iloc[0]


def test_multi_frame_in_a_2d_source_is_rejected_unless_frames_each(tmp_path):
    root = copy_files(["emri_small_RLE.dcm", "SC_rgb_2frame.dcm", "MR_small.dcm"], tmp_path / "raw")
    rejected = run_source(root, tmp_path / "reject", source_spec("frames", 2))
    assert rejected["report"]["rejected_by_category"] == {"multi_frame": 2}
    assert "multi-frame DICOM (10 frames) in a 2D source; curation.frames: each keeps every frame as an item" in set(
        rejected["rejected"]["reason"]
    )

    each = run_source(root, tmp_path / "each", source_spec("frames", 2, frames="each"), XRAY_NORMALIZE)
    report = each["report"]
    assert (report["found"], report["kept"], report["frames_as_items"], report["files"]) == (13, 13, 12, 3)
    assert each["counts"] == {"items": 13, "failed": 0}
    files = each["files"].dropna(subset=["frame"]).set_index("item_id")
    stored = pydicom.dcmread(real_file("emri_small_RLE.dcm")).pixel_array
    for item_id, row in files[files["path"] == "emri_small_RLE.dcm"].iterrows():
        array, meta = each["arrays"][item_id]
        assert meta["frame"] == row["frame"] and meta["original_shape"] == [64, 64]
        frame = stored[row["frame"]].astype(np.float64)
        expected = (frame - frame.min()) / (frame.max() - frame.min()) * 2 - 1  # minmax to [-1, 1], 64x64 already
        np.testing.assert_allclose(array, expected, atol=1e-5)
    assert len(set(each["manifest"]["item_id"])) == 13
