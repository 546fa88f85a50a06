"""The decode budget: declared sizes (headers, codestreams, deflated data) are checked before decoding."""

from __future__ import annotations

from io import BytesIO

import nibabel as nib
import numpy as np
import pydicom
import pytest
from bench_hostile import J2K_SIZ, deflated_dicom, gzip_nifti, with_codestream_size
from dicom_fixtures import real_file

from medlatent import io
from medlatent.io import codestream
from medlatent.io.budget import KNOB, DecodeBudget, TooLargeError

MIB = 2**20


@pytest.mark.parametrize(
    "name",
    ["MR_small_jp2klossless.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPEG-LL.dcm"],
)
def test_codestream_sizes_match_the_dicom_header(name):
    """SIZ (JPEG 2000), SOF (JPEG baseline, lossless) and SOF55 (JPEG-LS) against pydicom's Rows/Columns."""
    ds = pydicom.dcmread(real_file(name))
    fragments = pydicom.encaps.generate_fragments(ds.PixelData[8 + int.from_bytes(ds.PixelData[4:8], "little") :])
    width, height, components = codestream.declared_size(BytesIO(next(fragments)))
    assert (height, width, components) == (ds.Rows, ds.Columns, ds.SamplesPerPixel)


def test_a_codestream_declaring_more_than_its_header_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "j2k.dcm"
    bomb.write_bytes(with_codestream_size("MR_small_jp2klossless.dcm", J2K_SIZ, 8, (40000, 40000)))
    with pytest.raises(TooLargeError, match=f"a codestream of 40000 x 40000.*{KNOB}"):
        io.read_header(bomb, DecodeBudget.for_process(4000))
    small = tmp_path / "j2k_wider.dcm"  # within the budget, but not the image the header describes
    small.write_bytes(with_codestream_size("MR_small_jp2klossless.dcm", J2K_SIZ, 8, (128, 64)))
    with pytest.raises(io.InputError, match="declares 128 x 64 pixels but the header 64 x 64"):
        io.read_header(small)


def test_a_deflated_dataset_is_measured_streamed_before_pydicom_inflates_it(tmp_path, monkeypatch):
    bomb = tmp_path / "deflated.dcm"
    bomb.write_bytes(deflated_dicom(9000, 9000))  # 81 MB inflated, 80 KB on disk
    assert bomb.stat().st_size < 2**20
    monkeypatch.setattr(pydicom, "dcmread", lambda *args, **kwargs: pytest.fail("pydicom inflated the bomb"))
    with pytest.raises(TooLargeError, match="deflated dataset inflating to more than"):
        io.read_header(bomb, DecodeBudget.for_process(256))


def test_the_budget_boundary_is_exact_and_the_reason_names_the_knob(tmp_path):
    budget = DecodeBudget.for_process(4)  # 1 MiB of float32: 262144 samples
    at, over = tmp_path / "at.npy", tmp_path / "over.npy"
    np.save(at, np.zeros((512, 512), np.uint8))
    np.save(over, np.zeros((512, 513), np.uint8))
    assert io.read_header(at, budget).shape == (512, 512)
    with pytest.raises(TooLargeError) as caught:
        io.read_image(over, budget=budget)
    assert "262,656 samples" in caught.value.reason and KNOB in caught.value.reason and KNOB in caught.value.fix


def test_a_gzip_nifti_is_refused_on_its_header_without_inflating(tmp_path, monkeypatch):
    monkeypatch.setattr(nib.Nifti1Image, "get_fdata", lambda *args, **kwargs: pytest.fail("voxels were read"))
    bomb = tmp_path / "zeros.nii.gz"
    bomb.write_bytes(gzip_nifti((400, 400, 400)))  # 64 MB of voxels in 63 KB
    with pytest.raises(TooLargeError, match=r"NIfTI volume of shape \(400, 400, 400\)"):
        io.read_image(bomb, budget=DecodeBudget.for_process(256))
