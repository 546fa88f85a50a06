"""Dataset adapters end to end: a tiny release in its published layout through the real curation.

For every CAD dataset (and MIMIC-CXR) the manifest must hold exactly the expected labels and
splits, rejected.parquet exactly the planted exclusions with their reasons, and patient keys
must come from the dataset's own patient ids; the training-only adapters with filters (EMBED,
RSNA screening, AMOS) get the same check of what they keep and drop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from adapter_fixtures import CQ500_STUDIES, GRAZ_PATIENTS, MRNET_CASES, VERSE_RELEASES, WRITERS, cmmd, vindr_mammo

from medlatent import config as mlconfig
from medlatent.core import ids
from medlatent.core.errors import InputError
from medlatent.curate.adapters import get_adapter
from medlatent.curate.run import CurationOutputs, curate

SALT = "adapter-test-salt-0"  # chosen so that every patient-split fixture fills both splits


@dataclass
class Curated:
    manifest: pd.DataFrame
    rejected: pd.DataFrame
    report: dict
    paths: dict[str, str]  # item_id -> path under the raw root


def run_curation(config: dict, source_id: str, tmp_path: Path) -> Curated:
    root = WRITERS[source_id](tmp_path / "raw")
    files = [{"path": p.relative_to(root).as_posix()} for p in sorted(root.rglob("*")) if p.is_file()]
    outputs = CurationOutputs(
        *(tmp_path / name for name in ("manifest.parquet", "rejected.parquet", "report.json", "files.parquet"))
    )
    report = curate(
        mlconfig.curate_slice(config, source_id),
        SALT,
        {"source": source_id, "root": str(root), "files": files},
        outputs,
        demo=False,
    )
    index = pd.read_parquet(outputs.files_index).dropna(subset=["item_id"])
    return Curated(
        pd.read_parquet(outputs.manifest),
        pd.read_parquet(outputs.rejected),
        report,
        dict(zip(index["item_id"], index["path"])),
    )


def counts(column: pd.Series) -> dict:
    return dict(Counter(column.dropna()))


def assert_patient_split(config: dict, source_id: str, manifest: pd.DataFrame, raw_patients: set[str]) -> None:
    """Patient keys are the salted dataset ids, and every item sits in its patient's random split."""
    assert set(manifest["patient_key"]) == {ids.patient_key(SALT, source_id, p) for p in raw_patients}
    spec = mlconfig.curate_slice(config, source_id)
    expected = manifest["patient_key"].map(lambda key: ids.patient_split(spec["seed"], key, spec["split"]["fractions"]))
    assert list(manifest["split"]) == list(expected)
    assert set(manifest["split"]) == {"train", "test"}  # with this salt both splits are populated


def test_every_adapter_named_in_config_is_registered(full_config):
    for source in full_config["sources"]:
        assert get_adapter(source["curation"]).curation is source["curation"]


def test_mimic_cxr_keeps_frontal_views_with_the_official_split(full_config, tmp_path):
    curated = run_curation(full_config, "mimic_cxr", tmp_path)
    assert len(curated.manifest) == 8 and counts(curated.manifest["view"]) == {"PA": 4, "AP": 4}
    assert counts(curated.manifest["split"]) == {"train": 4, "val": 2, "test": 2}
    assert not [c for c in curated.manifest.columns if c.startswith("label_")]
    assert set(curated.rejected["category"]) == {"filtered_view"}
    assert counts(curated.rejected["reason"]) == {
        "view LATERAL not in ['PA', 'AP']": 4,
        "view unknown not in ['PA', 'AP']": 1,
    }
    assert curated.report["metadata_files"] == 2  # the two .csv.gz tables are not candidates


def test_cmmd_labels_per_breast_and_80_20_patient_split(full_config, tmp_path):
    curated = run_curation(full_config, "cmmd", tmp_path)
    manifest = curated.manifest
    assert len(manifest) == 22
    assert counts(manifest["label_malignancy"]) == {1: 12, 0: 8}
    assert counts(manifest["label_calcification"]) == {1: 10, 0: 10}
    assert manifest["label_malignancy"].isna().sum() == 2  # the breast without a clinical row stays unlabelled
    assert list(curated.rejected["category"]) == ["unreadable"]
    assert_patient_split(full_config, "cmmd", manifest, {f"D1-{n:04d}" for n in range(1, 11)})


def test_vindr_mammo_birads_and_provided_split(full_config, tmp_path):
    curated = run_curation(full_config, "vindr_mammo", tmp_path)
    manifest = curated.manifest
    assert counts(manifest["label_birads"]) == {
        "BI-RADS 1": 7,
        "BI-RADS 2": 4,
        "BI-RADS 3": 2,
        "BI-RADS 4": 2,
        "BI-RADS 5": 4,
    }
    assert counts(manifest["split"]) == {"train": 15, "test": 4}
    assert counts(manifest["laterality"]) == {"R": 9, "L": 10}
    assert list(curated.rejected["reason"]) == ["presentation intent FOR PROCESSING not in ['FOR PRESENTATION']"]


def test_rsna_bone_age_yearly_classes_and_provided_split(full_config, tmp_path):
    curated = run_curation(full_config, "rsna_bone_age", tmp_path)
    manifest = curated.manifest
    assert counts(manifest["label_boneage_class"]) == {15: 2, 1: 1, 19: 1, 0: 1, 8: 1, 2: 2, 10: 1}
    assert counts(manifest["split"]) == {"train": 6, "test": 3}
    assert all("validation" in curated.paths[i] for i in manifest.loc[manifest["split"] == "test", "item_id"])
    assert curated.rejected.empty


def test_grazpedwri_dx_fracture_without_metal_or_cast(full_config, tmp_path):
    curated = run_curation(full_config, "grazpedwri_dx", tmp_path)
    manifest = curated.manifest
    assert len(manifest) == 13 and counts(manifest["label_fracture"]) == {1: 7, 0: 6}
    assert not {"label_metal", "label_cast", "label_fracture_visible"} & set(manifest.columns)
    assert counts(curated.rejected["category"]) == {"filtered_metal": 2, "filtered_cast": 1}
    reasons = dict(zip(curated.rejected["category"], curated.rejected["reason"]))
    assert "metal = 1" in reasons["filtered_metal"] and "cast = 1" in reasons["filtered_cast"]
    assert_patient_split(full_config, "grazpedwri_dx", manifest, set(GRAZ_PATIENTS))


def test_verse19_fracture_per_series_and_provided_split(full_config, tmp_path):
    curated = run_curation(full_config, "verse19", tmp_path)
    manifest = curated.manifest
    assert counts(manifest["label_fracture"]) == {1: 3, 0: 4}
    assert counts(manifest["split"]) == {"train": 4, "val": 2, "test": 1}
    assert (
        curated.rejected.empty and curated.report["metadata_files"] == 7 * 3 + 1
    )  # masks, centroids, previews; grades
    subjects = {subject for release in VERSE_RELEASES.values() for subject in release}
    assert set(manifest["patient_key"]) == {ids.patient_key(SALT, "verse19", s) for s in subjects}


def test_cq500_majority_fracture_one_series_per_study(full_config, tmp_path):
    curated = run_curation(full_config, "cq500", tmp_path)
    manifest = curated.manifest
    assert len(manifest) == len(CQ500_STUDIES) and counts(manifest["label_fracture"]) == {1: 3, 0: 3}
    kept = sorted(Path(curated.paths[i]).name for i in manifest["item_id"])
    assert kept == sorted(["CT 5mm", "CT Plain", "CT 0.625mm", "CT 5mm", "CT 5mm", "CT 55mm"])
    assert counts(curated.rejected["category"]) == {"filtered_other_series": 3}
    assert set(curated.rejected["n_files"]) == {4}
    assert_patient_split(full_config, "cq500", manifest, {f"CQ500-CT-{n}" for n in CQ500_STUDIES})


def test_mrnet_tears_on_every_plane_and_valid_as_test(full_config, tmp_path):
    curated = run_curation(full_config, "mrnet", tmp_path)
    manifest = curated.manifest
    assert len(manifest) == 3 * len(MRNET_CASES)
    assert counts(manifest["split"]) == {"train": 18, "test": 6}
    assert counts(manifest["label_acl"]) == {1: 9, 0: 15} and counts(manifest["label_meniscus"]) == {1: 9, 0: 15}
    assert counts(manifest["label_acl_or_meniscus"]) == {1: 15, 0: 9}
    assert curated.rejected.empty and curated.report["metadata_files"] == 6


def test_embed_keeps_standard_2d_full_field_mammograms(full_config, tmp_path):
    curated = run_curation(full_config, "embed", tmp_path)
    assert len(curated.manifest) == 2 and set(curated.manifest["view"]) == {"CC"}
    assert counts(curated.rejected["category"]) == {"filtered_not_2d": 1, "filtered_spot_mag": 1}
    assert set(curated.manifest["patient_key"]) == {ids.patient_key(SALT, "embed", p) for p in ("00000001", "00000002")}


def test_rsna_screening_mammo_patient_and_view_from_train_csv(full_config, tmp_path):
    curated = run_curation(full_config, "rsna_screening_mammo", tmp_path)
    assert counts(curated.manifest["view"]) == {"CC": 2, "MLO": 2} and curated.rejected.empty
    assert set(curated.manifest["patient_key"]) == {
        ids.patient_key(SALT, "rsna_screening_mammo", p) for p in ("10006", "10011")
    }


def test_amos_keeps_ct_and_skips_masks(full_config, tmp_path):
    curated = run_curation(full_config, "amos", tmp_path)
    assert sorted(Path(curated.paths[i]).name for i in curated.manifest["item_id"]) == [
        "amos_0001.nii.gz",
        "amos_0002.nii.gz",
    ]
    assert list(curated.rejected["category"]) == ["filtered_not_ct"] and curated.report["metadata_files"] == 1


def test_missing_label_file_names_it_and_the_fix(tmp_path):
    root = cmmd(tmp_path / "raw")
    (root / "CMMD_clinicaldata_revision.csv").unlink()
    with pytest.raises(
        InputError,
        match=r"CMMD_clinicaldata_revision\.xlsx or .*\.csv not found.*cancerimagingarchive\.net/collection/cmmd",
    ):
        get_adapter({"adapter": "cmmd"}).label_table(root)


def test_unexpected_code_in_a_label_table_is_an_error(tmp_path):
    root = vindr_mammo(tmp_path / "raw")
    path = next(root.rglob("breast-level_annotations.csv"))
    table = pd.read_csv(path)
    table.loc[0, "split"] = "validation"
    table.to_csv(path, index=False)
    with pytest.raises(InputError, match=r"column split has unexpected value\(s\) \['validation'\]"):
        get_adapter({"adapter": "vindr_mammo"}).label_table(root)


def test_curation_include_counts_other_files_as_metadata():
    """TotalSegmentator ships masks beside each ct.nii.gz: `include` keeps them out of the images."""
    adapter = get_adapter({"adapter": "generic", "include": ["**/ct.nii.gz"]})
    assert not adapter.is_metadata("s0001/ct.nii.gz")
    assert adapter.is_metadata("s0001/segmentations/liver.nii.gz")
    assert not get_adapter({"adapter": "generic"}).is_metadata("s0001/segmentations/liver.nii.gz")
