"""Peak memory of curation and normalization jobs on decompression bombs, at the default settings.

Each case is one file of at most 1 MB that declares a large image: over the decode budget (the
deflated DICOM of 23168^2 and the gzip NIfTI of 832^3, which peaked at 12.7 and 5.3 GB before
the budget existed, JPEG 2000 / JPEG codestreams declaring 40000^2 and 30000^2, PNG and JPEG over
Pillow's limit), or just under it (98 %, sized from the budget), so that it is decoded whole: the worst
a small file can do. Each
runs alone in a folder through `medlatent curate` and `medlatent normalize` as the rules call
them, with the recipe's `curate.mem_mb` and `curate.threads` (config.yaml); the peak resident
memory of each command (os.wait4) sits beside the goal. Normalization reads a manifest that
lists the file whatever curation decided, so its own budget check is measured too.

The bomb writers stream their zeros, so a case of gigabytes declared costs seconds to write;
the hostile test corpus (tests/helpers/hostile_corpus.py) uses them at small sizes.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from io import BytesIO
from math import isqrt
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medlatent import config as mlconfig
from medlatent.fetch.receipt import write_receipt
from medlatent.io.budget import FLOAT32_BYTES, DecodeBudget

#: The recipe (config.yaml): its curate.mem_mb and curate.threads are the defaults measured.
RECIPE = mlconfig.load(Path(__file__).resolve().parents[1] / "config.yaml")
GOAL_PEAK_RSS_GB = "<= 4"
MAX_FILE_BYTES = 2**20
#: Zeros written per compression call.
STEP = 2**24


# ---- bomb writers: small files declaring large images


def _deflate_stream(head: bytes, zeros: int) -> bytes:
    """`head` then `zeros` zero bytes, raw-deflated at the best ratio (about 1:1000), in seconds:
    after a full flush the compressor holds no history, so every later STEP of zeros compresses
    to the same bytes, written once and repeated."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [compressor.compress(head), compressor.flush(zlib.Z_FULL_FLUSH)]
    steps, rest = divmod(zeros, STEP)
    if steps:
        parts += [compressor.compress(bytes(STEP)) + compressor.flush(zlib.Z_FULL_FLUSH)] * steps
    return b"".join([*parts, compressor.compress(bytes(rest)), compressor.flush()])


def deflated_dicom(rows: int, columns: int) -> bytes:
    """A Deflated Explicit VR Little Endian DICOM (pydicom's MR_small header) of rows x columns
    8-bit pixels: a ramp in the first row, zeros after."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"), stop_before_pixels=True)
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        del ds[keyword]  # US/SS by PixelRepresentation: stale once it changes
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta, body = DicomBytesIO(), DicomBytesIO()
    meta.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(meta, ds.file_meta)
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    ramp = bytes(i % 256 for i in range(columns))
    pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, rows * columns + rows * columns % 2)
    zeros = (rows - 1) * columns + rows * columns % 2
    return meta.getvalue() + _deflate_stream(body.getvalue() + pixel_header + ramp, zeros)


def gzip_nifti(shape: tuple[int, int, int]) -> bytes:
    """A gzip NIfTI of uint8 voxels of `shape`: a ramp in the first voxels, zeros after."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header.set_sform(np.eye(4), code="scanner")
    head = header.binaryblock + bytes(4) + bytes(range(shape[0] % 256))
    zeros = int(np.prod(shape)) - shape[0] % 256
    crc, left, block = zlib.crc32(head), zeros, bytes(min(zeros, STEP))
    while left:
        crc, left = zlib.crc32(block[: min(left, STEP)], crc), left - min(left, STEP)
    # gzip (RFC 1952): header, the raw deflate stream, CRC-32 and size of the data
    trailer = struct.pack("<II", crc, (len(head) + zeros) % 2**32)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + _deflate_stream(head, zeros) + trailer


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, rows: int | None = None) -> bytes:
    """A grey 8-bit PNG of width x height (a ramp in the first row, zeros after), its IDAT holding
    the first `rows` rows only if given (a header over Pillow's limit is refused before the data)."""
    first = b"\x00" + bytes(i % 256 for i in range(width))  # filter type 0, then the row
    zeros = (width + 1) * ((rows or height) - 1)
    adler, left, block = zlib.adler32(first), zeros, bytes(min(zeros, STEP))
    while left:
        adler, left = zlib.adler32(block[: min(left, STEP)], adler), left - min(left, STEP)
    idat = b"\x78\xda" + _deflate_stream(first, zeros) + struct.pack(">I", adler)  # zlib (RFC 1950)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A 16 x 16 JPEG whose SOF0 declares width x height."""
    buffer = BytesIO()
    Image.new("L", (16, 16), 128).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    struct.pack_into(">HH", data, data.index(b"\xff\xc0") + 5, height, width)
    return bytes(data)


def jpeg_of_zeros(width: int, height: int) -> bytes:
    """A real grey JPEG of width x height, black but for a ramp in the first rows: it decodes whole."""
    image = np.zeros((height, width), dtype=np.uint8)
    image[:8] = np.arange(width) % 256
    buffer = BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=50)
    return buffer.getvalue()


def with_codestream_size(name: str, marker: bytes, offset: int, size: tuple[int, int]) -> bytes:
    """pydicom's encapsulated test file `name` whose first codestream declares `size` (two
    big-endian fields `offset` bytes after `marker`: SIZ 4-byte Xsiz, Ysiz; SOF 2-byte height, width)."""
    data = bytearray(Path(get_testdata_file(name)).read_bytes())
    fields = ">II" if marker == b"\xff\x4f\xff\x51" else ">HH"
    struct.pack_into(fields, data, data.index(marker) + offset, *size)
    return bytes(data)


J2K_SIZ, JPEG_SOF0 = b"\xff\x4f\xff\x51", b"\xff\xc0"
#: Samples a file just under the default budget declares: the most a small file gets decoded.
UNDER_BUDGET = int(DecodeBudget.for_process(mlconfig.decode_mem_mb(RECIPE)).max_bytes / FLOAT32_BYTES * 0.98)
#: Pillow refuses more than this many pixels itself (twice its MAX_IMAGE_PIXELS).
PILLOW_MAX = 2 * Image.MAX_IMAGE_PIXELS
SIDE_2D, SIDE_PNG, SIDE_3D = isqrt(UNDER_BUDGET), isqrt(min(UNDER_BUDGET, PILLOW_MAX)), round(UNDER_BUDGET ** (1 / 3))
#: name -> (dims, file name, writer): over the budget, then just under it (decoded whole).
CASES = {
    "deflate_dicom_23168sq": (2, "image.dcm", lambda: deflated_dicom(23168, 23168)),
    "j2k_codestream_40000sq": (2, "image.dcm", lambda: with_codestream_size(
        "MR_small_jp2klossless.dcm", J2K_SIZ, 8, (40000, 40000))),
    "jpeg_codestream_30000sq": (2, "image.dcm", lambda: with_codestream_size(
        "SC_rgb_jpeg_dcmtk.dcm", JPEG_SOF0, 5, (30000, 30000))),
    "png_100000x20000": (2, "image.png", lambda: png_declaring(100000, 20000, rows=1)),
    "jpeg_30000sq": (2, "image.jpg", lambda: jpeg_declaring(30000, 30000)),
    "gzip_nifti_832cube": (3, "image.nii.gz", lambda: gzip_nifti((832, 832, 832))),
    "deflate_dicom_under_budget": (2, "image.dcm", lambda: deflated_dicom(SIDE_2D, SIDE_2D)),
    "png_under_budget": (2, "image.png", lambda: png_declaring(SIDE_PNG, SIDE_PNG)),
    "jpeg_9000sq_under_budget": (2, "image.jpg", lambda: jpeg_of_zeros(9000, 9000)),  # the largest under 1 MB
    "gzip_nifti_under_budget": (3, "image.nii.gz", lambda: gzip_nifti((SIDE_3D, SIDE_3D, SIDE_3D))),
}  # fmt: skip


# ---- measurement


def _peak_rss_gb(command: list[str], env: dict) -> tuple[float, int]:
    """Peak resident memory (GB) of `command` and its waited children, and its exit status."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return round(usage.ru_maxrss * 1024 / 1e9, 2), process.returncode


def _source(source_id: str, dims: int, folder: Path) -> dict:
    """The recipe with one `local` source of `dims` reading `folder` (generic curation, all train)."""
    config = copy.deepcopy(RECIPE)
    config["sources"].append(
        {
            "id": source_id,
            "modality": "xray" if dims == 2 else "ct",
            "dims": dims,
            "role": "cad",
            "access": {"method": "local", "path": str(folder)},
            "license": {"name": "benchmark"},
            "curation": {"adapter": "generic"},
            "split": {"fractions": {"train": 1.0, "val": 0.0, "test": 0.0}},
        }
    )
    return mlconfig.validate(config)


def _run_case(name: str, dims: int, file_name: str, data: bytes, tmp: Path) -> dict:
    folder, work = tmp / name / "archive", tmp / name / "data"
    folder.mkdir(parents=True)
    (folder / file_name).write_bytes(data)
    config = _source(name, dims, folder)
    entry = mlconfig.source(config, name)
    receipt = work / "raw" / name / "fetch.json"
    write_receipt(entry, folder, receipt.parent)
    out = {key: work / f"{key}.parquet" for key in ("manifest", "rejected", "files_index")}
    threads, per_process = mlconfig.curate_threads(config), mlconfig.decode_mem_mb(config)
    medlatent = [sys.executable, "-m", "medlatent.cli"]  # the `medlatent` command of this interpreter
    env = {**os.environ, config["project"]["salt_env"]: "benchmark-salt"}
    curate_rss, curate_status = _peak_rss_gb(
        [*medlatent, "curate", "--spec", json.dumps(mlconfig.curate_slice(config, name)),
         "--project", json.dumps(mlconfig.project_settings(config)), "--receipt", str(receipt),
         "--manifest", str(out["manifest"]), "--rejected", str(out["rejected"]), "--report", str(work / "report.json"),
         "--files-index", str(out["files_index"]), "--workers", str(threads), "--mem-mb", str(threads * per_process)],
        env,
    )  # fmt: skip
    rejected = pd.read_parquet(out["rejected"])
    files = pd.read_parquet(out["files_index"])
    # normalization is measured on the file whatever curation decided
    forged = work / "forged_manifest.parquet"
    pd.DataFrame({"item_id": [f"{name}_0"], "file_key": files["file_key"][:1], "shard": ["train-000"],
                  "split": ["train"]}).to_parquet(forged)  # fmt: skip
    normalize_rss, normalize_status = _peak_rss_gb(
        [*medlatent, "normalize", "--spec", json.dumps(mlconfig.normalize_slice(config, name)), "--shard", "train-000",
         "--manifest", str(forged), "--files-index", str(out["files_index"]), "--receipt", str(receipt),
         "--demo", "false", "--mem-mb", str(per_process), "--out", str(work / "train-000.h5")],
        env,
    )  # fmt: skip
    return {
        "file_mb": round(len(data) / 1e6, 3),
        "curation": rejected["category"].iloc[0] if len(rejected) else "kept",
        "curate_peak_rss_gb": curate_rss,
        "normalize_peak_rss_gb": normalize_rss,
        "exit_status": max(curate_status, normalize_status),
    }


def run() -> dict:
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (dims, file_name, write) in CASES.items():
            data = write()
            assert len(data) <= MAX_FILE_BYTES, f"{name}: {len(data)} bytes on disk"
            figures[name] = _run_case(name, dims, file_name, data, Path(tmp))
    peaks = [case[key] for case in figures.values() for key in ("curate_peak_rss_gb", "normalize_peak_rss_gb")]
    return {
        "cases": figures,
        "decode_mem_mb": mlconfig.decode_mem_mb(RECIPE),
        "under_budget_samples": UNDER_BUDGET,
        "max_peak_rss_gb": max(peaks),
        "goal_max_peak_rss_gb": GOAL_PEAK_RSS_GB,
        "failed_jobs": sum(case["exit_status"] != 0 for case in figures.values()),
        "goal_failed_jobs": "<= 0",
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
