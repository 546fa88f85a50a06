"""Method `zenodo`: all files of a Zenodo record (TotalSegmentator, AMOS), md5-verified.

`GET {api}/records/{identifier}` lists `files[]` with key, size, `checksum: "md5:<hex>"` and
`links.self`; older records use filename/filesize. `access.api` (default
https://zenodo.org/api) lets tests and mirrors point elsewhere; `access.include` globs select
a subset of files by name.
"""

from __future__ import annotations

from pathlib import Path

from medlatent.fetch import transfer
from medlatent.fetch.archive import safe_relative

API = "https://zenodo.org/api"
DENIED = "Zenodo refused access: the record or its files may be restricted; request access on the record's page."


def remotes(record: dict, api: str, record_id: str) -> list[transfer.Remote]:
    """The record's files as Remotes (download link falls back to the documented /files/<key> form)."""
    found = []
    for entry in record.get("files", []):
        key = entry.get("key") or entry.get("filename")
        url = (
            entry.get("links", {}).get("self")
            or f"{api.removesuffix('/api')}/records/{record_id}/files/{key}?download=1"
        )
        checksum = entry.get("checksum")
        if checksum and ":" not in checksum:
            checksum = f"md5:{checksum}"  # legacy records give the bare md5
        name = safe_relative(key, f"zenodo record {record_id}").as_posix()
        found.append(transfer.Remote(url, name, entry.get("size", entry.get("filesize")), checksum))
    return found


def fetch(source: dict, raw_dir: Path, *, seed: int) -> Path:
    access = source["access"]
    api = access.get("api", API).rstrip("/")
    record_id = str(access["identifier"])
    sess = transfer.session()
    record = transfer.get(sess, f"{api}/records/{record_id}", f"zenodo record {record_id}", DENIED).json()
    return transfer.place_all(sess, remotes(record, api, record_id), raw_dir, access, DENIED)
