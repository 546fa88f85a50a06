"""Method `azure_blob`: a Stanford AIMI dataset from its Azure container with a personal SAS URL.

The SAS URL comes from the environment variable `access.sas_env` (default AIMI_SAS_URL) and
is checked before any request (credentials.azure_sas: present, not past its `se=` expiry).
Blobs are listed with the container REST API (`?restype=container&comp=list`, XML, paged by
NextMarker) and each is downloaded resumably, verified by size and Content-MD5. The SAS
query string never appears in messages, logs or the receipt: only the container URL and
blob names do. `access.prefix` limits the fetch to one folder of the container.
"""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit
from xml.etree import ElementTree

import requests

from medlatent.core.errors import InputError
from medlatent.fetch import credentials, transfer
from medlatent.fetch.archive import safe_relative

MAX_PAGES = 100_000


def _md5_hex(content_md5: str | None) -> str | None:
    return f"md5:{base64.b64decode(content_md5).hex()}" if content_md5 else None


def list_blobs(sess: requests.Session, sas: credentials.SasUrl, prefix: str, denied: str) -> list[transfer.Remote]:
    """Every blob under `prefix` as a Remote named by its path below the prefix."""
    parts = urlsplit(sas.base)
    container, _, folder = parts.path.strip("/").partition("/")
    container_url = f"{parts.scheme}://{parts.netloc}/{container}"
    prefix = "/".join(p.strip("/") for p in (folder, prefix) if p.strip("/"))
    prefix = prefix + "/" if prefix else ""
    remotes, marker = [], ""
    for _ in range(MAX_PAGES):
        params = {"restype": "container", "comp": "list", "prefix": prefix, **({"marker": marker} if marker else {})}
        page = transfer.get(
            sess, f"{container_url}?{urlencode(params)}&{sas.query}", f"azure container {container_url}", denied
        )
        try:
            root = ElementTree.fromstring(page.content)
        except ElementTree.ParseError:
            raise InputError(
                container_url, "blob listing is not XML", "check that the SAS URL points at a container"
            ) from None
        for blob in root.iter("Blob"):
            name = blob.findtext("Name")
            relative = safe_relative(name[len(prefix) :], container_url).as_posix()
            size = blob.findtext("Properties/Content-Length")
            remotes.append(
                transfer.Remote(
                    f"{container_url}/{quote(name)}?{sas.query}",
                    relative,
                    int(size) if size else None,
                    _md5_hex(blob.findtext("Properties/Content-MD5")),
                )
            )
        marker = root.findtext("NextMarker") or ""
        if not marker:
            return remotes
    raise InputError(
        container_url,
        f"blob listing has more than {MAX_PAGES} pages",
        "set access.prefix to fetch one folder at a time",
    )


def fetch(source: dict, raw_dir: Path, *, seed: int) -> Path:
    access = source["access"]
    env = access.get("sas_env", credentials.DEFAULT_SAS_ENV)
    sas = credentials.azure_sas(env)
    denied = (
        f"The SAS URL in ${env} was refused: it may have expired or been revoked, "
        "or lacks read+list permission (sp=rl). "
        f"Get a new one at https://stanfordaimi.azurewebsites.net and set {env} again."
    )
    sess = transfer.session()
    remotes = list_blobs(sess, sas, access.get("prefix", ""), denied)
    if not remotes:
        raise InputError(
            sas.base,
            "the container holds no blobs under the configured prefix",
            "check access.prefix and that the SAS URL is for this dataset",
        )
    return transfer.place_all(sess, remotes, raw_dir, access, denied)
