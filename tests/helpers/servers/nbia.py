"""NBIA-like REST API v4 (getSeries JSON, getImage ZIP per series) on a FakeHost."""

from __future__ import annotations

import json

from . import zip_bytes
from .host import FakeHost

BASE = "/nbia-api/services/v4"


def nbia(host: FakeHost, collection: str, series: dict[str, dict], image_count: dict[str, int] | None = None) -> str:
    """Serve `series` {uid: {"modality": .., "files": {name: bytes}}}; returns the API base URL.

    `image_count` overrides the advertised ImageCount of a series (to provoke a mismatch).
    """

    def get_series(seen):
        rows = [
            {
                "SeriesInstanceUID": uid,
                "Collection": collection,
                "Modality": s["modality"],
                "ImageCount": (image_count or {}).get(uid, sum(n.endswith(".dcm") for n in s["files"])),
            }
            for uid, s in series.items()
            if seen.query.get("Collection") == collection and seen.query.get("Modality", s["modality"]) == s["modality"]
        ]
        return 200, "application/json", json.dumps(rows).encode() if rows else b""

    def get_image(seen):
        uid = seen.query.get("SeriesInstanceUID")
        if uid not in series or seen.query.get("NewFileNames") != "Yes":
            return 400, "text/plain", b"bad request"
        return 200, "application/zip", zip_bytes(series[uid]["files"])

    host.routes[f"{BASE}/getSeries"] = get_series
    host.routes[f"{BASE}/getImage"] = get_image
    return host.url + BASE
