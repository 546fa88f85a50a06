"""Method `manual`: datasets obtainable only by application; the user places them on disk.

The fetch checks that `access.path` (default data/manual/<id>) holds at least one file
matching any of the `access.expect` glob patterns, and otherwise stops with the steps to
obtain the data: where to apply, what to download, where to put it. Steps come from
docs/sources.md (hosts and access routes recorded there); a source not listed here
gets generic steps built from its `access.url`, or its own `access.steps` list.
"""

from __future__ import annotations

from pathlib import Path

from medlatent.core.errors import CredentialsError

STEPS: dict[str, list[str]] = {
    "adni": [
        "Apply for ADNI data access at https://adni.loni.usc.edu/data-samples/access-data/ "
        "(online application + ADNI Data Use Agreement).",
        "After approval, log in to https://ida.loni.usc.edu -> Search & Download -> Image Collections, "
        "build a collection of the T2-weighted head MRI series and download it as NIfTI.",
        "Unzip the download into {path} (any folder structure; files named *.nii.gz).",
    ],
    "habs": [
        "Request the data at https://habs.mgh.harvard.edu/researchers/request-data, "
        "selecting the MRI imaging modalities.",
        "On approval you receive personalised download links by email; "
        "they expire, so download everything (>100 GB) promptly.",
        "Unpack the MRI volumes into {path} as NIfTI (*.nii or *.nii.gz).",
    ],
    "a4": [
        "Register and accept the A4/LEARN data use agreement at https://www.a4studydata.org/ "
        "(imaging is distributed via LONI IDA, https://ida.loni.usc.edu; route unverified).",
        "Download the T2-weighted MRI scans (NIfTI with BIDS-style JSON sidecars).",
        "Unpack them into {path} (files named *.nii.gz).",
    ],
    "oasis3": [
        "Apply at https://www.oasis-brains.org and accept the OASIS data use terms; "
        "create a NITRC-IR account (https://nitrc.org/ir) and ask to be added to project OASIS3.",
        "Download the T2w scans, e.g. with NrgXnat/oasis-scripts: "
        "download_oasis_scans.sh <experiments.csv> <dir> <nitrc_user> T2w "
        "(uses https://nitrc.org/ir/data/archive/projects/OASIS3/...).",
        "Put the BIDS NIfTI files (e.g. sub-OAS30001_ses-d0757_acq-TSE_T2w.nii.gz) into {path}.",
    ],
    "inbreast": [
        "Request INbreast from its authors (INESC TEC / University of Porto; "
        "paper https://doi.org/10.1016/j.acra.2011.09.014); the current official channel is unverified.",
        "Download the DICOM images (and the XML annotations).",
        "Put the *.dcm files into {path}.",
    ],
    "csaw_cc": [
        "Request CSAW-CC through the Swedish National Data Service / DORIS: "
        "https://snd.se/en/catalogue/dataset/2021-204-1 "
        "(approved by the Karolinska Institutet data access unit). Note: 'Sorkhei 2021' is CSAW-M "
        "(doi:10.17044/scilifelab.14687271); confirm which release you need.",
        "Download the DICOM mammograms and CSAW-CC_breast_cancer_screening_data.csv.",
        "Put the *.dcm files (and the CSV) into {path}.",
    ],
    "candid_ptx": [
        "Apply for CANDID-PTX under its data use agreement via https://doi.org/10.17608/k6.auckland.14173982 "
        "(University of Auckland). Since 2024 it is likely not available outside Health New Zealand.",
        "Download the DICOM chest radiographs (and the annotation files).",
        "Put the *.dcm files into {path}.",
    ],
    "stanford_aimi_chest_ct_2024": [
        "The dataset behind 'Stanford AIMI 2024 chest CT' is unverified (candidates: INSPECT, COCA, RadFusion); "
        "check the MedVAE reference list first.",
        "Register at https://stanfordaimi.azurewebsites.net, accept that dataset's research use agreement "
        "and download it with the SAS URL: azcopy copy \"<SAS URL>\" <dir> --recursive.",
        "Put the CT volumes (*.nii.gz or *.dcm) into {path}.",
    ],
}


def manual_path(source: dict) -> Path:
    return Path(source["access"].get("path") or f"data/manual/{source['id']}")


def steps(source: dict, path: Path) -> list[str]:
    """The steps to obtain `source` and place it at `path`."""
    access = source["access"]
    template = (
        access.get("steps")
        or STEPS.get(source["id"])
        or [
            f"Obtain {access.get('identifier') or source['id']} from {access.get('url', 'its host')} "
            "(see its access conditions).",
            "Download the image files.",
            "Put them into {path}.",
        ]
    )
    return [line.format(path=path) for line in template]


def has_expected(root: Path, patterns: list[str]) -> bool:
    """True if at least one file under `root` matches any of `patterns` (globs relative to root)."""
    return any(p.is_file() for pattern in patterns for p in root.glob(pattern))


def fetch(source: dict, raw_dir: Path, *, seed: int) -> Path:
    root = manual_path(source)
    patterns = source["access"].get("expect") or ["**/*"]
    if root.is_dir() and has_expected(root, patterns):
        return root
    found = "is empty or lacks them" if root.is_dir() else "does not exist"
    numbered = "\n".join(f"  {k}. {line}" for k, line in enumerate(steps(source, root), 1))
    raise CredentialsError(
        f"source {source['id']!r} (method manual) cannot be downloaded by script: expected files matching "
        f"{' or '.join(patterns)} under {root}, which {found}.\nTo obtain it:\n{numbered}\n"
        f"Then re-run (or set access.path of {source['id']!r} to where the data already is)."
    )
