"""Search a work folder's outputs for identifying values, in every form they could take there.

A value is looked for as its text, its hex, and the unsalted md5 / sha1 / sha256 of it (hex
and raw digest); a path that holds identifiers also as its hashes. Hex digests are matched
by their first 12 digits, so an id cut from a digest (`sha1(path)[:16]`) is found too.
Matching ignores ASCII case.

Each file is read as its bytes and as what a reader of its kind sees: parquet cells and
column names, HDF5 names, attributes and dataset contents, tar and zip member names and
contents (read again by their own kind), gzip contents, and any of these that is JSON parsed
(escapes undone).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

import medlatent.io.h5  # noqa: F401 - registers the Blosc filter the shards are compressed with

HASHES = ("md5", "sha1", "sha256")
#: Hex digits of a digest that count as finding it: any id cut to 12 or more.
HEX_PREFIX = 12
#: Bytes of a raw digest that count as finding it.
RAW_PREFIX = 8


@dataclass(frozen=True)
class Needle:
    form: str
    """How the value appears: `text`, `hex`, `sha1 hex of`, ..."""
    value: str
    pattern: bytes


def needles(values: Iterable[str], paths: Iterable[str] = ()) -> list[Needle]:
    """Every form of each value and each path; a path's text is also a value."""
    found = []
    for value in sorted({*values, *paths}):
        encoded = value.encode("utf-8")
        if value not in paths:
            found += [Needle("text", value, encoded), Needle("hex", value, encoded.hex().encode())]
        for name in HASHES:
            digest = hashlib.new(name, encoded).digest()
            found.append(Needle(f"{name} hex of", value, digest.hex()[:HEX_PREFIX].encode()))
            found.append(Needle(f"{name} digest of", value, digest[:RAW_PREFIX]))
        if value in paths:
            found.append(Needle("text", value, encoded))
    return [Needle(n.form, n.value, n.pattern.lower()) for n in found]


def views(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """(where, bytes) of everything a reader of file `name` holding `data` sees, its raw bytes first."""
    yield from _leaf(name, data)
    suffix = Path(name).suffix
    if suffix == ".parquet":
        yield from _parquet(name, data)
    elif suffix in (".h5", ".hdf5"):
        yield from _hdf5(name, data)
    elif suffix == ".gz":
        yield from views(f"{name} (gunzipped)", gzip.decompress(data))
    elif tarfile.is_tarfile(io.BytesIO(data)):
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive.getmembers():
                yield f"{name} member name", member.name.encode()
                if member.isfile():
                    yield from views(f"{name}/{member.name}", archive.extractfile(member).read())
    elif zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                yield f"{name} member name", member.encode()
                yield from views(f"{name}/{member}", archive.read(member))


def _leaf(where: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """The bytes, and where they are JSON, the JSON with its escapes undone (`\\u00fc` -> `ü`)."""
    yield where, data
    try:
        parsed = json.loads(data)
    except ValueError:  # not JSON (UnicodeDecodeError included)
        return
    if isinstance(parsed, dict | list | str):
        yield f"{where} (JSON unescaped)", json.dumps(parsed, ensure_ascii=False).encode()


def _parquet(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    table = pd.read_parquet(io.BytesIO(data))
    yield f"{name} columns", "\n".join(map(str, table.columns)).encode()
    for column in table.columns:
        for row, cell in enumerate(table[column]):
            yield from _leaf(f"{name} [{row}, {column}]", cell if isinstance(cell, bytes) else str(cell).encode())


def _hdf5(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []

    def attributes(where: str, node) -> None:
        for key, value in node.attrs.items():
            found.append((f"{name}:{where} attribute name", key.encode()))
            found.extend(_leaf(f"{name}:{where} attribute {key}", _bytes(value)))

    def visit(path: str, node) -> None:
        found.append((f"{name} node name", path.encode()))
        attributes(path, node)
        if isinstance(node, h5py.Dataset):
            found.extend(_leaf(f"{name}:{path} contents", _bytes(node[()])))

    with h5py.File(io.BytesIO(data), "r") as handle:
        attributes("/", handle)
        handle.visititems(visit)
    yield from found


def _bytes(value) -> bytes:
    """An HDF5 value as bytes: strings encoded, arrays of them joined, numbers as stored."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return b"\n".join(_bytes(v) for v in value.ravel())
        return value.tobytes()
    return str(value).encode()


def search(workdir: Path, needles: list[Needle], skip: Iterable[str] = ("data/raw",)) -> list[str]:
    """`<file view>: <form> <value>` for every needle found in a file under `workdir` outside `skip`."""
    skipped = tuple(Path(s) for s in skip)
    findings = []
    for path in sorted(p for p in workdir.rglob("*") if p.is_file()):
        relative = path.relative_to(workdir)
        if any(relative.is_relative_to(s) for s in skipped):
            continue
        for where, data in views(relative.as_posix(), path.read_bytes()):
            haystack = data.lower()
            findings += [f"{where}: {n.form} {n.value!r}" for n in needles if n.pattern in haystack]
        findings += [
            f"{relative} (file name): text {n.value!r}" for n in needles if n.pattern in str(relative).lower().encode()
        ]
    return findings
