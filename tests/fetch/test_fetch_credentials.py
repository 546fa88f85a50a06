"""Credential lookups: where each kind is found, what the error names, and that values never show."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from medlatent.core.errors import CredentialsError
from medlatent.fetch import credentials

pytest_plugins = ["servers.fixtures"]

PASSWORD = "hunter2-very-secret"
SAS = "https://acct.blob.core.windows.net/boneagexray?sv=2021-08-06&se=2030-05-01T00:00:00Z&sp=rl&sig=SIGNATUREVALUE"


def test_env_wins_over_netrc_and_reprs_hide_secrets(home, monkeypatch):
    (home / ".netrc").write_text(f"machine physionet.org login fromnetrc password {PASSWORD}\n")
    assert credentials.physionet().user == "fromnetrc"
    monkeypatch.setenv("PHYSIONET_USER", "fromenv")
    monkeypatch.setenv("PHYSIONET_PASSWORD", PASSWORD)
    auth = credentials.physionet()
    assert auth.user == "fromenv" and PASSWORD not in repr(auth)


def test_netrc_without_physionet_entry_and_netrc_variable(home, monkeypatch, tmp_path):
    other = tmp_path / "other.netrc"
    other.write_text(f"machine example.org login x password {PASSWORD}\n")
    monkeypatch.setenv("NETRC", str(other))
    with pytest.raises(CredentialsError, match=f"PHYSIONET_USER and PHYSIONET_PASSWORD.*{other}") as caught:
        credentials.physionet()
    assert PASSWORD not in str(caught.value)


def test_sas_parsed_expiry_checked_and_hidden(home, monkeypatch):
    monkeypatch.setenv("AIMI_SAS_URL_BONE_AGE", SAS)
    sas = credentials.azure_sas("AIMI_SAS_URL_BONE_AGE", now=datetime(2029, 1, 1, tzinfo=UTC))
    assert sas.base == "https://acct.blob.core.windows.net/boneagexray" and sas.expires.year == 2030
    assert "SIGNATUREVALUE" not in repr(sas)
    with pytest.raises(CredentialsError, match="expired on 2030-05-01") as caught:
        credentials.azure_sas("AIMI_SAS_URL_BONE_AGE", now=datetime(2031, 1, 1, tzinfo=UTC))
    assert "SIGNATUREVALUE" not in str(caught.value)
    monkeypatch.setenv("AIMI_SAS_URL_BONE_AGE", "not a url")
    with pytest.raises(CredentialsError, match="not a container SAS URL"):
        credentials.azure_sas("AIMI_SAS_URL_BONE_AGE")


def test_credential_status_never_returns_the_value(home, monkeypatch):
    monkeypatch.setenv("AIMI_SAS_URL", SAS)
    monkeypatch.setenv("KAGGLE_API_TOKEN", "token-value")
    statuses = {
        m: credentials.credential_status({"access": {"method": m}})
        for m in ("azure_blob", "kaggle", "physionet", "https")
    }
    assert statuses == {"azure_blob": "present", "kaggle": "present", "physionet": "missing", "https": "not needed"}
