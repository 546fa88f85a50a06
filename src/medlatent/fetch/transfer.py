"""Resumable, verified HTTP downloads shared by every HTTP-based access method.

A file is streamed into `<dest>.part`; a cut connection is retried a bounded number of
times with an HTTP Range request that continues the partial file (also across runs: a
`.part` left by a killed job is continued). When the size or checksum is known the part is
verified before it is renamed onto `dest`, so a file that exists is complete. URLs may
carry secrets (SAS tokens), so messages only ever show a `Remote.name` and exception text
with query strings removed; low-level exceptions are not chained into ours.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm import tqdm

from medlatent.core.errors import CredentialsError, InputError
from medlatent.fetch.archive import archive_stem, extract, is_archive

log = logging.getLogger("medlatent")

CHUNK = 1 << 20
#: Network reads are smaller: bytes of a read cut short are lost, so a resume repeats at most this much.
NET_CHUNK = 1 << 16
#: (connect, read) seconds: a stalled host fails instead of hanging the job.
TIMEOUT = (15, 120)
#: Attempts per file; each continues the partial file.
ATTEMPTS = 4
BACKOFF_S = 0.5
USER_AGENT = "medlatent-fetch"
_RETRYABLE = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
_QUERY = re.compile(r"\?[^\s'\"<>)]*")


@dataclass(frozen=True)
class Remote:
    """One remote file. `url` may hold secrets; `name` is what messages and progress bars show."""

    url: str
    name: str
    size: int | None = None
    checksum: str | None = None  # "<algorithm>:<hex>", e.g. "md5:..." or "sha256:..."


def redact(text: str) -> str:
    """Drop query strings (where SAS tokens and API keys live) from exception text."""
    return _QUERY.sub("?<query hidden>", text)


class _HideQueries(logging.Filter):
    """urllib3 logs each request line at DEBUG (`medlatent -v`), query string and SAS token included."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_HideQueries())


def session(auth: tuple[str, str] | None = None) -> requests.Session:
    s = requests.Session()
    s.auth = auth
    s.headers["User-Agent"] = USER_AGENT
    return s


def check_status(response: requests.Response, name: str, denied: str) -> None:
    """Map HTTP errors to our errors: 401/403 -> CredentialsError with the source's `denied` fix."""
    code = response.status_code
    if code in (401, 403):
        raise CredentialsError(f"{name}: HTTP {code} ({response.reason}). {denied}")
    if code == 404:
        raise InputError(name, "HTTP 404 not found", "check the source's access.identifier / access.url / file names")
    if code >= 400:
        raise InputError(name, f"HTTP {code} ({response.reason})", "the host refused the request; retry later")


def get(sess: requests.Session, url: str, name: str, denied: str, **kwargs) -> requests.Response:
    """A GET for listings and metadata: bounded retries on network errors and 5xx/429, status mapped.

    Network errors become InputError without the URL's query string.
    """
    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = sess.get(url, timeout=TIMEOUT, **kwargs)
        except _RETRYABLE as exc:
            failure = redact(str(exc))
        except requests.RequestException as exc:
            raise InputError(name, f"request failed: {redact(str(exc))}", "check access.url") from None
        else:
            if response.status_code < 500 and response.status_code != 429:
                check_status(response, name, denied)
                return response
            failure = f"HTTP {response.status_code} ({response.reason})"
        if attempt < ATTEMPTS:
            time.sleep(BACKOFF_S * attempt)
    raise InputError(
        name, f"request failed after {ATTEMPTS} attempts: {failure}", "check the network and access.url, then re-run"
    )


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(part: Path, remote: Remote) -> None:
    """Size and checksum of a finished part; a bad part is deleted so a re-run starts afresh."""
    problem = None
    if remote.size is not None and part.stat().st_size != remote.size:
        problem = f"size {part.stat().st_size} != expected {remote.size}"
    elif remote.checksum:
        algorithm, _, expected = remote.checksum.partition(":")
        actual = file_digest(part, algorithm.lower())
        if actual != expected.lower():
            problem = f"{algorithm} checksum {actual} != expected {expected.lower()}"
    if problem:
        part.unlink()
        raise InputError(
            remote.name,
            f"downloaded file is corrupt: {problem}",
            "re-run to download it again; if it persists the host's copy changed, "
            "so check the checksum in the config/record",
        )


def _stream(sess: requests.Session, remote: Remote, part: Path, denied: str) -> None:
    """One attempt: append the rest of the file to `part`; a cut connection raises a retryable error."""
    have = part.stat().st_size if part.exists() else 0
    if remote.size is not None and have >= remote.size:
        return
    headers = {"Range": f"bytes={have}-"} if have else {}
    with sess.get(remote.url, headers=headers, stream=True, timeout=TIMEOUT) as response:
        if response.status_code == 416 and have:
            return  # nothing after `have`: the part is complete, verify decides
        if response.status_code >= 500 or response.status_code == 429:
            raise requests.ConnectionError(f"HTTP {response.status_code}")
        check_status(response, remote.name, denied)
        if have and response.status_code != 206:
            have = 0  # the host ignored Range: start over
        expected = response.headers.get("Content-Length")
        received = 0
        with (
            open(part, "ab" if have else "wb") as handle,
            tqdm(
                total=(have + int(expected)) if expected else remote.size,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=remote.name[-40:],
                file=sys.stderr,
                leave=False,
                mininterval=1.0,
            ) as bar,
        ):
            for chunk in response.iter_content(NET_CHUNK):
                handle.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if expected is not None and received < int(expected):
            raise requests.exceptions.ChunkedEncodingError("connection closed before the end of the file")


def download(sess: requests.Session, remote: Remote, dest: Path, denied: str) -> Path:
    """Fetch `remote` to `dest` (skipped if `dest` exists): resumable, verified, atomic."""
    dest = Path(dest)
    if dest.exists() and (remote.size is None or dest.stat().st_size == remote.size):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log.info("downloading %s", remote.name)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _stream(sess, remote, part, denied)
            break
        except _RETRYABLE as exc:
            if attempt == ATTEMPTS:
                reason = f"download failed after {ATTEMPTS} attempts: {redact(str(exc))}"
                raise InputError(
                    remote.name, reason, "re-run: the partial file is kept and the download continues where it stopped"
                ) from None
            log.warning("%s: %s; resuming (attempt %d of %d)", remote.name, redact(str(exc)), attempt + 1, ATTEMPTS)
            time.sleep(BACKOFF_S * attempt)
    verify(part, remote)
    part.replace(dest)
    return dest


def place(
    sess: requests.Session, remote: Remote, raw_dir: Path, relative: str, *, extract_archives: bool, denied: str
) -> None:
    """Download one file into raw_dir/files/<relative>, or extract it there when it is an archive.

    Archives go through raw_dir/downloads/ and are extracted into files/<archive stem>/, then
    deleted; an existing extracted folder means the archive is done and is not fetched again.
    """
    files = Path(raw_dir) / "files"
    if not (extract_archives and is_archive(relative)):
        download(sess, remote, files / relative, denied)
        return
    target = files / archive_stem(relative)
    if target.is_dir():
        return
    archive = download(sess, remote, Path(raw_dir) / "downloads" / relative, denied)
    try:
        extract(archive, target)
    except InputError:
        archive.unlink(missing_ok=True)  # corrupt or refused: a re-run must not reuse it
        raise
    archive.unlink()


def included(name: str, patterns: list[str] | None) -> bool:
    """Whether `name` is selected by `access.include` globs (fnmatch: `*` also crosses `/`); all if none."""
    return not patterns or any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def place_all(sess: requests.Session, remotes: list[Remote], raw_dir: Path, access: dict, denied: str) -> Path:
    """`place` every remote selected by `access.include`, extracting if `access.extract`; returns files/."""
    for remote in remotes:
        if included(remote.name, access.get("include")):
            place(sess, remote, raw_dir, remote.name, extract_archives=bool(access.get("extract")), denied=denied)
    return Path(raw_dir) / "files"
