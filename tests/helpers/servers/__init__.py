"""Local stand-ins for the data hosts, bound to 127.0.0.1 on a free port, for the fetch tests.

Each module speaks just enough of one host's protocol (same URLs, JSON/XML/HTML shapes,
status codes) for MedLatent's fetchers to run unchanged against it. `clean_env` keeps a
test from reading the developer's real credentials or proxy settings.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

ENV_VARS = (
    "PHYSIONET_USER",
    "PHYSIONET_PASSWORD",
    "NETRC",
    "KAGGLE_USERNAME",
    "KAGGLE_KEY",
    "KAGGLE_API_TOKEN",
    "KAGGLE_CONFIG_DIR",
    "AIMI_SAS_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
)


def clean_env(monkeypatch, home: Path) -> Path:
    """Unset every credential and proxy variable and point HOME at an empty folder; returns it."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    return home


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A ZIP archive in memory holding `members` {name: content}, names written as given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buffer.getvalue()
