"""A patient folder as hospitals export them: real DICOM files (shipped by pydicom) rewritten with
distinctive identifying values in every identifying attribute, the UIDs, a private tag, and
folder and file names that carry the patient's name, id, accession number and dates.

Every value is fake and long enough (8+ characters) that finding it in an output cannot be chance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
from dicom_fixtures import real_file

NAME = "QUIXWORTH^ZELDA"
PATIENT_ID = "PID-7731942"
ACCESSION = "ACC58213907"
BIRTH_DATE = "19230417"
STUDY_DATE = "20170923"
#: Non-ASCII, so that JSON written with ensure_ascii holds it only escaped (`J\u00fcrgen`).
INSTITUTION = "Sankt Jürgen Klinik Quxberg"

#: Identifying attributes (DICOM PS3.15 Annex E, basic profile) and their fake values.
IDENTIFYING = {
    "PatientName": NAME,
    "PatientID": PATIENT_ID,
    "PatientBirthDate": BIRTH_DATE,
    "PatientBirthTime": "045132.918273",
    "OtherPatientIDs": "OPID-55501234",
    "PatientAddress": "17 Gallowglass Lane Quxberg",
    "PatientTelephoneNumbers": "+49-555-0137742",
    "AccessionNumber": ACCESSION,
    "StudyID": "STUDY-66120QX",
    "StudyDate": STUDY_DATE,
    "SeriesDate": "20170924",
    "AcquisitionDate": "20170925",
    "ContentDate": "20170926",
    "InstanceCreationDate": "20170927",
    "StudyTime": "135927.481516",
    "SeriesTime": "140211.342342",
    "AcquisitionTime": "140301.675675",
    "ContentTime": "140322.898989",
    "InstitutionName": INSTITUTION,
    "InstitutionAddress": "Klinikweg 99 Quxberg 54321",
    "ReferringPhysicianName": "HOOVERDAM^HORATIO",
    "PerformingPhysicianName": "PLIMSOLL^OTTILIE",
    "OperatorsName": "GRUNDWELL^AMADEUS",
    "NameOfPhysiciansReadingStudy": "FENWICKE^BARNABY",
    "StationName": "QUXSTATION7",
    "DeviceSerialNumber": "SN-88421-QXZ",
    "StudyDescription": "Thorax QUIXWORTH follow-up",
    "SeriesDescription": "recon ZELDA-4471 soft",
    "ImageComments": "seen by Dr Hooverdam 2017",
}
#: A private block, as vendors write them: creator (0033,0010), one value (0033,1001).
PRIVATE_GROUP, PRIVATE_CREATOR, PRIVATE_VALUE = 0x0033, "QUXCORP PHI 01", "PRIV-ZX9Q-4471"
#: The study's UID, and the roots of the others: `<root><number of the series or the file>`.
STUDY_UID = "2.25.31415926535897932384626433832795"
SERIES_UID = "2.25.27182818284590452353602874713526"
INSTANCE_UID = "2.25.16180339887498948482045868343656"
FRAME_OF_REFERENCE_UID = "2.25.14142135623730950488016887242096"
#: mm between the slices of the CT series: CT_small.dcm's slice thickness.
SLICE_GAP = 5.0
#: The patient folder, and in it a folder per source, as archive exports name them.
FOLDER = f"{NAME}_{PATIENT_ID}"
XRAY = f"XR_{ACCESSION}_{STUDY_DATE}"
CT = f"CT_{ACCESSION}_{STUDY_DATE}"
#: file under the patient folder -> (pydicom test file, series number, slice number in the series)
FILES = {
    f"{XRAY}/QUIXWORTH_ZELDA_{BIRTH_DATE}_chest.dcm": ("CT_small.dcm", 0, 0),
    f"{XRAY}/{PATIENT_ID}_knee.dcm": ("MR_small.dcm", 1, 0),
    **{f"{CT}/SERIES_QUIXWORTH_ZELDA/{PATIENT_ID}_slice{k}.dcm": ("CT_small.dcm", 2, k) for k in range(4)},
}


@dataclass(frozen=True)
class PatientFolder:
    root: Path
    """The patient folder: the sources are its subfolders `XRAY` (2D images) and `CT` (a 3D series)."""
    values: frozenset[str]
    """Every identifying value written: attributes, UIDs, private value, folder and file names."""
    paths: frozenset[str]
    """Every file and folder path in it, absolute and relative to each folder above it."""


def write_patient_folder(parent: Path) -> PatientFolder:
    """The patient folder under `parent`, its files rewritten from pydicom's test files."""
    root = parent / FOLDER
    values = {*IDENTIFYING.values(), PRIVATE_CREATOR, PRIVATE_VALUE, STUDY_UID}
    for number, (relative, (original, series, position)) in enumerate(sorted(FILES.items())):
        dataset = pydicom.dcmread(real_file(original))
        dataset.SpecificCharacterSet = "ISO_IR 100"  # Latin-1, for the institution's ü
        for keyword, value in IDENTIFYING.items():
            setattr(dataset, keyword, value)
        uids = {
            "StudyInstanceUID": STUDY_UID,
            "SeriesInstanceUID": f"{SERIES_UID}{series}",
            "FrameOfReferenceUID": f"{FRAME_OF_REFERENCE_UID}{series}",
            "SOPInstanceUID": f"{INSTANCE_UID}{number}",
        }
        for keyword, value in uids.items():
            setattr(dataset, keyword, value)
        dataset.file_meta.MediaStorageSOPInstanceUID = uids["SOPInstanceUID"]
        x, y, z = dataset.ImagePositionPatient
        dataset.ImagePositionPatient = [x, y, z + position * SLICE_GAP]
        dataset.InstanceNumber = position + 1
        block = dataset.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
        block.add_new(0x01, "LO", PRIVATE_VALUE)
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_as(path, enforce_file_format=True)
        values |= {*uids.values(), *Path(FOLDER, relative).parts}
    paths = set()
    for path in (root, *root.rglob("*")):
        above = [folder for folder in path.parents if folder.is_relative_to(parent)]
        paths |= {str(path), *(path.relative_to(folder).as_posix() for folder in above)}
    return PatientFolder(root, frozenset(values), frozenset(paths))
