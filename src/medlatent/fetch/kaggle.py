"""Method `kaggle`: a Kaggle competition's files (RSNA Screening Mammography), via the kaggle package.

Credentials are checked first (credentials.kaggle: KAGGLE_USERNAME/KAGGLE_KEY,
KAGGLE_API_TOKEN, or kaggle.json in KAGGLE_CONFIG_DIR or ~/.kaggle); the kaggle package then
reads them itself. It is optional (`pip install kaggle==2.2.5`) and imported only here.
The download is `<slug>.zip`, extracted safely into files/<slug>/; an existing folder means
done. Kaggle answers 403 when the account has not accepted the competition rules.

The client is a parameter (anything with `competition_download_files(slug, path=, quiet=)`)
because the kaggle package cannot be pointed at a local server; tests pass a fake client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from medlatent.core.errors import ConfigError, CredentialsError, InputError
from medlatent.fetch import credentials
from medlatent.fetch.archive import extract

PACKAGE = "kaggle==2.2.5"


class Client(Protocol):
    def competition_download_files(self, competition: str, path: str | None = None, quiet: bool = True) -> None: ...


def default_client() -> Client:
    """An authenticated kaggle.KaggleApi; CredentialsError or ConfigError says what is missing."""
    credentials.kaggle()
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi  # not `import kaggle`: that authenticates at import
    except ImportError:
        raise ConfigError(f"access.method kaggle needs the kaggle package: pip install {PACKAGE}") from None
    api = KaggleApi()
    api.authenticate()
    return api


def http_status(exc: BaseException) -> int | None:
    """The HTTP status in an exception from the kaggle client (its types differ across versions)."""
    status = getattr(exc, "status", None) or getattr(getattr(exc, "response", None), "status_code", None)
    return int(status) if status else None


def fetch(source: dict, raw_dir: Path, *, seed: int, client: Client | None = None) -> Path:
    slug = source["access"]["identifier"]
    files = raw_dir / "files"
    if (files / slug).is_dir():
        return files
    client = client or default_client()
    downloads = raw_dir / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    try:
        client.competition_download_files(slug, path=str(downloads), quiet=False)
    except Exception as exc:  # the client's exception types vary by version; only the status matters here
        status = http_status(exc)
        if status == 403:
            raise CredentialsError(
                f"Kaggle refused the files of competition {slug!r} (HTTP 403): accept the competition rules at "
                f"https://www.kaggle.com/competitions/{slug}/rules "
                "with the account whose API key is in use, then re-run"
            ) from None
        if status == 401:
            raise CredentialsError(
                "Kaggle rejected the API credentials (HTTP 401): "
                "renew the token at https://www.kaggle.com/settings and "
                f"update KAGGLE_USERNAME/KAGGLE_KEY or {credentials.kaggle_config_file()}"
            ) from None
        raise
    archive = downloads / f"{slug}.zip"
    if not archive.is_file():
        raise InputError(
            archive,
            "the kaggle client finished without writing the competition archive",
            f"run `kaggle competitions download -c {slug}` by hand to see why",
        )
    extract(archive, files / slug)
    archive.unlink()
    return files
