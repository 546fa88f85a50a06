"""Safe extraction of downloaded zip and tar archives.

Archives come from hosts we do not control, so every member is checked before anything is
written: absolute names, `..` components and links that resolve outside the target are
refused ("zip slip" / "tar slip"). Tar uses the standard library's `data` filter (PEP 706),
which also refuses device files and absolute or escaping link targets; zip has no such
filter, so its members are checked here. Extraction goes to a temporary sibling folder that
is renamed onto the target only when every member is written, so a target that exists is
complete.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from medlatent.core.errors import InputError

#: Suffixes recognised as archives, longest first so ".tar.gz" wins over ".gz".
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip")


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def archive_stem(name: str) -> str:
    """The name without its archive suffix: the folder an archive is extracted into."""
    lowered = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


def safe_relative(name: str, origin: str | Path) -> PurePosixPath:
    """A member or listing name as a relative path that stays inside its folder, or an InputError.

    `origin` names where the name came from (an archive, a listing) for the message.
    """
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    if path.is_absolute() or (len(normalised) > 1 and normalised[1] == ":"):
        raise InputError(
            origin,
            f"entry {name!r} has an absolute path",
            "refusing to write outside the target; get the data from a trusted copy",
        )
    if ".." in path.parts:
        raise InputError(
            origin,
            f"entry {name!r} contains a '..' component",
            "refusing to write outside the target; get the data from a trusted copy",
        )
    return path


def _check_zip_link(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, origin: Path) -> str:
    """The link text of a zip symlink member, if it resolves inside `target`."""
    link = archive.read(info).decode("utf-8")
    member_dir = target.joinpath(*safe_relative(info.filename, origin).parts).parent
    resolved = Path(os.path.normpath(member_dir / link))
    if Path(link).is_absolute() or not resolved.is_relative_to(target):
        raise InputError(
            origin,
            f"entry {info.filename!r} is a symlink to {link!r}, outside the extraction folder",
            "refusing to extract; get the data from a trusted copy",
        )
    return link


def _extract_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        links = {}
        for info in members:
            safe_relative(info.filename, archive)
            if stat.S_ISLNK(info.external_attr >> 16):
                links[info.filename] = _check_zip_link(zf, info, target, archive)
        for info in members:
            if info.filename in links:
                path = target / safe_relative(info.filename, archive)
                path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(links[info.filename], path)
            else:
                zf.extract(info, target)


def _extract_tar(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for member in members:
            safe_relative(member.name, archive)
            try:
                tarfile.data_filter(member, str(target))
            except tarfile.FilterError as exc:
                raise InputError(
                    archive,
                    f"entry {member.name!r} refused: {exc}",
                    "refusing to extract; get the data from a trusted copy",
                ) from None
        tf.extractall(target, members=members, filter="data")


def extract(archive: Path, target: Path) -> Path:
    """Extract `archive` into the folder `target` (created atomically); returns `target`.

    Raises InputError naming the archive and the member for unsafe entries, and for
    archives that cannot be read (truncated or corrupt downloads).
    """
    archive, target = Path(archive), Path(target)
    staging = target.with_name(f".{target.name}.extracting")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    unpack = _extract_zip if archive.name.lower().endswith(".zip") else _extract_tar
    try:
        unpack(archive, staging.resolve())
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, UnicodeDecodeError) as exc:
        shutil.rmtree(staging)
        raise InputError(
            archive, f"cannot read archive: {exc}", "the download is corrupt or truncated; delete it and fetch again"
        ) from None
    except BaseException:
        shutil.rmtree(staging)
        raise
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target
