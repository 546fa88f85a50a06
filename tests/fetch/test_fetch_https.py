"""Method https against a local server: receipt, resume with Range, verification, extraction, errors."""

from __future__ import annotations

import hashlib
import os

import pytest
from servers import zip_bytes

from medlatent.core.errors import InputError
from medlatent.fetch import fetch_source, transfer
from medlatent.fetch.receipt import RECEIPT

pytest_plugins = ["servers.fixtures"]

BLOB = os.urandom(3 * (1 << 20) + 123)  # several chunks, not a multiple of the chunk size


def source(host, **access) -> dict:
    return {"id": "cq", "access": {"method": "https", "identifier": "test", "url": host.url + "/bucket/", **access}}


def test_files_and_numbered_range_fetched_extracted_and_receipted(host, tmp_path):
    host.add_file("/bucket/reads.csv", b"name,R1:Fracture\nCQ500-CT-0,1\n")
    for i in range(3):
        host.add_file(
            f"/bucket/CQ500-CT-{i}.zip",
            zip_bytes({f"CQ500CT{i}/Unknown Study/CT 5mm/CT00000{k}.dcm": bytes([i, k]) * 10 for k in range(2)}),
        )
    raw = tmp_path / "raw" / "cq"
    receipt = fetch_source(
        source(
            host, files=["reads.csv"], file_range={"pattern": "CQ500-CT-{i}.zip", "start": 0, "stop": 3}, extract=True
        ),
        raw,
    )
    paths = [f["path"] for f in receipt["files"]]
    assert (
        paths[0] == "CQ500-CT-0/CQ500CT0/Unknown Study/CT 5mm/CT000000.dcm"
        and paths[-1] == "reads.csv"
        and len(paths) == 7
    )
    assert paths == sorted(paths) and receipt["root"] == str(raw / "files")
    assert not list((raw / "downloads").glob("*"))  # archives removed once extracted
    # A second run downloads nothing: extracted folders and finished files are kept.
    before = len(host.seen)
    assert (
        fetch_source(
            source(
                host,
                files=["reads.csv"],
                file_range={"pattern": "CQ500-CT-{i}.zip", "start": 0, "stop": 3},
                extract=True,
            ),
            raw,
        )
        == receipt
    )
    assert len(host.seen) == before


def test_cut_connection_resumes_from_the_partial_file_with_range(host, tmp_path):
    host.add_file("/bucket/big.bin", BLOB)
    host.drop_once.add("/bucket/big.bin")
    receipt = fetch_source(
        source(
            host,
            files=[{"name": "big.bin", "size": len(BLOB), "checksum": "sha256:" + hashlib.sha256(BLOB).hexdigest()}],
        ),
        tmp_path / "raw",
    )
    first, second = host.requests_for("/bucket/big.bin")
    assert "Range" not in first.headers
    # The second request continues the part: whole chunks received before the cut (half the file).
    resumed_at = int(second.headers["Range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= len(BLOB) // 2
    assert (tmp_path / "raw" / "files" / "big.bin").read_bytes() == BLOB
    assert receipt["files"] == [{"path": "big.bin", "size": len(BLOB), "sha256": hashlib.sha256(BLOB).hexdigest()}]
    assert not list((tmp_path / "raw" / "files").glob("*.part"))


def test_partial_file_from_a_killed_run_is_continued(host, tmp_path):
    host.add_file("/bucket/big.bin", BLOB)
    files = tmp_path / "raw" / "files"
    files.mkdir(parents=True)
    (files / "big.bin.part").write_bytes(BLOB[:1000])
    fetch_source(source(host, files=["big.bin"]), tmp_path / "raw")
    assert [s.headers.get("Range") for s in host.requests_for("/bucket/big.bin")] == ["bytes=1000-"]
    assert (files / "big.bin").read_bytes() == BLOB


def test_host_ignoring_range_restarts_cleanly(host, tmp_path):
    host.add_file("/bucket/big.bin", BLOB)
    host.ignore_range = True
    files = tmp_path / "raw" / "files"
    files.mkdir(parents=True)
    (files / "big.bin.part").write_bytes(b"garbage")
    fetch_source(
        source(host, files=[{"name": "big.bin", "checksum": "md5:" + hashlib.md5(BLOB).hexdigest()}]), tmp_path / "raw"
    )
    assert (files / "big.bin").read_bytes() == BLOB


def test_checksum_mismatch_fails_and_leaves_no_file_or_receipt(host, tmp_path):
    host.add_file("/bucket/x.bin", b"tampered content")
    raw = tmp_path / "raw"
    with pytest.raises(InputError, match=r"x.bin.*sha256 checksum .* != expected 0+"):
        fetch_source(source(host, files=[{"name": "x.bin", "checksum": "sha256:" + "0" * 64}]), raw)
    assert not list((raw / "files").iterdir()) and not (raw / RECEIPT).exists()


def test_size_mismatch_fails(host, tmp_path):
    host.add_file("/bucket/x.bin", b"12345")
    with pytest.raises(InputError, match="size 5 != expected 9"):
        fetch_source(source(host, files=[{"name": "x.bin", "size": 9}]), tmp_path / "raw")


def test_missing_file_is_404_and_bad_archive_is_not_kept(host, tmp_path):
    with pytest.raises(InputError, match="HTTP 404"):
        fetch_source(source(host, files=["nope.csv"]), tmp_path / "raw")
    host.add_file("/bucket/broken.zip", b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match="cannot read archive"):
        fetch_source(source(host, files=["broken.zip"], extract=True), tmp_path / "raw")
    assert not (tmp_path / "raw" / "downloads" / "broken.zip").exists()  # a re-run downloads it again


def test_malicious_archive_from_the_host_is_refused(host, tmp_path):
    host.add_file("/bucket/evil.zip", zip_bytes({"ok.txt": b"ok", "../../escaped.txt": b"evil"}))
    with pytest.raises(InputError, match=r"evil.zip.*'\.\./\.\./escaped.txt'"):
        fetch_source(source(host, files=["evil.zip"], extract=True), tmp_path / "raw")
    assert not list(tmp_path.rglob("escaped.txt")) and not (tmp_path / "raw" / "files" / "evil").exists()


def test_retries_are_bounded_when_the_host_keeps_cutting(host, tmp_path, monkeypatch):
    host.add_file("/bucket/big.bin", BLOB)
    monkeypatch.setattr(transfer, "ATTEMPTS", 2)
    original = host.routes["/bucket/big.bin"]

    def always_cut(seen):
        host.drop_once.add("/bucket/big.bin")
        return original(seen)

    host.routes["/bucket/big.bin"] = always_cut
    with pytest.raises(InputError, match="failed after 2 attempts.*partial file is kept"):
        fetch_source(source(host, files=["big.bin"]), tmp_path / "raw")
    assert len(host.requests_for("/bucket/big.bin")) == 2
    assert (tmp_path / "raw" / "files" / "big.bin.part").stat().st_size > 0
