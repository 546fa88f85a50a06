"""Azure-Blob-like container: `?restype=container&comp=list` XML listing (paged) and blob GETs, SAS-checked."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import unquote
from xml.sax.saxutils import escape

from .host import FakeHost

DENIED = (403, "application/xml", b"<Error><Code>AuthenticationFailed</Code></Error>")


def azure_container(host: FakeHost, container: str, blobs: dict[str, bytes], sig: str, page_size: int = 2) -> str:
    """Serve `blobs` {name: bytes} in /<container>; requests need `sig=<sig>` (as written in the URL).
    Returns the container URL."""
    names = sorted(blobs)
    sig = unquote(sig)

    def listing(seen):
        if seen.query.get("sig") != sig:
            return DENIED
        if seen.query.get("restype") != "container" or seen.query.get("comp") != "list":
            return 400, "text/plain", b"container GET needs restype=container&comp=list"
        selected = [n for n in names if n.startswith(seen.query.get("prefix", ""))]
        start = int(seen.query.get("marker") or 0)
        page = selected[start : start + page_size]
        items = "".join(
            f"<Blob><Name>{escape(n)}</Name><Properties><Content-Length>{len(blobs[n])}</Content-Length>"
            f"<Content-MD5>{base64.b64encode(hashlib.md5(blobs[n]).digest()).decode()}</Content-MD5></Properties></Blob>"
            for n in page
        )
        marker = str(start + page_size) if start + page_size < len(selected) else ""
        body = (
            f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults><Blobs>{items}</Blobs>'
            f'<NextMarker>{marker}</NextMarker></EnumerationResults>'
        )
        return 200, "application/xml", body.encode()

    def blob(content):
        return lambda seen: (200, "application/octet-stream", content) if seen.query.get("sig") == sig else DENIED

    host.routes[f"/{container}"] = listing
    for name, content in blobs.items():
        host.routes[f"/{container}/{name}"] = blob(content)
    return f"{host.url}/{container}"
