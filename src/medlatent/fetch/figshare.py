"""Method `figshare`: all files of a figshare article (GRAZPEDWRI-DX), md5-verified.

`GET {api}/articles/{identifier}/files` (figshare API v2) lists name, size, computed_md5
and download_url, a page at a time. `access.api` (default https://api.figshare.com/v2)
lets tests and mirrors point elsewhere; `access.include` globs select files by name.
"""

from __future__ import annotations

from pathlib import Path

import requests

from medlatent.fetch import transfer
from medlatent.fetch.archive import safe_relative

API = "https://api.figshare.com/v2"
PAGE_SIZE = 100
MAX_PAGES = 1000
DENIED = "figshare refused access: the article may be private or embargoed; request access on its page."


def list_files(sess: requests.Session, api: str, article: str) -> list[dict]:
    """Every file entry of the article, following pages until a short or repeated page."""
    entries: dict[str, dict] = {}
    for page in range(1, MAX_PAGES + 1):
        batch = transfer.get(
            sess,
            f"{api}/articles/{article}/files",
            f"figshare article {article}",
            DENIED,
            params={"page": page, "page_size": PAGE_SIZE},
        ).json()
        new = [e for e in batch if str(e.get("id", e["name"])) not in entries]
        entries.update((str(e.get("id", e["name"])), e) for e in new)
        if len(batch) < PAGE_SIZE or not new:
            break
    return list(entries.values())


def fetch(source: dict, raw_dir: Path, *, seed: int) -> Path:
    access = source["access"]
    api = access.get("api", API).rstrip("/")
    article = str(access["identifier"])
    sess = transfer.session()
    remotes = [
        transfer.Remote(
            e["download_url"],
            safe_relative(e["name"], f"figshare article {article}").as_posix(),
            e.get("size"),
            f"md5:{e['computed_md5']}" if e.get("computed_md5") else None,
        )
        for e in list_files(sess, api, article)
    ]
    return transfer.place_all(sess, remotes, raw_dir, access, DENIED)
