"""A hostile archive of our own: what a hospital folder may hold, written deterministically.

`write_corpus(root, outside)` fills `root` with about 200 entries (real pydicom / nibabel /
Pillow files, mutated) and returns {relative path: class}. Classes: truncations at several
offsets, flipped header bytes, zero and absurd sizes, decompression bombs (deflated DICOM,
JPEG 2000 and JPEG codestreams, PNG, JPEG, gzip NIfTI: small on disk, huge declared), NaN and
inf rescale values, NumberOfFrames against the pixel data, sequences nested thousands deep,
a DICOMDIR, NIfTI with singular or zero affines, 5D, complex and RGB data, non-real arrays,
zero-byte files, symbolic links (out of the root, dangling, loops, to a folder), names that
are not UTF-8 or that a shell would misread, and valid images that must come through.

Bombs declare more than the decode budget of a process of `BOMB_BUDGET_MB` while their files
stay under 1 MB; they are written by the bomb writers of benchmarks/bench_hostile.py, which
measures the same kinds at the default budget. `PLANTED` strings sit in names and contents: no
rejection reason may repeat them.
"""

from __future__ import annotations

import gzip
import os
import struct
import warnings
from io import BytesIO
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from bench_hostile import (
    J2K_SIZ,
    JPEG_SOF0,
    deflated_dicom,
    gzip_nifti,
    jpeg_declaring,
    png_declaring,
    with_codestream_size,
)
from dicom_fixtures import real_file
from PIL import Image

#: A process of this many MB may decode 1/4 of it: every bomb declares more, on < 1 MB of disk.
BOMB_BUDGET_MB = 256
#: Identifying strings planted in folder names, file names and a text note.
PLANTED = ("DOE^JANE", "PID4711", "ACC0815")
PATIENT_FOLDER = "DOE^JANE_PID4711"
#: Every bomb file's class starts with this.
BOMB = "bomb"
#: Classes of valid entries: kept in a 2D source, in a 3D source, in both (the slices of a complete series).
VALID_2D, VALID_3D, VALID_BOTH = "valid 2D", "valid 3D", "valid series slice"


class Corpus:
    """Writes entries under `root` and remembers the class of each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.classes: dict[str, str] = {}
        self.rng = np.random.default_rng(21)

    def path(self, relative: str | bytes, what: str) -> Path:
        name = os.fsdecode(relative)
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        self.classes[name] = what
        return target

    def bytes(self, relative: str | bytes, data: bytes, what: str) -> None:
        self.path(relative, what).write_bytes(data)


# ---- DICOM


def _dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def _dataset_start(data: bytes) -> int:
    """Offset of the first dataset element: after the preamble, 'DICM' and the file meta group."""
    (meta_length,) = struct.unpack_from("<I", data, 132 + 8)
    return 132 + 12 + meta_length


def _nested_sequences(depth: int) -> bytes:
    """LanguageCodeSequence (0008,0006) items nested `depth` deep, undefined lengths (explicit VR LE)."""
    opening = b"\x08\x00\x06\x00SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    closing = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return opening * depth + closing * depth


def _slice(k: int) -> pydicom.Dataset:
    """Slice k of a 4-slice CT series built from pydicom's CT_small.dcm (1 mm apart)."""
    ds = pydicom.dcmread(real_file("CT_small.dcm"))
    ds.ImagePositionPatient = [0.0, 0.0, float(k)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = 1.0
    ds.InstanceNumber = k + 1
    return ds


def write_dicom(corpus: Corpus) -> None:
    native = real_file("MR_small.dcm").read_bytes()
    pixel_tell = pydicom.dcmread(real_file("MR_small.dcm")).get_item("PixelData").value_tell
    offsets = [0, 1, 64, 128, 131, 132, 140, 200, 400, 700, pixel_tell - 4, pixel_tell, pixel_tell + 1]
    offsets += [pixel_tell + 4096, len(native) - 2]
    for end in offsets:
        corpus.bytes(f"dicom/cut/MR_small_cut_{end:05d}.dcm", native[:end], "truncated DICOM")
    for k in range(16):
        flipped = bytearray(native)
        for position in corpus.rng.integers(132, pixel_tell, size=int(corpus.rng.integers(1, 9))):
            flipped[position] ^= int(corpus.rng.integers(1, 256))
        corpus.bytes(f"dicom/flip/MR_small_flip_{k:02d}.dcm", bytes(flipped), "flipped header bytes")
    for keyword, value in (
        ("Rows", 0),
        ("Columns", 0),
        ("Rows", 65535),
        ("Columns", 65535),
        ("NumberOfFrames", 0),
        ("NumberOfFrames", 100000),
        ("BitsAllocated", 64),
        ("BitsStored", 0),
        ("SamplesPerPixel", 0),
    ):
        ds = pydicom.dcmread(real_file("MR_small.dcm"))
        setattr(ds, keyword, value)
        corpus.bytes(f"dicom/size/MR_small_{keyword}_{value}.dcm", _dicom_bytes(ds), f"absurd {keyword}")
    for keyword, value in (("RescaleSlope", "nan"), ("RescaleSlope", "inf"), ("RescaleIntercept", "-inf")):
        ds = pydicom.dcmread(real_file("CT_small.dcm"))
        with warnings.catch_warnings():  # pydicom warns that these are no valid DS: the point
            warnings.simplefilter("ignore")
            ds[keyword].value = value
        corpus.bytes(f"dicom/rescale/CT_small_{keyword}_{value}.dcm", _dicom_bytes(ds), "non-finite rescale")
    ds = pydicom.dcmread(real_file("MR_small.dcm"))
    ds.NumberOfFrames = 1
    ds.PixelData = ds.PixelData * 3
    corpus.bytes("dicom/frames/one_declared_three_held.dcm", _dicom_bytes(ds), "NumberOfFrames mismatch")
    ds = pydicom.dcmread(real_file("MR_small.dcm"))
    ds.NumberOfFrames = 3
    corpus.bytes("dicom/frames/three_declared_one_held.dcm", _dicom_bytes(ds), "NumberOfFrames mismatch")
    start = _dataset_start(native)
    for depth in (200, 5000):
        deep = native[:start] + _nested_sequences(depth) + native[start:]
        corpus.bytes(f"dicom/deep/nested_{depth}.dcm", deep, "recursion-deep sequence")
    corpus.bytes("dicom/DICOMDIR", real_file("DICOMDIR").read_bytes(), "DICOMDIR")
    corpus.bytes("dicom/multiframe_j2k.dcm", real_file("emri_small_jpeg_2k_lossless.dcm").read_bytes(), "multi-frame")
    for name in ("MR_small.dcm", "CT_small.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        corpus.bytes(f"dicom/ok/{name}", real_file(name).read_bytes(), VALID_2D)
    write_dicom_bombs(corpus)
    write_series(corpus)


def write_dicom_bombs(corpus: Corpus) -> None:
    """One folder each: in a 3D source each is then a series of one slice, rejected for its own size."""
    # 9000^2 8-bit zeros inflate to 81 MB (over 64 MiB); 5000^2 inflate to 25 MB but decode to 100 MB
    corpus.bytes("dicom/bomb/deflate_inflates_over/image.dcm", deflated_dicom(9000, 9000), f"{BOMB}: deflate")
    corpus.bytes("dicom/bomb/deflate_decodes_over/image.dcm", deflated_dicom(5000, 5000), f"{BOMB}: deflate")
    j2k = with_codestream_size("MR_small_jp2klossless.dcm", J2K_SIZ, 8, (40000, 40000))
    corpus.bytes("dicom/bomb/j2k_siz_40k/image.dcm", j2k, f"{BOMB}: J2K codestream")
    jpeg = with_codestream_size("SC_rgb_jpeg_dcmtk.dcm", JPEG_SOF0, 5, (30000, 30000))
    corpus.bytes("dicom/bomb/jpeg_sof_30k/image.dcm", jpeg, f"{BOMB}: JPEG codestream")


def write_series(corpus: Corpus) -> None:
    for k in range(4):
        corpus.bytes(f"series/ok/slice_{k}.dcm", _dicom_bytes(_slice(k)), VALID_BOTH)
    corpus.bytes("series/ok/DICOMDIR", real_file("DICOMDIR").read_bytes(), "DICOMDIR")
    for k in range(3):
        corpus.bytes(f"series/with_bad_slices/slice_{k}.dcm", _dicom_bytes(_slice(k)), VALID_2D)
    good = _dicom_bytes(_slice(3))
    corpus.bytes("series/with_bad_slices/cut.dcm", good[: len(good) // 2], "truncated DICOM")
    deep = good[: _dataset_start(good)] + _nested_sequences(5000) + good[_dataset_start(good) :]
    corpus.bytes("series/with_bad_slices/deep.dcm", deep, "recursion-deep sequence")
    for k in range(3):
        ds = _slice(k)
        ds.ImageOrientationPatient = [0, 0, 0, 0, 0, 0]
        corpus.bytes(f"series/zero_orientation/slice_{k}.dcm", _dicom_bytes(ds), "zero orientation series")


# ---- NIfTI


def _nifti(data: np.ndarray, affine: np.ndarray | None = None) -> bytes:
    return nib.Nifti1Image(data, np.eye(4) if affine is None else affine).to_bytes()


def write_nifti(corpus: Corpus) -> None:
    volume = corpus.rng.normal(0, 300, (24, 20, 12)).astype(np.float32)
    valid = _nifti(volume, np.diag([0.8, 0.8, 2.0, 1.0]))
    corpus.bytes("nifti/ok/volume.nii", valid, VALID_3D)
    corpus.bytes("nifti/ok/volume.nii.gz", gzip.compress(valid, mtime=0), VALID_3D)
    corpus.bytes("nifti/ok/int16.nii", _nifti((volume).astype(np.int16)), VALID_3D)
    for end in (0, 100, 347, 348, 352, 2000, len(valid) - 1):
        corpus.bytes(f"nifti/cut/volume_cut_{end:05d}.nii", valid[:end], "truncated NIfTI")
    zipped = gzip.compress(valid, mtime=0)
    for end in (10, 200, len(zipped) // 2, len(zipped) - 4):
        corpus.bytes(f"nifti/cut/volume_cut_{end:05d}.nii.gz", zipped[:end], "truncated NIfTI")
    for k in range(10):
        flipped = bytearray(valid)
        for position in corpus.rng.integers(0, 348, size=int(corpus.rng.integers(1, 6))):
            flipped[position] ^= int(corpus.rng.integers(1, 256))
        corpus.bytes(f"nifti/flip/volume_flip_{k:02d}.nii", bytes(flipped), "flipped header bytes")
    small = volume[:8, :8, :4]
    affines = {
        "zero": np.zeros((4, 4)),
        "singular": np.array([[1, 0, 0, 0], [2, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float),
        "nan": np.diag([np.nan, 1, 1, 1]),
    }
    for name, affine in affines.items():  # written as the sform itself: nibabel would refuse to decompose them
        header = nib.Nifti1Header()
        header.set_data_shape(small.shape)
        header.set_data_dtype(small.dtype)
        header.set_sform(affine, code="scanner")
        corpus.bytes(f"nifti/affine/{name}.nii", header.binaryblock + bytes(4) + small.tobytes("F"), f"{name} affine")
    corpus.bytes("nifti/dims/five_d.nii", _nifti(np.ones((4, 4, 4, 2, 2), np.float32)), "5D NIfTI")
    corpus.bytes("nifti/dims/four_d.nii", _nifti(np.ones((4, 4, 4, 3), np.float32)), "4D NIfTI")
    corpus.bytes("nifti/dims/zero_axis.nii", _nifti(np.ones((24, 24, 0), np.float32)), "zero axis")
    corpus.bytes("nifti/dims/two_d.nii", _nifti(np.ones((24, 24), np.float32)), "2D NIfTI")
    corpus.bytes("nifti/dtype/complex64.nii", _nifti((small + 1j * small).astype(np.complex64)), "complex NIfTI")
    corpus.bytes("nifti/dtype/complex128.nii", _nifti((small + 1j).astype(np.complex128)), "complex NIfTI")
    rgb = np.zeros((8, 8, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    corpus.bytes("nifti/dtype/rgb24.nii", _nifti(rgb), "RGB NIfTI")
    corpus.bytes("nifti/dtype/nan.nii", _nifti(np.where(small > 0, np.nan, small)), "NaN voxels")
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.int16)
    corpus.bytes("nifti/size/absurd_dims.nii", header.binaryblock + bytes(4) + bytes(64), f"{BOMB}: NIfTI header")
    # 320^3 uint8: 33 MB inflated, 131 MB as float32, 32 KB gzipped
    corpus.bytes("nifti/bomb/zeros.nii.gz", gzip_nifti((320, 320, 320)), f"{BOMB}: gzip NIfTI")


# ---- NumPy


def _npy(array: np.ndarray) -> bytes:
    buffer = BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def write_npy(corpus: Corpus) -> None:
    image = corpus.rng.integers(0, 255, (40, 32)).astype(np.uint8)
    stack = corpus.rng.integers(0, 255, (6, 24, 24)).astype(np.uint8)
    corpus.bytes("npy/ok/image.npy", _npy(image), VALID_2D)
    corpus.bytes("npy/ok/stack.npy", _npy(stack), VALID_3D)
    corpus.bytes("npy/zero_rows.npy", _npy(np.zeros((0, 40), np.float32)), "zero axis")
    corpus.bytes("npy/zero_slices.npy", _npy(np.zeros((24, 24, 0), np.float32)), "zero axis")
    corpus.bytes("npy/complex.npy", _npy(image + 1j * image), "complex array")
    corpus.bytes("npy/bool.npy", _npy(image > 100), "boolean array")
    corpus.bytes("npy/structured.npy", _npy(np.zeros((8, 8), dtype=[("a", "f4"), ("b", "i2")])), "structured array")
    corpus.bytes("npy/object.npy", _npy(np.array([[None, 1], [2, 3]], dtype=object)), "object array")
    corpus.bytes("npy/four_d.npy", _npy(np.ones((2, 2, 2, 2), np.float32)), "4D array")
    corpus.bytes("npy/nan.npy", _npy(np.full((8, 8), np.nan, np.float32)), "NaN values")
    valid = _npy(image)
    for end in (6, 40, len(valid) - 100):
        corpus.bytes(f"npy/cut_{end:04d}.npy", valid[:end], "truncated array")
    header = BytesIO()  # 20000^2 float64 declared over 8 bytes of data
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (20000, 20000)})
    corpus.bytes("npy/absurd_shape.npy", header.getvalue() + bytes(8), "absurd shape")


# ---- PNG / JPEG


def _png(image: Image.Image) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_raster(corpus: Corpus) -> None:
    grey = Image.fromarray(corpus.rng.integers(0, 255, (48, 40)).astype(np.uint8))
    png, jpeg = _png(grey), _jpeg(grey)
    corpus.bytes("raster/ok/grey.png", png, VALID_2D)
    corpus.bytes("raster/ok/grey.jpg", jpeg, VALID_2D)
    corpus.bytes(
        "raster/ok/deep.png", _png(Image.fromarray(np.arange(48 * 40, dtype=np.uint16).reshape(48, 40))), VALID_2D
    )
    corpus.bytes("raster/ok/colour.png", _png(Image.merge("RGB", (grey, grey.rotate(90), grey))), VALID_2D)
    for end in (8, 20, 33, len(png) // 2, len(png) - 12):
        corpus.bytes(f"raster/cut/grey_cut_{end:04d}.png", png[:end], "truncated PNG")
    for end in (3, 100, len(jpeg) // 2, len(jpeg) - 2):
        corpus.bytes(f"raster/cut/grey_cut_{end:04d}.jpg", jpeg[:end], "truncated JPEG")
    for k in range(6):
        for name, data in (("png", png), ("jpg", jpeg)):
            flipped = bytearray(data)
            for position in corpus.rng.integers(2, min(200, len(data)), size=int(corpus.rng.integers(1, 5))):
                flipped[position] ^= int(corpus.rng.integers(1, 256))
            corpus.bytes(f"raster/flip/grey_flip_{k}.{name}", bytes(flipped), "flipped header bytes")
    zero_width = bytearray(png)
    struct.pack_into(">I", zero_width, 16, 0)
    corpus.bytes("raster/size/zero_width.png", bytes(zero_width), "zero size")
    corpus.bytes("raster/bomb/zeros_9000.png", png_declaring(9000, 9000), f"{BOMB}: PNG")
    corpus.bytes("raster/bomb/declares_100k.png", png_declaring(100000, 2000, rows=1), f"{BOMB}: PNG")
    corpus.bytes("raster/bomb/declares_8000.jpg", jpeg_declaring(8000, 8000), f"{BOMB}: JPEG")
    corpus.bytes("raster/bomb/declares_30000.jpg", jpeg_declaring(30000, 30000), f"{BOMB}: JPEG")


# ---- empty files, notes, names, links


def write_names_and_links(corpus: Corpus, outside: Path) -> None:
    valid = _png(Image.fromarray(corpus.rng.integers(0, 255, (32, 32)).astype(np.uint8)))
    for name in ("empty.dcm", "empty.nii", "empty.png", "empty.npy", "empty"):
        corpus.bytes(f"empty/{name}", b"", "zero-byte file")
    corpus.bytes(f"{PATIENT_FOLDER}/{PLANTED[2]}_notes.txt", f"Patient {PLANTED[0]} {PLANTED[1]}\n".encode(), "text")
    corpus.bytes(f"{PATIENT_FOLDER}/{PLANTED[2]}_scan.png", valid, VALID_2D)
    corpus.bytes(f"{PATIENT_FOLDER}/{PLANTED[2]}_seg.nii", b"not a NIfTI " + PLANTED[0].encode(), "not an image")
    hostile_names = [
        "names/M\xfcller_\xe9.png".encode("latin-1"),  # Latin-1, not UTF-8
        b"names/\xff\xfe.png",
        "names/Ünïcödé ✓.png".encode(),
        b"names/$(touch pwned).png",
        b"names/a b; rm -rf x.png",
        b"names/-n.png",
        b"names/--help.png",
        b"names/quote'\"`.png",
        b"names/new\nline.png",
        b"names/*.png",
        b"names/back\\slash.png",
        b"names/tab\tname.png",
    ]
    for name in hostile_names:
        corpus.bytes(name, valid, VALID_2D)
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "system_file").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    links = {
        "links/outside.png": (outside / "system_file", "link outside root"),
        "links/outside_folder": (outside, "link outside root"),
        "links/dangling.png": (corpus.root / "links" / "nowhere.png", "dangling link"),
        "links/loop_a.png": (corpus.root / "links" / "loop_b.png", "link loop"),
        "links/loop_b.png": (corpus.root / "links" / "loop_a.png", "link loop"),
        "links/self.png": (corpus.root / "links" / "self.png", "link loop"),
        "links/raster_link": (corpus.root / "raster", "link to folder"),
        "links/inside.png": (corpus.root / "raster" / "ok" / "grey.png", VALID_2D),
    }
    for relative, (target, what) in links.items():
        corpus.path(relative, what).symlink_to(target)


def write_corpus(root: Path, outside: Path) -> dict[str, str]:
    """Write the corpus under `root` (links point to `outside` too); returns {relative path: class}."""
    corpus = Corpus(root)
    write_dicom(corpus)
    write_nifti(corpus)
    write_npy(corpus)
    write_raster(corpus)
    write_names_and_links(corpus, outside)
    return corpus.classes
