"""Method tcia against a local NBIA-like API (getSeries JSON, getImage ZIP per series)."""

from __future__ import annotations

import pytest
from servers.nbia import BASE, nbia

from medlatent.core.errors import InputError
from medlatent.fetch import fetch_source

pytest_plugins = ["servers.fixtures"]

SERIES = {
    "1.2.826.0.1.3680043.2.1": {
        "modality": "MG",
        "files": {"1-1.dcm": b"L-CC" * 100, "1-2.dcm": b"L-MLO" * 100, "LICENSE": b"CC BY 4.0"},
    },
    "1.2.826.0.1.3680043.2.2": {"modality": "MG", "files": {"1-1.dcm": b"R-CC" * 100}},
    "1.2.826.0.1.3680043.2.3": {"modality": "CR", "files": {"1-1.dcm": b"scout"}},
}


def source(api: str, **access) -> dict:
    return {"id": "cmmd", "access": {"method": "tcia", "identifier": "CMMD", "api": api, **access}}


def test_collection_fetched_per_series_with_modality_filter(host, tmp_path):
    api = nbia(host, "CMMD", SERIES)
    receipt = fetch_source(source(api, modality_filter="MG"), tmp_path / "raw")
    assert [f["path"] for f in receipt["files"]] == [
        "1.2.826.0.1.3680043.2.1/1-1.dcm",
        "1.2.826.0.1.3680043.2.1/1-2.dcm",
        "1.2.826.0.1.3680043.2.1/LICENSE",
        "1.2.826.0.1.3680043.2.2/1-1.dcm",
    ]
    assert host.requests_for(f"{BASE}/getSeries")[0].query == {"Collection": "CMMD", "Modality": "MG"}
    assert sorted(s.query["SeriesInstanceUID"] for s in host.requests_for(f"{BASE}/getImage")) == [
        "1.2.826.0.1.3680043.2.1",
        "1.2.826.0.1.3680043.2.2",
    ]


def test_finished_series_are_skipped_on_resume(host, tmp_path):
    api = nbia(host, "CMMD", SERIES)
    done = tmp_path / "raw" / "files" / "1.2.826.0.1.3680043.2.1"
    done.mkdir(parents=True)
    (done / "1-1.dcm").write_bytes(b"kept from the earlier run")
    host.drop_once.add(f"{BASE}/getImage")  # and the next series' ZIP is cut once
    receipt = fetch_source(source(api), tmp_path / "raw")
    fetched = [s.query["SeriesInstanceUID"] for s in host.requests_for(f"{BASE}/getImage")]
    assert "1.2.826.0.1.3680043.2.1" not in fetched and fetched.count("1.2.826.0.1.3680043.2.2") == 2
    assert len(receipt["files"]) == 3 and (done / "1-1.dcm").read_bytes() == b"kept from the earlier run"


def test_image_count_mismatch_rejects_the_series(host, tmp_path):
    api = nbia(host, "CMMD", SERIES, image_count={"1.2.826.0.1.3680043.2.2": 5})
    with pytest.raises(InputError, match="1 DICOM files, NBIA lists ImageCount=5"):
        fetch_source(source(api, modality_filter="MG"), tmp_path / "raw")
    assert not (tmp_path / "raw" / "files" / "1.2.826.0.1.3680043.2.2").exists()


def test_malicious_series_zip_is_refused(host, tmp_path):
    api = nbia(host, "CMMD", {"9.9": {"modality": "MG", "files": {"../../../escape.dcm": b"evil"}}})
    with pytest.raises(InputError, match=r"9\.9\.zip.*'\.\./\.\./\.\./escape\.dcm'"):
        fetch_source(source(api), tmp_path / "raw")
    assert not list(tmp_path.rglob("escape.dcm"))


def test_unknown_collection_says_what_to_check(host, tmp_path):
    api = nbia(host, "CMMD", SERIES)
    with pytest.raises(InputError, match="no series found.*access.identifier"):
        fetch_source({"id": "x", "access": {"method": "tcia", "identifier": "NOPE", "api": api}}, tmp_path / "raw")
