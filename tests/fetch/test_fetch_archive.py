"""Safe extraction: good archives unpack whole; zip/tar slip entries are refused before anything is written."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from medlatent.core.errors import InputError
from medlatent.fetch.archive import archive_stem, extract, is_archive


def make_zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_tar(path: Path, members: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> Path:
    """`links` maps a name to (tar type, link target)."""
    with tarfile.open(path, "w:gz") as tf:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
    return path


def test_zip_and_tar_extract_whole_with_inside_links(tmp_path):
    z = make_zip(tmp_path / "a.zip", {"d/x.dcm": b"x", "d/y.dcm": b"yy"}, links={"d/link.dcm": "x.dcm"})
    out = extract(z, tmp_path / "a")
    assert (out / "d/x.dcm").read_bytes() == b"x" and (out / "d/y.dcm").read_bytes() == b"yy"
    assert (out / "d/link.dcm").is_symlink() and (out / "d/link.dcm").read_bytes() == b"x"
    t = make_tar(
        tmp_path / "b.tar.gz", {"s/ct.nii.gz": b"ct"}, links={"s/alias.nii.gz": (tarfile.SYMTYPE, "ct.nii.gz")}
    )
    out = extract(t, tmp_path / "b")
    assert (out / "s/alias.nii.gz").read_bytes() == b"ct"
    assert not list(tmp_path.glob(".*.extracting"))


@pytest.mark.parametrize(
    ("kind", "member", "link"),
    [
        ("zip", "../evil.txt", None),
        ("zip", "/abs/evil.txt", None),
        ("zip", "ok/../../evil.txt", None),
        ("zip", "link", "../../outside"),
        ("zip", "link", "/etc/passwd"),
        ("tar", "../evil.txt", None),
        ("tar", "/abs/evil.txt", None),
        ("tar", "link", (tarfile.SYMTYPE, "../../outside")),
        ("tar", "link", (tarfile.SYMTYPE, "/etc/passwd")),
        ("tar", "hard", (tarfile.LNKTYPE, "../../outside")),
    ],
)
def test_malicious_entries_refused_naming_archive_and_member(tmp_path, kind, member, link):
    good = {"good.txt": b"fine"}
    if kind == "zip":
        archive = make_zip(
            tmp_path / "bad.zip", good if link else {**good, member: b"evil"}, {member: link} if link else None
        )
    else:
        archive = make_tar(
            tmp_path / "bad.tar.gz", good if link else {**good, member: b"evil"}, {member: link} if link else None
        )
    target = tmp_path / "work" / "out"
    with pytest.raises(InputError) as caught:
        extract(archive, target)
    message = str(caught.value)
    assert archive.name in message and repr(member) in message
    assert not target.exists() and not (tmp_path / "work" / ".out.extracting").exists()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "outside").exists()


def test_corrupt_archive_is_an_input_error(tmp_path):
    archive = tmp_path / "cut.zip"
    archive.write_bytes(make_zip(tmp_path / "full.zip", {"a": b"a" * 1000}).read_bytes()[:50])
    with pytest.raises(InputError, match="cannot read archive"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_archive_names():
    assert is_archive("CQ500-CT-1.zip") and is_archive("x.TAR.GZ") and not is_archive("reads.csv")
    assert archive_stem("Totalsegmentator_dataset_v201.zip") == "Totalsegmentator_dataset_v201"
    assert archive_stem("a.b.tar.gz") == "a.b"
