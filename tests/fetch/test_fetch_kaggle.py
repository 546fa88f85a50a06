"""Method kaggle. The kaggle package cannot be pointed at a local server, so these tests inject a
fake client object: they cover our credential checks, 401/403 handling, extraction and the
receipt, not the kaggle package's own HTTP traffic."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from servers import zip_bytes

from medlatent.core.errors import ConfigError, CredentialsError
from medlatent.fetch import fetch_source, kaggle
from medlatent.fetch.credentials import credential_status
from medlatent.fetch.receipt import write_receipt

pytest_plugins = ["servers.fixtures"]

SLUG = "rsna-breast-cancer-detection"
KEY = "0123456789abcdef0123456789abcdef"
SOURCE = {"id": "rsna_screening_mammo", "access": {"method": "kaggle", "identifier": SLUG}}


class HTTPError(Exception):
    """Shaped like requests.HTTPError as raised by the kaggle client: `.response.status_code`."""

    def __init__(self, status: int) -> None:
        super().__init__(f"{status} Client Error")
        self.response = type("Response", (), {"status_code": status})()


class FakeClient:
    def __init__(self, status: int | None = None) -> None:
        self.status, self.calls = status, []

    def competition_download_files(self, competition, path=None, quiet=True):
        self.calls.append((competition, path))
        if self.status:
            raise HTTPError(self.status)
        members = {
            "train.csv": b"site_id,patient_id,image_id,laterality,view,cancer\n1,10006,462822612,L,CC,0\n",
            "train_images/10006/462822612.dcm": b"DICM",
        }
        (Path(path) / f"{competition}.zip").write_bytes(zip_bytes(members))


def test_fake_client_download_is_extracted_and_receipted(home, tmp_path):
    raw = tmp_path / "raw"
    client = FakeClient()
    root = kaggle.fetch(SOURCE, raw, seed=0, client=client)
    receipt = write_receipt(SOURCE, root, raw)
    assert [f["path"] for f in receipt["files"]] == [f"{SLUG}/train.csv", f"{SLUG}/train_images/10006/462822612.dcm"]
    assert client.calls == [(SLUG, str(raw / "downloads"))] and not (raw / "downloads" / f"{SLUG}.zip").exists()
    kaggle.fetch(SOURCE, raw, seed=0, client=client)
    assert len(client.calls) == 1  # extracted folder present: nothing downloaded again


def test_fake_client_403_points_to_the_rules_page(home, tmp_path):
    with pytest.raises(CredentialsError, match=f"HTTP 403.*https://www.kaggle.com/competitions/{SLUG}/rules"):
        kaggle.fetch(SOURCE, tmp_path / "raw", seed=0, client=FakeClient(403))
    with pytest.raises(CredentialsError, match="HTTP 401.*KAGGLE_USERNAME/KAGGLE_KEY"):
        kaggle.fetch(SOURCE, tmp_path / "raw", seed=0, client=FakeClient(401))
    with pytest.raises(HTTPError):  # anything else is not ours to reinterpret
        kaggle.fetch(SOURCE, tmp_path / "raw", seed=0, client=FakeClient(500))


def test_missing_credentials_name_env_vars_and_kaggle_json(home, tmp_path):
    with pytest.raises(CredentialsError) as caught:
        fetch_source(SOURCE, tmp_path / "raw")
    message = str(caught.value)
    assert "KAGGLE_USERNAME" in message and "KAGGLE_KEY" in message and str(home / ".kaggle" / "kaggle.json") in message
    assert credential_status(SOURCE) == "missing"


def test_credentials_found_in_env_config_dir_and_home(home, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    assert credential_status(SOURCE) == "present"
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    config = tmp_path / "cfg"
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": "someone", "key": KEY}))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    assert credential_status(SOURCE) == "present"
    (config / "kaggle.json").write_text(json.dumps({"username": "someone"}))
    with pytest.raises(CredentialsError, match="lacks 'username' or 'key'") as caught:
        kaggle.default_client()
    assert KEY not in str(caught.value)


@pytest.mark.skipif(
    importlib.util.find_spec("kaggle") is not None, reason="the optional kaggle package is installed here"
)
def test_without_the_kaggle_package_the_error_says_what_to_install(home, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    with pytest.raises(ConfigError, match="pip install kaggle=="):
        kaggle.default_client()
