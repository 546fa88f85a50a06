"""Method `physionet`: a credentialed PhysioNet project (MIMIC-CXR-JPG, VinDr-Mammo).

Does what `wget -r -N -c -np --user U --password P https://physionet.org/files/<slug>/<version>/`
does: HTTP basic auth (credentials.physionet), the project's HTML directory index read
recursively, each file resumable. When the project publishes SHA256SUMS.txt (PhysioNet
does for its projects) that file is the file list and every download is verified against
it; crawling is the fallback, because for MIMIC-CXR-JPG it would take hundreds of thousands
of index requests. `access.include` globs (relative paths) fetch a subset; the checksum
file itself is always kept.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

import requests

from medlatent.core.errors import InputError
from medlatent.fetch import credentials, transfer
from medlatent.fetch.archive import safe_relative

SUMS = "SHA256SUMS.txt"
MAX_DEPTH = 32


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [value for key, value in attrs if key == "href" and value]


def index_entries(sess: requests.Session, base: str, folder: str, denied: str) -> tuple[list[str], list[str]]:
    """(files, subfolders) linked from one index page, as paths relative to `base`;
    links leaving the folder are ignored."""
    url = base + quote(folder)
    parser = _Links()
    parser.feed(transfer.get(sess, url, f"physionet {folder or '/'}", denied).text)
    files, folders = [], []
    for href in parser.hrefs:
        target = urljoin(url, href)
        parts = urlsplit(target)
        if parts.query or parts.fragment or not target.startswith(url) or target == url:
            continue  # sort links, anchors, parent and sibling folders
        relative = unquote(target[len(base) :])
        (folders if relative.endswith("/") else files).append(relative)
    return files, folders


def crawl(sess: requests.Session, base: str, denied: str) -> list[str]:
    """Every file under `base`, by walking its index pages (depth-bounded)."""
    files, pending, seen = [], [""], set()
    while pending:
        folder = pending.pop()
        if folder in seen:
            continue
        seen.add(folder)
        if folder.count("/") > MAX_DEPTH:
            raise InputError(
                base + folder,
                f"directory listing nested deeper than {MAX_DEPTH}",
                "use access.include to fetch a subset",
            )
        found, subfolders = index_entries(sess, base, folder, denied)
        files += found
        pending += subfolders
    return sorted(set(files))


def read_sums(path: Path) -> dict[str, str]:
    """`{relative path: sha256}` from a sha256sum-format file."""
    sums = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.strip().partition(" ")
        if digest and name:
            sums[safe_relative(name.strip().lstrip("*"), path).as_posix()] = digest.lower()
    return sums


def fetch(source: dict, raw_dir: Path, *, seed: int) -> Path:
    access = source["access"]
    base = access["url"] if access["url"].endswith("/") else access["url"] + "/"
    slug = access.get("identifier") or urlsplit(base).path.split("/files/", 1)[-1].strip("/")
    auth = credentials.physionet()
    denied = (
        f"Check PHYSIONET_USER and PHYSIONET_PASSWORD (or the physionet.org entry of ~/.netrc), and that the "
        f"DUA/credentialing for {slug} is approved for this account: https://physionet.org/content/{slug}/"
    )
    sess = transfer.session((auth.user, auth.password))
    top_files, _ = index_entries(sess, base, "", denied)
    if SUMS in top_files:
        sums_path = transfer.download(
            sess, transfer.Remote(base + SUMS, f"{slug}/{SUMS}"), raw_dir / "files" / SUMS, denied
        )
        sums = read_sums(sums_path)
        names = sorted(n for n in sums if n != SUMS)
    else:
        sums, names = {}, crawl(sess, base, denied)
    remotes = [
        transfer.Remote(
            base + quote(name),
            safe_relative(name, base).as_posix(),
            None,
            f"sha256:{sums[name]}" if name in sums else None,
        )
        for name in names
    ]
    return transfer.place_all(sess, remotes, raw_dir, access, denied)
