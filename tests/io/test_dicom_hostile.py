"""Hostile input: real DICOM files mutated (deterministically) through curation and normalization.

Every mutated file must end kept, or rejected with a reason; nothing may crash, and a header
claiming a huge image must be refused before anything of that size is allocated.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_fixtures import XRAY_NORMALIZE, real_file, run_source, source_spec

NATIVE, ENCAPSULATED = "MR_small.dcm", "MR_small_RLE.dcm"
#: (tag, VR written instead): Rows, Columns, BitsStored, PixelSpacing, PhotometricInterpretation.
WRONG_VRS = [
    ((0x0028, 0x0010), b"OB"),
    ((0x0028, 0x0010), b"FD"),
    ((0x0028, 0x0011), b"SQ"),
    ((0x0028, 0x0101), b"AT"),
    ((0x0028, 0x0030), b"US"),
    ((0x0028, 0x0004), b"UN"),
]
PEAK_MEMORY_LIMIT = 2 * 1024**3


def tag_boundaries(path: Path) -> list[int]:
    """Byte offsets where an element of the dataset ends (and the next starts)."""
    ds = pydicom.dcmread(path)
    ends = {128 + 4}  # after the preamble and 'DICM'
    for tag in ds.keys():
        element = ds.get_item(tag)
        if getattr(element, "value_tell", None) is not None and element.length != 0xFFFFFFFF:
            ends.add(element.value_tell + element.length)
    return sorted(end for end in ends if end < path.stat().st_size)


def explicit_tag(tag: tuple[int, int]) -> bytes:
    return tag[0].to_bytes(2, "little") + tag[1].to_bytes(2, "little")


def saved(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=False)
    return path


def write_corpus(folder: Path) -> dict[str, str]:
    """~100 mutated files of two real files; returns file name -> mutation."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(12)
    mutations: dict[str, str] = {}
    native = real_file(NATIVE)
    data = native.read_bytes()
    for end in tag_boundaries(native):
        (folder / f"cut_{end:05d}.dcm").write_bytes(data[:end])
        mutations[f"cut_{end:05d}.dcm"] = "truncated at a tag boundary"
    for source in (NATIVE, ENCAPSULATED):
        original = real_file(source).read_bytes()
        stem = Path(source).stem
        pixel_data = pydicom.dcmread(real_file(source)).get_item("PixelData")
        for fraction in (0.1, 0.5, 0.9):
            name = f"cut_pixels_{stem}_{fraction}.dcm"
            (folder / name).write_bytes(original[: pixel_data.value_tell + int(fraction * 4000)])
            mutations[name] = "truncated inside the pixel data"
        for k in range(8):
            flipped = bytearray(original)
            for position in rng.integers(132, len(original), size=int(rng.integers(1, 33))):
                flipped[position] ^= int(rng.integers(1, 256))
            name = f"flip_{stem}_{k}.dcm"
            (folder / name).write_bytes(bytes(flipped))
            mutations[name] = "random byte flips"
        for k, (tag, vr) in enumerate(WRONG_VRS):
            marker = explicit_tag(tag)
            at = original.index(marker, 132)
            name = f"vr_{stem}_{k}.dcm"
            (folder / name).write_bytes(original[: at + 4] + vr + original[at + 6 :])
            mutations[name] = f"wrong VR {vr.decode()} for {tag}"
        for keyword, value in (("Rows", 65535), ("Columns", 65535), ("BitsAllocated", 1)):
            ds = pydicom.dcmread(real_file(source))
            setattr(ds, keyword, value)
            mutations[saved(ds, folder / f"{keyword}_{stem}.dcm").name] = f"{keyword} {value}"
        ds = pydicom.dcmread(real_file(source))
        ds.Rows = ds.Columns = 65535
        mutations[saved(ds, folder / f"huge_{stem}.dcm").name] = "Rows and Columns 65535"
        (folder / f"empty_{stem}.dcm").write_bytes(
            original[: pixel_data.value_tell - 4] + bytes(4)
        )  # length 0, nothing after
        mutations[f"empty_{stem}.dcm"] = "zero-length pixel data"
    for keyword, other in (("RescaleSlope", "RescaleIntercept"), ("RescaleIntercept", "RescaleSlope")):
        ds = pydicom.dcmread(native)  # text where a number belongs, met only when the rescale is applied
        ds.add_new(keyword, "LO", "not a number")
        ds.add_new(other, "DS", "1")
        mutations[saved(ds, folder / f"text_{keyword}.dcm").name] = f"{keyword} not a number"
    for tag in [t for t in pydicom.dcmread(native).keys() if t.group == 0x0028]:
        ds = pydicom.dcmread(native)
        del ds[tag]
        name = f"missing_{tag.element:04x}.dcm"
        mutations[saved(ds, folder / name).name] = f"missing (0028,{tag.element:04X})"
    return mutations


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("hostile") / "raw"
    return root, write_corpus(root)


def test_every_mutated_file_is_kept_or_rejected_with_a_reason(corpus, tmp_path):
    root, mutations = corpus
    assert len(mutations) >= 40 and sum(m == "truncated at a tag boundary" for m in mutations.values()) >= 40
    result = run_source(root, tmp_path / "out", source_spec("hostile", 2), XRAY_NORMALIZE)
    report = result["report"]
    assert report["found"] == report["kept"] + report["rejected"] == len(mutations)
    assert result["rejected"]["reason"].str.len().min() > 10
    assert result["counts"]["items"] + result["counts"]["failed"] == report["kept"]
    assert all(len(reason) > 10 for reason in result["failed"].values()), result["failed"]

    outcome = {}
    files = result["files"].set_index("path")
    rejected = result["rejected"].set_index("file_key")["reason"]
    for name in mutations:
        key = files.at[name, "file_key"]
        outcome[name] = rejected.get(key, "kept")
    for stem in ("MR_small", "MR_small_RLE"):
        assert "too large to decode" in outcome[f"huge_{stem}.dcm"]
        assert "BitsAllocated 1" in outcome[f"BitsAllocated_{stem}.dcm"]
        assert (
            "empty pixel data" in outcome[f"empty_{stem}.dcm"] or "without pixel data" in outcome[f"empty_{stem}.dcm"]
        )
    assert "pixel data shorter than expected" in outcome["Rows_MR_small.dcm"]
    assert "without Rows" in outcome["missing_0010.dcm"] and "without BitsStored" in outcome["missing_0101.dcm"]
    assert all("malformed DICOM header" in outcome[f"text_{k}.dcm"] for k in ("RescaleSlope", "RescaleIntercept"))
    assert outcome["missing_0030.dcm"] == "kept"  # PixelSpacing is optional in a 2D image
    end_of_pixels = tag_boundaries(real_file(NATIVE))[-1]
    for name, mutation in mutations.items():
        if mutation == "truncated at a tag boundary" and int(name[4:9]) < end_of_pixels:
            assert outcome[name] == "DICOM file without pixel data (not an image: report, presentation state, ...)", (
                name
            )
        if mutation == "truncated inside the pixel data":
            assert "truncated DICOM" in outcome[name], (name, outcome[name])
    assert report["kept"] >= 5  # the mutations that leave a usable image (flips in pixel values, optional tags)


def test_absurd_sizes_are_refused_before_any_large_allocation(corpus):
    """Peak memory (VmHWM) of a fresh process reading the 65535 x 65535 headers, both encodings.

    Not getrusage's ru_maxrss: Linux carries the parent's peak across fork and exec into it, so a
    large pytest worker would be measured instead of this process.
    """
    root, _ = corpus
    paths = [str(root / f"huge_{Path(name).stem}.dcm") for name in (NATIVE, ENCAPSULATED)]
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from medlatent import io\n"
        "from medlatent.core.errors import InputError\n"
        "def peak_kib():\n"
        "    return int(Path('/proc/self/status').read_text().split('VmHWM:')[1].split()[0])\n"
        "reasons, imported_kib = [], peak_kib()\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        io.read_image(path)\n"
        "    except InputError as error:\n"
        "        reasons.append(error.reason)\n"
        "print(json.dumps({'reasons': reasons, 'imported_kib': imported_kib, 'peak_kib': peak_kib()}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(measured["reasons"]) == 2 and all("too large to decode" in r for r in measured["reasons"])
    assert measured["peak_kib"] * 1024 < PEAK_MEMORY_LIMIT
    assert (measured["peak_kib"] - measured["imported_kib"]) * 1024 < 64 * 1024**2  # a 65535^2 image would be 8 GiB
