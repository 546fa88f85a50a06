"""Patient identifiers never leave data/raw: a patient folder with identifiers in every DICOM
attribute, UID, private tag, folder and file name, run for real by Snakemake as two `local`
sources (2D images, a 3D series) through curation, normalization, latent extraction and
indexing with tiny models. Every output under data/ (but data/raw), results/ and logs/ is
searched for each value in every form (`phi_search`); planting one value in one output of
each kind shows the search finds it there.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from phi_corpus import ACCESSION, BIRTH_DATE, CT, INSTITUTION, NAME, PATIENT_ID, XRAY, write_patient_folder
from phi_search import needles, search
from workflow_helpers import REPO, snakemake

from medlatent.curate.salt import SALT_FILE
from medlatent.models.registry import build_medvae, save_model

pytestmark = pytest.mark.workflow

#: Random-initialised models at test width, imported as released weights are (no training).
TINY = {"latent_channels": 1, "ch": 8, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "norm_groups": 4}
MODELS = {2: {"id": "tiny2d", "dims": 2, "f": 16, **TINY}, 3: {"id": "tiny3d", "dims": 3, "f": 64, **TINY}}
XRAY_SOURCE, CT_SOURCE = "ward_xrays", "ward_ct"
#: source id -> (its folder in the patient folder, dims, modality, normalize overrides, items)
SOURCES = {
    XRAY_SOURCE: (XRAY, 2, "xray", {"size": [32, 32]}, 2),  # two images
    CT_SOURCE: (CT, 3, "ct", {"spacing": None, "size": [16, 16, 16]}, 1),  # one series of four slices
}
#: What is not searched: the raw data with its files index and salt, and Snakemake's own
#: records (they hold the fetch rule's params, so access.path: the patient folder's name).
NOT_SEARCHED = ("data/raw", ".snakemake")


def workflow_config(patient, weights: dict[int, str]) -> dict:
    sources = [
        {
            "id": source,
            "modality": modality,
            "dims": dims,
            "role": "cad",
            "access": {"method": "local", "path": str(patient.root / folder)},
            "license": {"name": "in-house", "share_derived": False},
            "split": {"fractions": {"train": 1.0, "val": 0.0, "test": 0.0}},
            "shards": {"train": 1},
            "normalize": normalize,
        }
        for source, (folder, dims, modality, normalize, _) in SOURCES.items()
    ]
    models = [{**MODELS[dims], "weights": weights[dims]} for dims in sorted(MODELS)]
    return {"sources": sources, "models": models, "cad_tasks": []}


@pytest.fixture(scope="module")
def phi_run(tmp_path_factory):
    """(work folder, needles) after `snakemake latents` on the patient folder."""
    root = tmp_path_factory.mktemp("phi")
    patient = write_patient_folder(root / "archive")
    weights = {}
    for dims, spec in MODELS.items():
        weights[dims] = str(root / "weights" / f"{spec['id']}.pt")
        save_model(weights[dims], build_medvae(spec, is_demo=True), embedder="demo", steps=0)
    (root / "phi.yaml").write_text(yaml.safe_dump(workflow_config(patient, weights)))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MEDLATENT_SALT", raising=False)  # the per-installation salt file, as a user gets it
        snakemake(root / "run", "latents", configfile=[REPO / "config.yaml", root / "phi.yaml"])
    return root / "run", needles(patient.values, patient.paths)


def test_no_identifier_leaves_data_raw(phi_run):
    workdir, phi = phi_run
    assert (workdir / "data" / "raw" / SALT_FILE).exists()
    for source, (_, dims, _, _, items) in SOURCES.items():  # every file went the whole way
        index = json.loads((workdir / "data" / "latents" / MODELS[dims]["id"] / source / "index.json").read_text())
        assert index["splits"]["train"] == items
    assert search(workdir, phi, skip=NOT_SEARCHED) == []


def plant_parquet_cell(workdir: Path, value: str) -> Path:
    path = workdir / "data" / "curated" / XRAY_SOURCE / "manifest.parquet"
    table = pd.read_parquet(path)
    table.loc[0, "view"] = value
    table.to_parquet(path, index=False)
    return path


def plant_hdf5_attribute(workdir: Path, value: str) -> Path:
    path = workdir / "data" / "normalized" / CT_SOURCE / "train-000.h5"
    with h5py.File(path, "a") as handle:
        item = handle["items"][next(iter(handle["items"]))]
        item.attrs["meta"] = json.dumps({**json.loads(item.attrs["meta"]), "operator": value})  # escaped
    return path


def plant_hdf5_dataset_name(workdir: Path, value: str) -> Path:
    path = workdir / "data" / "normalized" / XRAY_SOURCE / "train-000.h5"
    with h5py.File(path, "a") as handle:
        handle["items"].create_dataset(value, data=np.zeros(4, np.float32))
    return path


def plant_tar_member_name(workdir: Path, value: str) -> Path:
    path = workdir / "data" / "latents" / MODELS[3]["id"] / CT_SOURCE / "train-000.tar"
    with tarfile.open(path, "a") as archive:
        member = tarfile.TarInfo(f"{value}.latent.npy")
        member.size = 4
        archive.addfile(member, io.BytesIO(b"\0" * 4))
    return path


def plant_json(workdir: Path, value: str) -> Path:
    path = workdir / "data" / "latents" / MODELS[2]["id"] / XRAY_SOURCE / "index.json"
    index = json.loads(path.read_text())
    path.write_text(json.dumps({**index, "note": value}))  # ensure_ascii: non-ASCII is escaped
    return path


def plant_card(workdir: Path, value: str) -> Path:
    path = workdir / "data" / "latents" / MODELS[2]["id"] / XRAY_SOURCE / "README.md"
    path.write_text(path.read_text() + f"\nAcquired at {value}.\n")
    return path


def old_item_id(relative_path: str) -> str:
    """An item id as made before ids were salted: the unsalted sha1 of the path under the source folder."""
    return f"{XRAY_SOURCE}_" + hashlib.sha1(relative_path.encode()).hexdigest()[:16]


#: (planter, value, where in the file the search must see it)
PLANTED = [
    (plant_parquet_cell, PATIENT_ID, "manifest.parquet [0, view]: text"),
    (plant_hdf5_attribute, INSTITUTION, "attribute meta (JSON unescaped): text"),  # escaped in the item's meta
    (plant_hdf5_dataset_name, old_item_id(f"QUIXWORTH_ZELDA_{BIRTH_DATE}_chest.dcm"), "h5 node name: sha1 hex of"),
    (plant_tar_member_name, ACCESSION, "tar member name: text"),
    (plant_json, INSTITUTION, "index.json (JSON unescaped): text"),
    (plant_card, NAME, "README.md: text"),
]


@pytest.mark.parametrize(
    "plant,value,seen", PLANTED, ids=[plant.__name__.removeprefix("plant_") for plant, *_ in PLANTED]
)
def test_the_search_finds_a_value_planted_in_any_kind_of_output(phi_run, tmp_path, plant, value, seen):
    workdir, phi = phi_run
    copy = shutil.copytree(workdir, tmp_path / "run")
    planted = plant(copy, value).relative_to(copy).as_posix()
    findings = search(copy, phi, skip=NOT_SEARCHED)
    assert any(seen in finding for finding in findings), findings
    assert all(finding.startswith(planted) for finding in findings)
