"""Method `https`: plain files on a web server (CQ500 zips + reads.csv, VerSe zips).

`access.files` lists the files, each a name relative to `access.url`, an absolute URL, or a
mapping `{name | url, size, checksum: "md5:<hex>" | "sha256:<hex>"}` when size and checksum
are known. `access.file_range: {pattern: "CQ500-CT-{i}.zip", start, stop}` adds numbered
files. With neither, `access.url` itself is the one file. `extract: true` unpacks archives.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlsplit

from medlatent.core.errors import ConfigError
from medlatent.fetch import transfer
from medlatent.fetch.archive import safe_relative

DENIED = "The host refused the download; check access.url (some hosts require accepting terms on their website first)."


def _remote(entry: str | dict, base: str, source_id: str) -> transfer.Remote:
    spec = {"name": entry} if isinstance(entry, str) else dict(entry)
    target = spec.get("url") or spec.get("name")
    if not target:
        raise ConfigError(f"sources[{source_id}].access.files: entry {entry!r} needs a name or url")
    url = target if urlsplit(target).scheme else urljoin(base, target)
    name = spec.get("name") or PurePosixPath(urlsplit(url).path).name
    if not name:
        raise ConfigError(f"sources[{source_id}].access: cannot tell a file name from {url!r}; list access.files")
    relative = safe_relative(name, f"sources[{source_id}].access.files").as_posix()
    return transfer.Remote(url, relative, spec.get("size"), spec.get("checksum"))


def entries(access: dict) -> list[str | dict]:
    """The configured files, numbered ranges expanded."""
    listed = list(access.get("files") or [])
    numbered = access.get("file_range")
    if numbered:
        listed += [numbered["pattern"].format(i=i) for i in range(numbered.get("start", 0), numbered["stop"])]
    if not (listed or access.get("url")):
        raise ConfigError("method https needs access.url and/or access.files")
    return listed or [access["url"]]


def fetch(source: dict, raw_dir: Path, *, seed: int) -> Path:
    access = source["access"]
    base = access.get("url", "")
    if base and not base.endswith("/") and (access.get("files") or access.get("file_range")):
        base += "/"
    remotes = [_remote(entry, base, source["id"]) for entry in entries(access)]
    return transfer.place_all(transfer.session(), remotes, raw_dir, access, DENIED)
