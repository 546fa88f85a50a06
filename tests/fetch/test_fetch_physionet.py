"""Method physionet against a local basic-auth server with PhysioNet-style index pages."""

from __future__ import annotations

import hashlib

import pytest
from servers.host import FakeHost
from servers.physionet import physionet_project

from medlatent.core.errors import CredentialsError, InputError
from medlatent.fetch import fetch_source
from medlatent.fetch.credentials import credential_status
from medlatent.fetch.receipt import RECEIPT

pytest_plugins = ["servers.fixtures"]

USER, PASSWORD = "reader", "s3cret-Pa55word"
SLUG = "vindr-mammo/1.0.0"
FILES = {
    "metadata.csv": b"image_id,view\n",
    "breast-level_annotations.csv": b"study_id,breast_birads,split\n",
    "images/st1/im1.dicom": b"DICM" * 5000,
    "images/st1/im2.dicom": b"DICM2" * 10,
    "images/st 2/im3.dicom": b"space in folder name",
}


def source(url: str, **access) -> dict:
    return {"id": "vindr_mammo", "access": {"method": "physionet", "identifier": SLUG, "url": url, **access}}


@pytest.mark.parametrize("sums", [True, False], ids=["listed-by-SHA256SUMS", "crawled-index-pages"])
def test_project_fetched_with_env_credentials(home, tmp_path, monkeypatch, sums):
    monkeypatch.setenv("PHYSIONET_USER", USER)
    monkeypatch.setenv("PHYSIONET_PASSWORD", PASSWORD)
    with FakeHost(auth=(USER, PASSWORD)) as host:
        url = physionet_project(host, SLUG, FILES, sums=sums)
        receipt = fetch_source(source(url), tmp_path / "raw")
        crawled = {s.path for s in host.seen if s.path.endswith("/")}
    expected = sorted(FILES) + (["SHA256SUMS.txt"] if sums else [])
    assert [f["path"] for f in receipt["files"]] == sorted(expected)
    assert (
        receipt["files"][[f["path"] for f in receipt["files"]].index("images/st1/im1.dicom")]["sha256"]
        == hashlib.sha256(FILES["images/st1/im1.dicom"]).hexdigest()
    )
    # With SHA256SUMS.txt only the top index is read; without it every folder's index is.
    assert crawled == (
        {f"/files/{SLUG}/"}
        if sums
        else {f"/files/{SLUG}/", f"/files/{SLUG}/images/", f"/files/{SLUG}/images/st1/", f"/files/{SLUG}/images/st 2/"}
    )
    assert PASSWORD not in (tmp_path / "raw" / RECEIPT).read_text()


def test_netrc_credentials_and_include_subset(home, tmp_path):
    netrc = home / ".netrc"
    netrc.write_text(f"machine physionet.org login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    with FakeHost(auth=(USER, PASSWORD)) as host:
        url = physionet_project(host, SLUG, FILES)
        receipt = fetch_source(source(url, include=["*.csv"]), tmp_path / "raw")
    assert [f["path"] for f in receipt["files"]] == ["SHA256SUMS.txt", "breast-level_annotations.csv", "metadata.csv"]


def test_corrupt_file_caught_by_sha256sums(home, tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSIONET_USER", USER)
    monkeypatch.setenv("PHYSIONET_PASSWORD", PASSWORD)
    with FakeHost(auth=(USER, PASSWORD)) as host:
        url = physionet_project(host, SLUG, FILES)
        host.add_file(f"/files/{SLUG}/metadata.csv", b"changed after the checksums were made")
        with pytest.raises(InputError, match="metadata.csv.*sha256 checksum"):
            fetch_source(source(url), tmp_path / "raw")
    assert not (tmp_path / "raw" / "files" / "metadata.csv").exists() and not (tmp_path / "raw" / RECEIPT).exists()


def test_missing_credentials_name_the_variables_and_netrc(home, tmp_path):
    with pytest.raises(CredentialsError) as caught:
        fetch_source(source("http://127.0.0.1:9/files/x/"), tmp_path / "raw")
    message = str(caught.value)
    assert (
        "PHYSIONET_USER" in message
        and "PHYSIONET_PASSWORD" in message
        and "machine physionet.org" in message
        and ".netrc" in message
    )
    assert credential_status(source("u")) == "missing"


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_name_the_dua_and_never_the_password(home, tmp_path, monkeypatch, caplog, capsys, status):
    monkeypatch.setenv("PHYSIONET_USER", USER)
    monkeypatch.setenv("PHYSIONET_PASSWORD", PASSWORD)
    assert credential_status(source("u")) == "present"
    with FakeHost(auth=(USER, "the-real-password") if status == 401 else None) as host:
        url = physionet_project(host, SLUG, FILES)
        if status == 403:
            host.add_status(f"/files/{SLUG}/", 403)
        with pytest.raises(CredentialsError) as caught:
            fetch_source(source(url), tmp_path / "raw")
    message = str(caught.value)
    assert f"HTTP {status}" in message and "PHYSIONET_USER" in message and f"DUA/credentialing for {SLUG}" in message
    assert f"https://physionet.org/content/{SLUG}/" in message
    assert PASSWORD not in message + caplog.text + capsys.readouterr().err
