"""fetch_source dispatch and the receipt, with the methods that need no network: synthetic, local, manual."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from medlatent import __version__
from medlatent.core import ids, rawpaths
from medlatent.core.errors import ConfigError, CredentialsError, InputError
from medlatent.fetch import fetch_source
from medlatent.fetch.credentials import credential_status
from medlatent.fetch.receipt import RECEIPT


def test_local_receipt_lists_every_file_sorted_with_hashes(tmp_path):
    data = tmp_path / "elsewhere"
    (data / "b").mkdir(parents=True)
    (data / "b" / "2.dcm").write_bytes(b"two")
    (data / "a.csv").write_bytes(b"x,y\n")
    (data / "b" / "1.dcm").write_bytes(b"\x00" * 3_000_000)
    source = {"id": "mine", "access": {"method": "local", "identifier": "lab copy", "path": str(data)}}
    receipt = fetch_source(source, tmp_path / "raw" / "mine")
    assert receipt == json.loads((tmp_path / "raw" / "mine" / RECEIPT).read_text())
    assert receipt["root"] == str(data) and receipt["method"] == "local" and receipt["identifier"] == "lab copy"
    assert receipt["tool"] == f"medlatent {__version__}" and "fetched_at" not in receipt
    assert [f["path"] for f in receipt["files"]] == ["a.csv", "b/1.dcm", "b/2.dcm"]
    assert receipt["files"][1] == {
        "path": "b/1.dcm",
        "size": 3_000_000,
        "sha256": hashlib.sha256(b"\x00" * 3_000_000).hexdigest(),
    }
    assert not (tmp_path / "raw" / "mine" / "files").exists()  # local data is not copied


def test_links_are_followed_only_inside_the_root_and_every_refused_entry_is_listed(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "scans").mkdir(parents=True)
    outside.mkdir()
    (outside / "passwd").write_bytes(b"root:x:0:0")
    (data / "scans" / "a.dcm").write_bytes(b"a")
    links = {
        "inside.dcm": data / "scans" / "a.dcm",
        "outside.dcm": outside / "passwd",
        "outside_folder": outside,
        "dangling.dcm": data / "gone.dcm",
        "loop_a": data / "loop_b",
        "loop_b": data / "loop_a",
        "folder": data / "scans",
    }
    for name, target in links.items():
        (data / name).symlink_to(target)
    os.mkfifo(data / "pipe")  # opening it to hash would block the fetch
    receipt = fetch_source({"id": "s", "access": {"method": "local", "path": str(data)}}, tmp_path / "raw")
    assert [f["path"] for f in receipt["files"]] == ["inside.dcm", "scans/a.dcm"]
    assert receipt["refused"] == [
        {"path": "dangling.dcm", "problem": "link_dangling"},
        {"path": "folder", "problem": "link_to_folder"},
        {"path": "loop_a", "problem": "link_loop"},
        {"path": "loop_b", "problem": "link_loop"},
        {"path": "outside.dcm", "problem": "link_outside_root"},
        {"path": "outside_folder", "problem": "link_outside_root"},
        {"path": "pipe", "problem": "not_a_regular_file"},
    ]


def test_a_name_that_is_not_utf8_is_listed_and_keyed_by_its_bytes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    latin1 = "M\xfcller.dcm".encode("latin-1")
    (Path(os.fsdecode(data)) / os.fsdecode(latin1)).write_bytes(b"x")
    (data / "Müller.dcm").write_bytes(b"y")  # the same name in UTF-8: another file, another key
    receipt = fetch_source({"id": "s", "access": {"method": "local", "path": str(data)}}, tmp_path / "raw")
    paths = [f["path"] for f in receipt["files"]]
    assert sorted(rawpaths.to_bytes(p) for p in paths) == sorted([latin1, "Müller.dcm".encode()])
    keys = {ids.file_key(p) for p in paths}
    assert len(keys) == 2 and ids.file_key("Müller.dcm") == hashlib.sha1("Müller.dcm".encode()).hexdigest()[:16]
    assert json.loads((tmp_path / "raw" / RECEIPT).read_text())["files"] == receipt["files"]


def test_receipt_is_reproducible_and_hashing_shows_progress(tmp_path, capsys):
    data = tmp_path / "d"
    data.mkdir()
    (data / "f.bin").write_bytes(b"abc" * 1000)
    source = {"id": "s", "access": {"method": "local", "path": str(data)}}
    first = (fetch_source(source, tmp_path / "raw"), (tmp_path / "raw" / RECEIPT).read_bytes())
    second = (fetch_source(source, tmp_path / "raw"), (tmp_path / "raw" / RECEIPT).read_bytes())
    assert first == second
    assert "hashing s" in capsys.readouterr().err


def test_local_missing_path_names_it_and_leaves_no_receipt(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / RECEIPT).write_text("{}")  # a stale receipt from an earlier run must not survive a failed fetch
    with pytest.raises(InputError, match="nowhere.*access.path"):
        fetch_source({"id": "s", "access": {"method": "local", "path": str(tmp_path / "nowhere")}}, raw)
    assert not (raw / RECEIPT).exists()


def test_unknown_method_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="'ftp' is not one of"):
        fetch_source({"id": "s", "access": {"method": "ftp"}}, tmp_path)


def test_synthetic_writes_files_then_receipt(tmp_path):
    source = {
        "id": "demo",
        "access": {
            "method": "synthetic",
            "generator": "xray_png",
            "n_patients": 3,
            "images_per_patient": 1,
            "size": [32, 24],
        },
    }
    receipt = fetch_source(source, tmp_path / "raw", seed=3)
    root = tmp_path / "raw" / "files"
    assert receipt["root"] == str(root)
    assert {f["path"] for f in receipt["files"]} == {
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
    }
    assert "labels.csv" in {f["path"] for f in receipt["files"]}
    assert fetch_source(source, tmp_path / "raw", seed=3)["files"] == receipt["files"]


def test_manual_missing_data_lists_the_steps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = {
        "id": "adni",
        "access": {"method": "manual", "identifier": "LONI IDA project ADNI", "expect": ["**/*.nii.gz"]},
    }
    with pytest.raises(CredentialsError) as caught:
        fetch_source(source, tmp_path / "raw" / "adni")
    message = str(caught.value)
    assert "data/manual/adni" in message and "**/*.nii.gz" in message and "does not exist" in message
    assert "https://adni.loni.usc.edu/data-samples/access-data/" in message and "ida.loni.usc.edu" in message
    assert "  1. " in message and "  3. " in message
    assert not (tmp_path / "raw" / "adni" / RECEIPT).exists()


def test_manual_wrong_layout_is_refused_then_accepted_once_placed(tmp_path):
    place = tmp_path / "placed"
    (place / "sub").mkdir(parents=True)
    (place / "sub" / "readme.txt").write_text("not an image")
    source = {
        "id": "stanford_aimi_chest_ct_2024",
        "access": {"method": "manual", "path": str(place), "expect": ["**/*.nii.gz", "**/*.dcm"]},
    }
    with pytest.raises(CredentialsError, match=r"(?s)lacks them.*azcopy"):
        fetch_source(source, tmp_path / "raw")
    (place / "sub" / "scan.dcm").write_bytes(b"DICM")
    receipt = fetch_source(source, tmp_path / "raw")
    assert receipt["root"] == str(place) and [f["path"] for f in receipt["files"]] == ["sub/readme.txt", "sub/scan.dcm"]


def test_manual_unknown_source_gets_generic_steps_from_its_url(tmp_path):
    source = {
        "id": "newset",
        "access": {"method": "manual", "url": "https://example.org/apply", "path": str(tmp_path / "none")},
    }
    with pytest.raises(CredentialsError, match=r"(?s)https://example.org/apply.*Put them into"):
        fetch_source(source, tmp_path / "raw")


def test_credential_status_for_methods_without_credentials():
    for method in ("synthetic", "local", "manual", "https", "zenodo", "figshare", "tcia"):
        assert credential_status({"id": "x", "access": {"method": method}}) == "not needed"
    assert credential_status({"id": "x", "access": {"method": "s3", "anonymous": True}}) == "not needed"
