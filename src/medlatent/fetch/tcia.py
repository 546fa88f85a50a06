"""Method `tcia`: a public TCIA collection through the NBIA REST API v4 (CMMD, LIDC-IDRI).

`getSeries?Collection=<identifier>[&Modality=<access.modality_filter>]` lists the series;
each series is `getImage?NewFileNames=Yes&SeriesInstanceUID=<uid>`, a ZIP that is downloaded
resumably and extracted safely into files/<SeriesInstanceUID>/. A series whose folder
exists is finished and skipped, so an interrupted fetch continues series by series. When
NBIA reports an ImageCount, the number of extracted DICOM files must match it.

Why not `tcia_utils`: its downloadSeries holds each series ZIP in memory, logs failed
series and carries on (a fetch could look complete with series missing), does not resume,
and brings notebook dependencies (plotly, ipywidgets, matplotlib, rt-utils). Two GET
endpoints are all we need. NBIA needs no login for public collections.
`access.api` (default below) points elsewhere for mirrors and tests.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlencode

import requests

from medlatent.core.errors import InputError
from medlatent.fetch import transfer
from medlatent.fetch.archive import safe_relative

API = "https://nbia.cancerimagingarchive.net/nbia-api/services/v4"
DENIED = "NBIA refused access: only public collections are served without login; check access.identifier."


def series_list(sess: requests.Session, api: str, collection: str, modality: str | None) -> list[dict]:
    """The collection's series (optionally one modality), sorted by SeriesInstanceUID."""
    params = {"Collection": collection, **({"Modality": modality} if modality else {})}
    response = transfer.get(sess, f"{api}/getSeries", f"TCIA collection {collection}", DENIED, params=params)
    series = response.json() if response.content.strip() else []  # NBIA answers an empty body for no match
    if not series:
        raise InputError(
            f"TCIA collection {collection}",
            f"no series found (Modality={modality})",
            "check access.identifier and access.modality_filter",
        )
    return sorted(series, key=lambda s: s["SeriesInstanceUID"])


def _check_count(folder: Path, series: dict) -> None:
    expected = series.get("ImageCount")
    found = sum(1 for p in folder.rglob("*.dcm") if p.is_file())
    if expected is not None and found != int(expected):
        shutil.rmtree(folder)
        raise InputError(
            folder,
            f"series has {found} DICOM files, NBIA lists ImageCount={expected}",
            "re-run to download the series again",
        )


def fetch(source: dict, raw_dir: Path, *, seed: int) -> Path:
    access = source["access"]
    api = access.get("api", API).rstrip("/")
    collection = access["identifier"]
    sess = transfer.session()
    files = raw_dir / "files"
    for series in series_list(sess, api, collection, access.get("modality_filter")):
        uid = safe_relative(series["SeriesInstanceUID"], f"TCIA collection {collection}").as_posix()
        if (files / uid).is_dir():
            continue
        url = f"{api}/getImage?{urlencode({'NewFileNames': 'Yes', 'SeriesInstanceUID': uid})}"
        transfer.place(
            sess, transfer.Remote(url, f"{uid}.zip"), raw_dir, f"{uid}.zip", extract_archives=True, denied=DENIED
        )
        _check_count(files / uid, series)
    return files
