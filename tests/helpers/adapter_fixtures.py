"""Tiny releases of the real datasets, in their published layouts, for the adapter tests.

Each writer puts a handful of small images in the dataset's own file format and folder layout
(nested the way our fetchers extract archives) next to its own label files, with known labels,
splits and planted exclusions, and returns the source root. Sizes are minimal: the tests check
bookkeeping, not pixels.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image
from pydicom.uid import (
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    generate_uid,
)

from medlatent.demo.ct import write_ct_series
from medlatent.demo.dicom import write_dicom

RNG = np.random.default_rng(0)


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _pixels(shape: tuple[int, ...], top: int = 4000) -> np.ndarray:
    return RNG.integers(100, top, size=shape).astype(np.uint16)


def _png(path: Path, bits: int = 8, shape: tuple[int, int] = (24, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if bits == 16:
        Image.fromarray(_pixels(shape, 60000)).save(path, format="PNG")
    else:
        Image.fromarray(_pixels(shape, 255).astype(np.uint8)).save(path, format="PNG")


def _mammogram(path: Path, patient: str, side: str, view: str, intent: str = "FOR PRESENTATION") -> None:
    sop_class = (
        DigitalMammographyXRayImageStorageForPresentation
        if intent == "FOR PRESENTATION"
        else DigitalMammographyXRayImageStorageForProcessing
    )
    write_dicom(
        path,
        _pixels((32, 16)),
        {
            "SOPClassUID": sop_class,
            "SOPInstanceUID": _uid(path.as_posix()),
            "SeriesInstanceUID": _uid(path.parent.as_posix()),
            "Modality": "MG",
            "PatientID": patient,
            "ImageLaterality": side,
            "ViewPosition": view,
            "PresentationIntentType": intent,
            "BitsStored": 12,
            "PixelRepresentation": 0,
        },
        window=(2000, 4000),
    )


def _nifti(path: Path, shape: tuple[int, int, int] = (8, 8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(RNG.integers(-1000, 1000, size=shape).astype(np.int16), np.eye(4)), path)


# ----------------------------------------------------------------------------- MIMIC-CXR-JPG

#: subject -> official split; every subject has one study with a PA, an AP and a LATERAL image.
MIMIC_SUBJECTS = {"10000001": "train", "10000002": "train", "10000003": "validate", "10000004": "test"}


def mimic_cxr(root: Path) -> Path:
    metadata, splits = [], []
    for n, (subject, split) in enumerate(MIMIC_SUBJECTS.items()):
        study = f"5000000{n}"
        for view in ("PA", "AP", "LATERAL"):
            dicom_id = f"{n:08x}-{view.lower():0>8}-00000000-00000000-00000000"
            path = root / f"files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_pixels((24, 20), 255).astype(np.uint8)).save(path, format="JPEG")
            metadata.append(
                {
                    "dicom_id": dicom_id,
                    "subject_id": subject,
                    "study_id": study,
                    "ViewPosition": view,
                    "Rows": 24,
                    "Columns": 20,
                }
            )
            splits.append({"dicom_id": dicom_id, "study_id": study, "subject_id": subject, "split": split})
    stray = (
        root / "files/p10/p10000004/s50000003/ffffffff-00000000-00000000-00000000-00000000.jpg"
    )  # not in the metadata
    Image.fromarray(_pixels((24, 20), 255).astype(np.uint8)).save(stray, format="JPEG")
    pd.DataFrame(metadata).to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False, compression="gzip")
    pd.DataFrame(splits).to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False, compression="gzip")
    return root


# ----------------------------------------------------------------------------- CMMD

#: (ID1, LeftRight, abnormality, classification): the rows of the clinical sheet.
CMMD_BREASTS = [
    ("D1-0001", "L", "calcification", "Benign"),
    ("D1-0002", "R", "mass", "Malignant"),
    ("D1-0003", "L", "both", "Malignant"),
    ("D1-0004", "R", "mass", "Benign"),
    ("D1-0005", "L", "calcification", "Malignant"),
    ("D1-0006", "R", "mass", "Malignant"),
    ("D1-0007", "L", "mass", "Benign"),
    ("D1-0007", "R", "calcification", "Malignant"),
    ("D1-0008", "L", "both", "Benign"),
    ("D1-0009", "R", "mass", "Malignant"),
]
#: A breast that is imaged but has no clinical row, and a download cut in half.
CMMD_UNLISTED = ("D1-0010", "L")


def cmmd(root: Path) -> Path:
    for patient, side in [(p, s) for p, s, _, _ in CMMD_BREASTS] + [CMMD_UNLISTED]:
        series = root / _uid("cmmd", patient, side)  # the tcia fetcher's files/<SeriesInstanceUID>/
        for k, view in enumerate(("CC", "MLO"), 1):
            _mammogram(series / f"1-{k}.dcm", patient, side, view)
    broken = root / _uid("cmmd", "broken") / "1-1.dcm"
    _mammogram(broken, "D1-0011", "R", "CC")
    broken.write_bytes(broken.read_bytes()[:200])
    pd.DataFrame(
        [
            {"ID1": p, "LeftRight": s, "Age": 50, "number": 1, "abnormality": a, "classification": c, "subtype": ""}
            for p, s, a, c in CMMD_BREASTS
        ]
    ).to_csv(root / "CMMD_clinicaldata_revision.csv", index=False)
    return root


# ----------------------------------------------------------------------------- VinDr-Mammo

#: study -> (split, BI-RADS of the right breast, of the left breast)
VINDR_STUDIES = {
    "s1": ("training", 1, 2),
    "s2": ("training", 3, 1),
    "s3": ("training", 4, 5),
    "s4": ("training", 1, 1),
    "s5": ("test", 2, 5),
}
#: The one image stored FOR PROCESSING (the config keeps FOR PRESENTATION only).
VINDR_PROCESSING = ("s1", "R", "CC")


def vindr_mammo(root: Path) -> Path:
    release = root / "physionet.org/files/vindr-mammo/1.0.0"
    rows = []
    for study, (split, right, left) in VINDR_STUDIES.items():
        for side, birads in (("R", right), ("L", left)):
            for view in ("CC", "MLO"):
                image_id = f"{study}{side}{view}".lower()
                intent = "FOR PROCESSING" if (study, side, view) == VINDR_PROCESSING else "FOR PRESENTATION"
                _mammogram(release / f"images/{study}/{image_id}.dicom", study, side, view, intent)
                rows.append(
                    {
                        "study_id": study,
                        "series_id": f"{study}{side}",
                        "laterality": side,
                        "view_position": view,
                        "height": 32,
                        "width": 16,
                        "breast_birads": f"BI-RADS {birads}",
                        "breast_density": "DENSITY C",
                        "split": split,
                        "image_id": image_id,
                    }
                )
    pd.DataFrame(rows).to_csv(release / "breast-level_annotations.csv", index=False)
    return root


# ----------------------------------------------------------------------------- RSNA Bone Age

BONE_AGE_TRAINING = {"1377": 180, "1378": 12, "1379": 228, "1380": 11, "1381": 100, "1382": 180}
BONE_AGE_VALIDATION = {"1386": 24, "1387": 120, "1388": 35}


def rsna_bone_age(root: Path) -> Path:
    training = root / "Bone Age Training Set"
    for image_id in BONE_AGE_TRAINING:
        _png(training / f"boneage-training-dataset/{image_id}.png")
    pd.DataFrame(
        {"id": list(BONE_AGE_TRAINING), "boneage": list(BONE_AGE_TRAINING.values()), "male": [True, False] * 3}
    ).to_csv(training / "boneage-training-dataset.csv", index=False)
    validation = root / "Bone Age Validation Set"
    for k, image_id in enumerate(BONE_AGE_VALIDATION):
        _png(validation / f"boneage-validation-dataset-{k % 2 + 1}/{image_id}.png")
    pd.DataFrame(
        {
            "Image ID": list(BONE_AGE_VALIDATION),
            "male": [True, False, True],
            "Bone Age (months)": list(BONE_AGE_VALIDATION.values()),
        }
    ).to_csv(validation / "Validation Dataset.csv", index=False)
    return root


# ----------------------------------------------------------------------------- GRAZPEDWRI-DX

#: patient -> (fracture_visible, metal, cast) of its two images (AP, lateral); None is a blank cell.
GRAZ_PATIENTS = {
    "0001": [(1, None, None), (1, None, None)],
    "0002": [(None, None, None), (None, None, None)],
    "0003": [(1, 1, None), (1, None, None)],
    "0004": [(None, None, 1), (None, None, None)],
    "0005": [(1, None, None), (None, None, None)],
    "0006": [(None, 1, 1), (None, None, None)],
    "0007": [(None, None, None), (1, None, None)],
    "0008": [(1, None, None), (1, None, None)],
}


def grazpedwri_dx(root: Path) -> Path:
    rows = []
    for n, (patient, images) in enumerate(GRAZ_PATIENTS.items()):
        for k, (fracture, metal, cast) in enumerate(images, 1):
            stem = f"{patient}_{1297860395 + n}_{k:02d}_WRI-L{k}_M014"
            _png(root / f"images_part{n % 2 + 1}/{stem}.png", bits=16)
            rows.append(
                {
                    "patient_id": patient,
                    "filestem": stem,
                    "timehash": 0,
                    "laterality": "L",
                    "projection": k,
                    "ao_classification": "",
                    "fracture_visible": fracture,
                    "metal": metal,
                    "cast": cast,
                }
            )
    pd.DataFrame(rows).to_csv(root / "dataset.csv", index=False)
    return root


# ----------------------------------------------------------------------------- VerSe 2019

#: release -> {subject: [series named by a split- entity, or [] when the subject's only series]}
VERSE_RELEASES = {
    "training": {"verse004": [], "verse005": [], "verse401": ["verse290", "verse291"]},
    "validation": {"verse010": [], "verse011": []},
    "test": {"verse012": []},
}
#: series -> Genant grade per vertebra (label as in the centroid JSON)
VERSE_GRADES = {
    "verse004": {20: 2, 21: 0},
    "verse005": {19: 0, 20: 0},
    "verse290": {22: 1},
    "verse291": {22: 0},
    "verse010": {18: 0},
    "verse011": {23: 3, 24: 0},
    "verse012": {20: 0},
}


def verse19(root: Path) -> Path:
    for release, subjects in VERSE_RELEASES.items():
        top = (
            root / f"dataset-verse19{release}/dataset-verse19{release}"
        )  # https fetcher: files/<archive stem>/<archive content>
        for subject, series in subjects.items():
            for name in [f"sub-{subject}_split-{s}" for s in series] or [f"sub-{subject}"]:
                _nifti(top / f"rawdata/sub-{subject}/{name}_ct.nii.gz")
                _nifti(top / f"derivatives/sub-{subject}/{name}_seg-vert_msk.nii.gz")
                (top / f"derivatives/sub-{subject}/{name}_seg-subreg_ctd.json").write_text(
                    '[{"direction": ["P", "I", "R"]}]\n'
                )
                _png(top / f"derivatives/sub-{subject}/{name}_seg-vert_snp.png")
    rows = [
        {"verse_id": s, "vertebra": v, "genant_grade": g}
        for s, grades in VERSE_GRADES.items()
        for v, g in grades.items()
    ]
    pd.DataFrame(rows).to_csv(root / "verse19_fracture_grades.csv", index=False)
    return root


# ----------------------------------------------------------------------------- CQ500

#: study number -> (series folder names, R1/R2/R3 fracture reads)
CQ500_STUDIES = {
    0: (["CT PLAIN THIN", "CT 5mm", "CT BONE"], (1, 1, 0)),
    1: (["CT Plain"], (0, 0, 1)),
    2: (["CT 0.625mm", "CT PRE CONTRAST THIN"], (1, 1, 1)),
    3: (["CT 5mm"], (0, 0, 0)),
    4: (["CT 5mm"], (1, 0, 1)),
    5: (["CT 55mm"], (0, 1, 0)),
}
CQ500_FINDINGS = ("ICH", "Fracture", "CalvarialFracture", "OtherFracture")


def cq500(root: Path) -> Path:
    reads = []
    for n, (series_names, votes) in CQ500_STUDIES.items():
        study = root / f"CQ500-CT-{n}/CQ500CT{n} CQ500CT{n}/Unknown Study"
        for name in series_names:
            attrs = {
                "PatientID": f"CQ500-CT-{n}",
                "StudyInstanceUID": _uid("cq500", n),
                "SeriesInstanceUID": _uid("cq500", n, name),
            }
            write_ct_series(study / name, RNG.normal(30, 20, size=(4, 8, 8)), (5.0, 1.0, 1.0), attrs)
        row = {"name": f"CQ500-CT-{n}", "Category": "B1"}
        for reader, vote in zip(("R1", "R2", "R3"), votes):
            row |= {f"{reader}:{finding}": vote if finding == "Fracture" else 0 for finding in CQ500_FINDINGS}
        reads.append(row)
    pd.DataFrame(reads).to_csv(root / "reads.csv", index=False)
    return root


# ----------------------------------------------------------------------------- MRNet

#: case -> (folder, acl, meniscus)
MRNET_CASES = {
    0: ("train", 1, 0),
    1: ("train", 0, 1),
    2: ("train", 0, 0),
    3: ("train", 1, 1),
    4: ("train", 0, 0),
    5: ("train", 0, 0),
    1130: ("valid", 1, 0),
    1131: ("valid", 0, 1),
}


def mrnet(root: Path) -> Path:
    release = root / "MRNet-v1.0"
    tables: dict[str, list[str]] = {}
    for case, (folder, acl, meniscus) in MRNET_CASES.items():
        for plane in ("axial", "coronal", "sagittal"):
            path = release / f"{folder}/{plane}/{case:04d}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, RNG.integers(0, 255, size=(4, 8, 8)).astype(np.uint8))
        for tear, value in (("acl", acl), ("meniscus", meniscus), ("abnormal", max(acl, meniscus))):
            tables.setdefault(f"{folder}-{tear}.csv", []).append(f"{case:04d},{value}\n")
    for name, lines in tables.items():
        (release / name).write_text("".join(lines))
    return root


# ----------------------------------------------------------------------------- training-only sources

#: SOP instance UID -> (FinalImageType, spot_mag): one of each kind the EMBED filter must tell apart.
EMBED_IMAGES = {
    "1.2.826.0.1.1": ("2D", 0),
    "1.2.826.0.1.2": ("C-view", 0),
    "1.2.826.0.1.3": ("2D", 1),
    "1.2.826.0.1.4": ("2D", 0),
}


def embed(root: Path) -> Path:
    rows = []
    for k, (sop, (image_type, spot_mag)) in enumerate(EMBED_IMAGES.items()):
        patient, study = f"{k % 2 + 1:08d}", f"{k:016d}"
        _mammogram(root / f"images/cohort_1/{patient}/{study}/{sop}.dcm", "header-id-not-used", "L", "CC")
        rows.append(
            {
                "empi_anon": patient,
                "acc_anon": study,
                "anon_dicom_path": f"/mnt/NAS2/mammo/anon_dicom/cohort_1/{patient}/{study}/{sop}.dcm",
                "FinalImageType": image_type,
                "ViewPosition": "CC",
                "ImageLateralityFinal": "L",
                "spot_mag": spot_mag,
            }
        )
    (root / "tables").mkdir()
    pd.DataFrame(rows).to_csv(root / "tables/EMBED_OpenData_metadata.csv", index=False)
    return root


def rsna_screening_mammo(root: Path) -> Path:
    release = root / "rsna-breast-cancer-detection"
    rows = []
    for patient in ("10006", "10011"):
        for side, view in (("L", "CC"), ("R", "MLO")):
            image_id = f"{patient}{side}{len(rows)}"
            _mammogram(release / f"train_images/{patient}/{image_id}.dcm", "header-id-not-used", side, view)
            rows.append(
                {
                    "site_id": 2,
                    "patient_id": patient,
                    "image_id": image_id,
                    "laterality": side,
                    "view": view,
                    "age": 61,
                    "cancer": 0,
                }
            )
    pd.DataFrame(rows).to_csv(release / "train.csv", index=False)
    return root


def amos(root: Path) -> Path:
    release = root / "amos22/amos22"
    for folder, case in (("imagesTr", 1), ("imagesTr", 507), ("imagesVa", 2), ("labelsTr", 1)):
        _nifti(release / f"{folder}/amos_{case:04d}.nii.gz")
    return root


WRITERS = {
    "mimic_cxr": mimic_cxr,
    "cmmd": cmmd,
    "vindr_mammo": vindr_mammo,
    "rsna_bone_age": rsna_bone_age,
    "grazpedwri_dx": grazpedwri_dx,
    "verse19": verse19,
    "cq500": cq500,
    "mrnet": mrnet,
    "embed": embed,
    "rsna_screening_mammo": rsna_screening_mammo,
    "amos": amos,
}
