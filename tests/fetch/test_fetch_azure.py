"""Method azure_blob against a local Azure-like container (XML listing, SAS-checked GETs)."""

from __future__ import annotations

import logging
import traceback

import pytest
from servers.azure import azure_container
from servers.host import FakeHost

from medlatent.core.errors import CredentialsError, InputError
from medlatent.fetch import fetch_source
from medlatent.fetch.credentials import credential_status
from medlatent.fetch.receipt import RECEIPT

pytest_plugins = ["servers.fixtures"]

SIG = "VerySecretSignature%2Bxyz"
BLOBS = {
    "MRNet-v1.0/train-acl.csv": b"0000,0\n0001,1\n",
    "MRNet-v1.0/train/sagittal/0000.npy": b"\x93NUMPY" + bytes(3000),
    "MRNet-v1.0/train/sagittal/0001.npy": b"\x93NUMPY" + bytes(4000),
    "MRNet-v1.0/valid/sagittal/1130.npy": b"\x93NUMPY" + bytes(100),
    "other/readme.txt": b"not part of the prefix",
}


def sas(container_url: str, expiry: str = "2999-01-01T00:00:00Z", sig: str = SIG) -> str:
    return f"{container_url}?sv=2021-08-06&se={expiry}&sr=c&sp=rl&sig={sig}"


def source(**access) -> dict:
    return {
        "id": "mrnet",
        "access": {"method": "azure_blob", "identifier": "MRNet-v1.0", "sas_env": "AIMI_SAS_URL", **access},
    }


def secret_free(*texts: str) -> bool:
    return not any(SIG in t or "VerySecretSignature" in t for t in texts)


def test_container_listed_over_pages_and_fetched(host, tmp_path, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)  # urllib3 logs request lines at DEBUG
    monkeypatch.setenv("AIMI_SAS_URL", sas(azure_container(host, "mrnet", BLOBS, SIG)))
    host.drop_once.add("/mrnet/MRNet-v1.0/train/sagittal/0001.npy")
    receipt = fetch_source(source(prefix="MRNet-v1.0"), tmp_path / "raw")
    assert [f["path"] for f in receipt["files"]] == [
        "train-acl.csv",
        "train/sagittal/0000.npy",
        "train/sagittal/0001.npy",
        "valid/sagittal/1130.npy",
    ]
    assert len(host.requests_for("/mrnet")) == 2  # page size 2, four blobs under the prefix
    assert host.requests_for("/mrnet")[1].query["marker"] == "2"
    assert (tmp_path / "raw" / "files" / "train/sagittal/0001.npy").read_bytes() == BLOBS[
        "MRNet-v1.0/train/sagittal/0001.npy"
    ]
    assert secret_free((tmp_path / "raw" / RECEIPT).read_text(), caplog.text, capsys.readouterr().err)


def test_missing_sas_names_the_variable(host, tmp_path):
    with pytest.raises(CredentialsError, match="set the environment variable AIMI_SAS_URL_BONE_AGE.*stanfordaimi"):
        fetch_source(source(sas_env="AIMI_SAS_URL_BONE_AGE"), tmp_path / "raw")
    assert credential_status(source(sas_env="AIMI_SAS_URL_BONE_AGE")) == "missing"
    assert not host.seen


def test_expired_sas_fails_before_any_request_without_showing_it(host, tmp_path, monkeypatch):
    monkeypatch.setenv("AIMI_SAS_URL", sas(azure_container(host, "mrnet", BLOBS, SIG), expiry="2020-01-01T00:00:00Z"))
    with pytest.raises(CredentialsError) as caught:
        fetch_source(source(), tmp_path / "raw")
    assert "expired on 2020-01-01" in str(caught.value) and "AIMI_SAS_URL" in str(caught.value)
    assert secret_free(str(caught.value), repr(caught.value)) and not host.seen
    assert credential_status(source()) == "missing"


def test_refused_sas_is_a_credentials_error_without_the_token(host, tmp_path, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("AIMI_SAS_URL", sas(azure_container(host, "mrnet", BLOBS, "the-valid-signature")))
    assert credential_status(source()) == "present"
    with pytest.raises(CredentialsError) as caught:
        fetch_source(source(), tmp_path / "raw")
    assert "HTTP 403" in str(caught.value) and "AIMI_SAS_URL" in str(caught.value)
    assert secret_free("".join(traceback.format_exception(caught.value)), caplog.text, capsys.readouterr().err)


def test_unreachable_host_error_hides_the_query(home, tmp_path, monkeypatch):
    with FakeHost() as dead:
        url = dead.url
    monkeypatch.setenv("AIMI_SAS_URL", sas(url + "/mrnet"))
    with pytest.raises(InputError) as caught:
        fetch_source(source(), tmp_path / "raw")
    assert "request failed" in str(caught.value)
    assert secret_free("".join(traceback.format_exception(caught.value)))  # what a log of the crash would show
