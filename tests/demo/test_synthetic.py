"""The embedded demo generators: real files, consistent label tables, learnable labels, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from medlatent import io
from medlatent.core.errors import ConfigError, InputError
from medlatent.demo.registry import GENERATORS, generate, phi_strings

#: Small sources, one per generator, big enough for the learnability checks.
SPECS = {
    "cxr": {"generator": "cxr_dicom", "n_patients": 24, "images_per_patient": 3, "size": [96, 80]},
    "mammo": {"generator": "mammo_dicom", "n_patients": 16, "images_per_patient": 4, "size": [96, 48]},
    "wrist": {"generator": "xray_png", "n_patients": 24, "images_per_patient": 2, "size": [72, 48]},
    "headct": {"generator": "ct_dicom_series", "n_patients": 12, "size": [40, 40, 12]},
    "bodyct": {"generator": "nifti_volume", "modality": "ct", "n_patients": 4, "size": [24, 24, 12]},
    "brainmri": {"generator": "nifti_volume", "modality": "mri", "n_patients": 4, "size": [24, 24, 12]},
    "knee": {"generator": "mrnet_npy", "n_patients": 16, "size": [10, 32, 32]},
}
#: Planted broken files (relative paths or glob patterns) and what the reader must say.
PLANTED = {
    "cxr": ("files/*/*/truncated.dcm", "truncated DICOM"),
    "wrist": ("images/x.png", "not an image file"),
    "headct": ("PID0H0012/Unknown Study/*", "inconsistent slice spacing"),
    "bodyct": ("BODY00004/ct.nii.gz", "4D NIfTI"),
    "brainmri": ("sub-OAS00004/anat/*.nii.gz", "NaN/Inf"),
}
LABEL_COLUMNS = {
    "cxr": {"view", "nodule"},
    "mammo": {"view", "laterality", "calcification", "malignancy"},
    "wrist": {"projection", "fracture", "metal", "cast"},
    "headct": {"fracture"},
    "bodyct": set(),
    "brainmri": set(),
    "knee": {"split", "acl", "meniscus"},
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synthetic")
    for name, spec in SPECS.items():
        generate({"method": "synthetic", **spec}, root / name, seed=0)
    return {name: root / name for name in SPECS}


def _labels(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "labels.csv", dtype={"patient_id": str, "file": str})


def _images(root: Path, table: pd.DataFrame) -> list[np.ndarray]:
    return [io.read_image(root / f).array for f in table["file"]]


def auroc(scores, labels) -> float:
    """Mann-Whitney AUROC with average ranks for ties."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    positives, negatives = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def box_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window at every pixel (edges replicated), via an integral image."""
    size = 2 * radius + 1
    integral = np.pad(image, radius + 1, mode="edge").cumsum(0).cumsum(1)
    sums = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    return sums[: image.shape[0], : image.shape[1]] / size**2


def unit_range(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [1, 99])
    return (image - low) / (high - low)


def opening(image: np.ndarray, radius: int) -> np.ndarray:
    """Grey opening (min then max filter): removes specks narrower than the window, keeps blobs."""
    size = 2 * radius + 1
    for reduce in (np.min, np.max):
        image = reduce(sliding_window_view(np.pad(image, radius, mode="edge"), (size, size)), axis=(-1, -2))
    return image


def blob_response(image: np.ndarray, radius: int) -> np.ndarray:
    """Bright blobs of about `radius` pixels: centre-surround difference of box means."""
    image = unit_range(image)
    return box_mean(image, radius) - box_mean(image, int(2.5 * radius))


def test_auroc_helper_matches_known_values():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5


def test_every_generator_has_a_spec_here():
    assert {spec["generator"] for spec in SPECS.values()} == set(GENERATORS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_labels_table_lists_exactly_the_good_items(sources, name):
    root = sources[name]
    table = _labels(root)
    assert {"file", "patient_id"} | LABEL_COLUMNS[name] == set(table.columns)
    assert table["file"].is_unique and len(table) > 0
    for relative in table["file"]:
        assert (root / relative).exists(), relative
    for column in LABEL_COLUMNS[name] - {"view", "laterality", "projection", "split"}:
        assert set(table[column]) == {0, 1}, f"{column} must have both classes"
    if name in PLANTED:
        pattern, _ = PLANTED[name]
        planted = [str(p.relative_to(root)) for p in root.glob(pattern)]
        assert len(planted) == 1 and planted[0] not in set(table["file"])


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_broken_files_are_refused_with_a_specific_reason(sources, name):
    pattern, reason = PLANTED[name]
    (path,) = sources[name].glob(pattern)
    with pytest.raises(InputError, match=reason):
        io.read_header(path)
        io.read_image(path)


def test_wrist_source_holds_a_plain_non_image_file(sources):
    with pytest.raises(InputError, match="not an image file"):
        io.read_header(sources["wrist"] / "notes.txt")


@pytest.mark.parametrize("name", ["cxr", "mammo", "headct"])
def test_dicom_patient_id_in_the_table_is_the_patient_id_tag(sources, name):
    root = sources[name]
    for _, row in _labels(root).iterrows():
        assert io.read_header(root / row["file"]).patient_id == row["patient_id"]


def test_phi_strings_cover_names_ids_dates_and_institution(sources):
    phi = phi_strings(sources["cxr"])
    header = pydicom.dcmread(next((sources["cxr"] / "files").rglob("*.dcm")), stop_before_pixels=True)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "InstitutionName"):
        assert str(header.get(keyword)) in phi
    assert set(_labels(sources["wrist"])["patient_id"]) <= phi_strings(sources["wrist"])
    assert phi_strings(sources["knee"]) == set()  # MRNet case numbers are not PHI


def test_cxr_mixes_encodings_views_and_photometrics(sources):
    headers = [io.read_header(sources["cxr"] / f) for f in _labels(sources["cxr"])["file"]]
    assert {h.photometric for h in headers} == {"MONOCHROME1", "MONOCHROME2"}
    assert {h.transfer_syntax for h in headers} == {
        pydicom.uid.ExplicitVRLittleEndian,
        pydicom.uid.RLELossless,
        pydicom.uid.JPEG2000Lossless,
    }
    assert {h.view_position for h in headers} == {"PA", "AP", "LATERAL"}
    assert {h.modality for h in headers} == {"DX", "CR"} and {h.bits_stored for h in headers} == {12}


def test_mammo_has_both_voi_kinds_and_some_images_for_processing(sources):
    root = sources["mammo"]
    datasets = [pydicom.dcmread(root / f, stop_before_pixels=True) for f in _labels(root)["file"]]
    assert any("VOILUTSequence" in ds for ds in datasets) and any("WindowCenter" in ds for ds in datasets)
    assert {ds.PresentationIntentType for ds in datasets} == {"FOR PRESENTATION", "FOR PROCESSING"}
    assert {ds.BitsStored for ds in datasets} == {14}
    table = _labels(root)
    per_breast = table.groupby(["patient_id", "laterality"])[["calcification", "malignancy"]].nunique()
    assert (per_breast == 1).all().all(), "labels are per breast: both views agree"


def test_mrnet_layout_and_label_files(sources):
    root = sources["knee"]
    table = _labels(root)
    assert set(table["split"]) == {"train", "test"}
    for folder, split in (("train", "train"), ("valid", "test")):
        for label in ("acl", "meniscus"):
            published = pd.read_csv(root / f"{folder}-{label}.csv", header=None, names=["id", label], dtype={"id": str})
            ours = table[(table["split"] == split) & table["file"].str.contains("/sagittal/")]
            assert list(published["id"]) == list(ours["patient_id"])
            assert list(published[label]) == list(ours[label])
    for plane in ("axial", "coronal", "sagittal"):
        array = np.load(next((root / "train" / plane).glob("*.npy")))
        assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[1:] == (32, 32)


def test_ct_series_files_are_not_in_slice_order(sources):
    series = sources["headct"] / _labels(sources["headct"])["file"].iloc[0]
    names = sorted(p.name for p in series.glob("*.dcm"))
    positions = [float(pydicom.dcmread(series / n, stop_before_pixels=True).ImagePositionPatient[2]) for n in names]
    assert positions != sorted(positions) and positions != sorted(positions, reverse=True)


def test_nifti_volumes_are_stored_non_ras_with_anisotropic_zooms(sources):
    import nibabel as nib

    for name in ("bodyct", "brainmri"):
        for relative in _labels(sources[name])["file"]:
            image = nib.load(sources[name] / relative)
            assert nib.aff2axcodes(image.affine) != ("R", "A", "S")
            assert len(set(np.round(image.header.get_zooms(), 3))) > 1


def test_generation_is_byte_deterministic_and_seeded(tmp_path):
    def snapshot(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    for name, spec in SPECS.items():
        small = {**spec, "n_patients": 3}
        generate(small, tmp_path / "a" / name, seed=7)
        generate(small, tmp_path / "b" / name, seed=7)
        generate(small, tmp_path / "c" / name, seed=8)
        first, second = snapshot(tmp_path / "a" / name), snapshot(tmp_path / "b" / name)
        assert first.keys() == second.keys() and all(first[k] == second[k] for k in first), name
        assert snapshot(tmp_path / "c" / name) != first, f"{name}: the seed must matter"


def test_unknown_generator_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cxr_dicom"):
        generate({"generator": "nope"}, tmp_path, seed=0)


# ---- learnability: a trivial, position-agnostic detector per finding must separate the labels


def test_cxr_nodules_are_learnable(sources):
    table = _labels(sources["cxr"]).query("view != 'LATERAL'")
    images = _images(sources["cxr"], table)
    width = images[0].shape[1]
    lungs = np.r_[0 : int(0.35 * width), width - int(0.35 * width) : width]  # the lateral lung fields
    scores = [blob_response(image, round(0.05 * min(image.shape)))[:, lungs].max() for image in images]
    assert auroc(scores, table["nodule"]) > 0.9


def test_mammo_masses_and_calcifications_are_learnable(sources):
    table = _labels(sources["mammo"])
    images = [unit_range(image) for image in _images(sources["mammo"], table)]
    radius = round(0.1 * min(images[0].shape))
    margin = int(2.5 * radius)  # away from the chest wall, where the pectoral muscle ends in a bright tip
    masses = [blob_response(opening(image, 2), radius)[margin:-margin, margin:-margin].max() for image in images]
    specks = [np.percentile(image - box_mean(image, 2), 99.9) for image in images]
    assert auroc(masses, table["malignancy"]) > 0.9
    assert auroc(specks, table["calcification"]) > 0.9


def test_wrist_fractures_are_learnable(sources):
    table = _labels(sources["wrist"]).query("metal == 0 and cast == 0")

    def gap_score(image: np.ndarray) -> float:
        shaft = box_mean(unit_range(image), 1)[: int(0.75 * image.shape[0])]
        bone_columns = (shaft > np.percentile(shaft, 80)).mean(axis=0) > 0.5
        profiles = shaft[:, bone_columns]
        return float((np.median(profiles, axis=0) - profiles.min(axis=0)).max())

    assert auroc([gap_score(image) for image in _images(sources["wrist"], table)], table["fracture"]) > 0.9


def test_head_ct_fractures_are_learnable(sources):
    table = _labels(sources["headct"])

    def emptiest_skull_sector(volume: np.ndarray) -> float:
        x, y = np.meshgrid(*(np.arange(n) - n / 2 + 0.5 for n in volume.shape[:2]), indexing="ij")
        sector = ((np.arctan2(y, x) + np.pi) / (2 * np.pi) * 16).astype(int) % 16
        bone = volume > 300  # HU
        middle = range(volume.shape[2] // 3, 2 * volume.shape[2] // 3)
        return -min(bone[:, :, k][sector == s].sum() for k in middle for s in range(16))

    assert auroc([emptiest_skull_sector(v) for v in _images(sources["headct"], table)], table["fracture"]) > 0.9


def test_knee_tears_are_learnable(sources):
    table = _labels(sources["knee"]).query("file.str.contains('/sagittal/')", engine="python")
    stacks = _images(sources["knee"], table)

    def acl_brightness(stack: np.ndarray) -> float:  # the ACL crosses the centre of the knee
        s, h, w = (n // 2 for n in stack.shape)
        return float(stack[s - 1 : s + 2, h - 2 : h + 2, w - 2 : w + 2].mean())

    def posterior_horn_brightness(stack: np.ndarray) -> float:  # at the joint line, posterior
        h, w = stack.shape[1] // 2, stack.shape[2]
        return float(stack[:, h - 1 : h + 1, int(0.2 * w) : int(0.35 * w)].max(axis=(1, 2)).mean())

    assert auroc([acl_brightness(s) for s in stacks], table["acl"]) > 0.9
    assert auroc([posterior_horn_brightness(s) for s in stacks], table["meniscus"]) > 0.9
