"""Credentials for the gated sources: where each kind is looked up, and what to set when absent.

One function per kind. Each returns a small object whose secret fields are hidden from
`repr`, or raises CredentialsError naming exactly the variable or file to provide. Secret
values never enter a message: errors name variables and files, not their contents.
Credentials are never part of the configuration (Snakemake records params on disk).
"""

from __future__ import annotations

import json
import netrc
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from medlatent.core.errors import CredentialsError

if TYPE_CHECKING:
    import boto3

PHYSIONET_HOST = "physionet.org"
DEFAULT_SAS_ENV = "AIMI_SAS_URL"
#: Methods whose sources need credentials; every other method needs none.
NEEDS_CREDENTIALS = ("physionet", "kaggle", "s3", "azure_blob")


@dataclass(frozen=True)
class BasicAuth:
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class KaggleAuth:
    """Where the Kaggle client will find its credentials (the client reads them itself)."""

    origin: str


@dataclass(frozen=True)
class SasUrl:
    """An Azure container URL and its SAS query string, kept apart so only `base` is ever shown."""

    base: str
    query: str = field(repr=False)
    expires: datetime | None = None


def physionet() -> BasicAuth:
    """PhysioNet login: PHYSIONET_USER + PHYSIONET_PASSWORD, else ~/.netrc (or $NETRC) machine physionet.org."""
    user, password = os.environ.get("PHYSIONET_USER"), os.environ.get("PHYSIONET_PASSWORD")
    if user and password:
        return BasicAuth(user, password)
    netrc_path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    if netrc_path.is_file():
        try:
            entry = netrc.netrc(netrc_path).authenticators(PHYSIONET_HOST)
        except (netrc.NetrcParseError, OSError) as exc:
            raise CredentialsError(
                f"cannot read {netrc_path} (line {getattr(exc, 'lineno', '?')}); "
                "fix its syntax or set PHYSIONET_USER and PHYSIONET_PASSWORD"
            ) from None
        if entry and entry[0] and entry[2]:
            return BasicAuth(entry[0], entry[2])
    raise CredentialsError(
        "PhysioNet credentials missing: set PHYSIONET_USER and PHYSIONET_PASSWORD, "
        f"or add 'machine {PHYSIONET_HOST} login <user> password <password>' to {netrc_path} (chmod 600)"
    )


def kaggle_config_file() -> Path:
    config_dir = os.environ.get("KAGGLE_CONFIG_DIR")
    return Path(config_dir) / "kaggle.json" if config_dir else Path.home() / ".kaggle" / "kaggle.json"


def kaggle() -> KaggleAuth:
    """Kaggle API credentials: KAGGLE_USERNAME + KAGGLE_KEY, KAGGLE_API_TOKEN, or kaggle.json."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return KaggleAuth("environment (KAGGLE_USERNAME, KAGGLE_KEY)")
    if os.environ.get("KAGGLE_API_TOKEN"):
        return KaggleAuth("environment (KAGGLE_API_TOKEN)")
    config = kaggle_config_file()
    if config.is_file():
        try:
            content = json.loads(config.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError):
            raise CredentialsError(
                f"{config} is not valid JSON; download a fresh API token from https://www.kaggle.com/settings"
            ) from None
        if isinstance(content, dict) and content.get("username") and content.get("key"):
            return KaggleAuth(str(config))
        raise CredentialsError(
            f"{config} lacks 'username' or 'key'; download a fresh API token from https://www.kaggle.com/settings"
        )
    raise CredentialsError(
        "Kaggle credentials missing: set KAGGLE_USERNAME and KAGGLE_KEY, or put the API token file from "
        f"https://www.kaggle.com/settings at {config} (chmod 600; the folder can be moved with KAGGLE_CONFIG_DIR)"
    )


def _sas_expiry(query: str, env: str) -> datetime | None:
    values = parse_qs(query).get("se")
    if not values:
        return None
    try:
        expires = datetime.fromisoformat(values[0].replace("Z", "+00:00"))
    except ValueError:
        raise CredentialsError(f"${env} has an unreadable se= expiry; copy the SAS URL again from the portal") from None
    return expires if expires.tzinfo else expires.replace(tzinfo=UTC)


def azure_sas(env: str = DEFAULT_SAS_ENV, *, now: datetime | None = None) -> SasUrl:
    """The container SAS URL from environment variable `env`; fails if missing or expired.

    Stanford AIMI hands out a personal, time-limited SAS URL after the dataset's research
    use agreement is accepted (https://stanfordaimi.azurewebsites.net, ~30 days).
    """
    value = os.environ.get(env, "").strip()
    where = (
        "get one at https://stanfordaimi.azurewebsites.net "
        "(register, accept the dataset's research use agreement, click download)"
    )
    if not value:
        raise CredentialsError(
            f"Azure SAS URL missing: set the environment variable {env} to the dataset's SAS URL; {where}"
        )
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc or not parts.query:
        raise CredentialsError(
            f"${env} is not a container SAS URL (https://<account>.blob.core.windows.net/<container>?<sas>); {where}"
        )
    expires = _sas_expiry(parts.query, env)
    if expires is not None and expires <= (now or datetime.now(UTC)):
        raise CredentialsError(
            f"the SAS URL in ${env} expired on {expires.isoformat()}; request a new one ({where}) and set {env} again"
        )
    return SasUrl(f"{parts.scheme}://{parts.netloc}{parts.path}", parts.query, expires)


def aws(profile: str | None = None) -> boto3.Session:
    """A boto3 Session with credentials from `profile`, AWS_* variables or ~/.aws; raises if none.

    Returns the Session itself: boto3 resolves the credential chain, we only check it found one.
    """
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        session = boto3.Session(profile_name=profile)
    except ProfileNotFound:
        raise CredentialsError(
            f"AWS profile {profile!r} not found in ~/.aws/credentials or ~/.aws/config; add it or change access.profile"
        ) from None
    if session.get_credentials() is None:
        raise CredentialsError(
            "AWS credentials missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE / access.profile "
            "naming a profile in ~/.aws/credentials); set access.anonymous: true only for public buckets"
        )
    return session


def require(access: dict) -> BasicAuth | KaggleAuth | SasUrl | boto3.Session | None:
    """The credentials a source's access block needs (None if it needs none); raises if missing."""
    method = access.get("method")
    if method == "physionet":
        return physionet()
    if method == "kaggle":
        return kaggle()
    if method == "azure_blob":
        return azure_sas(access.get("sas_env", DEFAULT_SAS_ENV))
    if method == "s3" and not access.get("anonymous"):
        return aws(access.get("profile"))
    return None


def credential_status(source: dict) -> str:
    """'present', 'missing' or 'not needed' for one configured source; never the value itself."""
    access = source.get("access", {})
    if access.get("method") not in NEEDS_CREDENTIALS or (access.get("method") == "s3" and access.get("anonymous")):
        return "not needed"
    try:
        require(access)
    except CredentialsError:
        return "missing"
    return "present"
