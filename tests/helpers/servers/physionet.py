"""PhysioNet-like project: basic-auth HTML directory index pages and an optional SHA256SUMS.txt."""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

from .host import FakeHost


def _index(folder: str, children: list[str]) -> bytes:
    links = "".join(f'<a href="{c}">{c}</a><br>' for c in children)
    # The noise of a real index page: sort links, the parent folder, a site-wide link.
    return (
        f'<html><body><h1>Index of {folder}</h1><a href="?C=N;O=D">Name</a> <a href="../">Parent Directory</a>'
        f'<a href="/about/">About</a><hr>{links}</body></html>'
    ).encode()


def physionet_project(host: FakeHost, slug: str, files: dict[str, bytes], *, sums: bool = True) -> str:
    """Serve `files` {relative path: bytes} under /files/<slug>/ with index pages; returns its URL."""
    base = f"/files/{slug}/"
    if sums:
        files = {
            **files,
            "SHA256SUMS.txt": "".join(
                f"{hashlib.sha256(c).hexdigest()}  {p}\n" for p, c in sorted(files.items())
            ).encode(),
        }
    folders: dict[str, set[str]] = {"": set()}
    for path, content in files.items():
        host.add_file(base + path, content)
        parts = PurePosixPath(path).parts
        for depth in range(len(parts)):
            folder = "".join(p + "/" for p in parts[:depth])
            child = parts[depth] + ("/" if depth < len(parts) - 1 else "")
            folders.setdefault(folder, set()).add(child)
    for folder, children in folders.items():
        host.add_file(base + folder, _index(base + folder, sorted(children)), "text/html")
    return host.url + base
