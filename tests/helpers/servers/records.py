"""Zenodo-like record API and figshare-like article API on a FakeHost."""

from __future__ import annotations

import hashlib
import json

from .host import FakeHost


def _json(payload) -> tuple[int, str, bytes]:
    return 200, "application/json", json.dumps(payload).encode()


def zenodo_record(host: FakeHost, record_id: str, files: dict[str, bytes], md5: dict[str, str] | None = None) -> None:
    """`GET /api/records/<id>` as Zenodo's REST API shapes it; each file at links.self.

    `md5` overrides the advertised checksum of a file (to provoke a mismatch).
    """
    entries = []
    for key, content in files.items():
        link = f"/api/records/{record_id}/files/{key}/content"
        host.add_file(link, content)
        checksum = (md5 or {}).get(key, hashlib.md5(content).hexdigest())
        entries.append(
            {"key": key, "size": len(content), "checksum": f"md5:{checksum}", "links": {"self": host.url + link}}
        )
    record = {"id": int(record_id), "files": entries}
    host.routes[f"/api/records/{record_id}"] = lambda seen: _json(record)


def figshare_article(
    host: FakeHost, article_id: str, files: dict[str, bytes], md5: dict[str, str] | None = None
) -> None:
    """`GET /v2/articles/<id>/files` as figshare API v2 shapes it, honouring page/page_size."""
    entries = []
    for number, (name, content) in enumerate(files.items(), start=1000):
        link = f"/ndownloader/files/{number}"
        host.add_file(link, content)
        checksum = (md5 or {}).get(name, hashlib.md5(content).hexdigest())
        entries.append(
            {
                "id": number,
                "name": name,
                "size": len(content),
                "computed_md5": checksum,
                "supplied_md5": checksum,
                "download_url": host.url + link,
                "is_link_only": False,
            }
        )

    def page(seen):
        size = int(seen.query.get("page_size", 10))
        start = (int(seen.query.get("page", 1)) - 1) * size
        return _json(entries[start : start + size])

    host.routes[f"/v2/articles/{article_id}/files"] = page
