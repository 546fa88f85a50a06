"""Methods zenodo and figshare against local servers shaped like their record/article APIs."""

from __future__ import annotations

import hashlib
import os

import pytest
from servers import zip_bytes
from servers.records import figshare_article, zenodo_record

from medlatent.core.errors import CredentialsError, InputError
from medlatent.fetch import fetch_source
from medlatent.fetch.receipt import RECEIPT

pytest_plugins = ["servers.fixtures"]


def dataset_zip() -> bytes:
    return zip_bytes(
        {
            f"{case}/{name}": os.urandom(700_000) if name == "ct.nii.gz" else case.encode()
            for case in ("s0000", "s0001")
            for name in ("ct.nii.gz", "segmentations/liver.nii.gz")
        }
    )


def test_zenodo_record_fetched_md5_checked_extracted(host, tmp_path):
    archive, meta = dataset_zip(), b"image_id,split\ns0000,train\n"
    zenodo_record(host, "10047292", {"Totalsegmentator_dataset_v201.zip": archive, "meta.csv": meta})
    host.drop_once.add("/api/records/10047292/files/Totalsegmentator_dataset_v201.zip/content")
    source = {
        "id": "ts",
        "access": {"method": "zenodo", "identifier": "10047292", "api": host.url + "/api", "extract": True},
    }
    receipt = fetch_source(source, tmp_path / "raw")
    assert receipt["identifier"] == "10047292" and receipt["method"] == "zenodo"
    assert [f["path"] for f in receipt["files"]] == [
        "Totalsegmentator_dataset_v201/s0000/ct.nii.gz",
        "Totalsegmentator_dataset_v201/s0000/segmentations/liver.nii.gz",
        "Totalsegmentator_dataset_v201/s0001/ct.nii.gz",
        "Totalsegmentator_dataset_v201/s0001/segmentations/liver.nii.gz",
        "meta.csv",
    ]
    assert receipt["files"][-1]["sha256"] == hashlib.sha256(meta).hexdigest()
    resumed = host.requests_for("/api/records/10047292/files/Totalsegmentator_dataset_v201.zip/content")[1]
    assert resumed.headers["Range"].startswith("bytes=") and resumed.headers["Range"] != "bytes=0-"


def test_zenodo_md5_mismatch_leaves_nothing(host, tmp_path):
    zenodo_record(host, "7262581", {"amos22.zip": dataset_zip()}, md5={"amos22.zip": "f" * 32})
    source = {
        "id": "amos",
        "access": {"method": "zenodo", "identifier": "7262581", "api": host.url + "/api", "extract": True},
    }
    with pytest.raises(InputError, match=r"amos22.zip.*md5 checksum .* != expected f{32}"):
        fetch_source(source, tmp_path / "raw")
    assert not list((tmp_path / "raw").rglob("amos22*")) and not (tmp_path / "raw" / RECEIPT).exists()


def test_zenodo_include_selects_files_and_unknown_record_is_404(host, tmp_path):
    zenodo_record(host, "1", {"a.csv": b"a", "b.zip": b"not needed"})
    source = {
        "id": "z",
        "access": {"method": "zenodo", "identifier": "1", "api": host.url + "/api", "include": ["*.csv"]},
    }
    assert [f["path"] for f in fetch_source(source, tmp_path / "raw")["files"]] == ["a.csv"]
    with pytest.raises(InputError, match="zenodo record 2.*404"):
        fetch_source({"id": "z", "access": {**source["access"], "identifier": "2"}}, tmp_path / "raw2")


def test_zenodo_restricted_record_is_a_credentials_error(host, tmp_path):
    host.add_status("/api/records/3", 403)
    with pytest.raises(CredentialsError, match="HTTP 403.*request access"):
        fetch_source(
            {"id": "z", "access": {"method": "zenodo", "identifier": "3", "api": host.url + "/api"}}, tmp_path / "raw"
        )


def test_figshare_article_paged_listing_md5_and_extraction(host, tmp_path, monkeypatch):
    monkeypatch.setattr("medlatent.fetch.figshare.PAGE_SIZE", 2)  # force several pages
    files = {
        "dataset.csv": b"filestem,fracture_visible,metal,cast\n0001_1,1,0,0\n",
        "images_part1.zip": dataset_zip(),
        "yolov5.zip": dataset_zip(),
    }
    figshare_article(host, "14825193", files)
    source = {
        "id": "graz",
        "access": {"method": "figshare", "identifier": "14825193", "api": host.url + "/v2", "extract": True},
    }
    receipt = fetch_source(source, tmp_path / "raw")
    paths = [f["path"] for f in receipt["files"]]
    assert paths[0] == "dataset.csv" and len(paths) == 9 and paths[-1] == "yolov5/s0001/segmentations/liver.nii.gz"
    pages = [s.query["page"] for s in host.requests_for("/v2/articles/14825193/files")]
    assert pages == ["1", "2"]


def test_figshare_md5_mismatch(host, tmp_path):
    figshare_article(host, "5", {"dataset.csv": b"x"}, md5={"dataset.csv": "0" * 32})
    with pytest.raises(InputError, match="dataset.csv.*md5"):
        fetch_source(
            {"id": "g", "access": {"method": "figshare", "identifier": "5", "api": host.url + "/v2"}}, tmp_path / "raw"
        )
    assert not (tmp_path / "raw" / "files" / "dataset.csv").exists()
