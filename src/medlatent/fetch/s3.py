"""Method `s3`: objects under `access.bucket`/`access.prefix` of an S3(-compatible) store (EMBED).

boto3 resolves credentials from `access.profile`, AWS_* variables or ~/.aws
(credentials.aws); `access.anonymous: true` sends unsigned requests for public buckets.
`access.endpoint_url` / `access.region` point at other S3-compatible stores (and at a local
test server). Each object is fetched to `<file>.part` with ranged GETs, so an interrupted
object continues where it stopped; an object whose file exists with the listed size is
skipped. Single-part ETags are the object's MD5 and are verified; multipart ETags are not
content hashes, so those objects are checked by size only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medlatent.core.errors import CredentialsError, InputError
from medlatent.fetch import credentials, transfer
from medlatent.fetch.archive import safe_relative

_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')


def client(access: dict) -> Any:
    """A boto3 S3 client for the access block (unsigned when `anonymous`)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    options = {"endpoint_url": access.get("endpoint_url"), "region_name": access.get("region")}
    if access.get("anonymous"):
        return boto3.Session().client(
            "s3", config=Config(signature_version=UNSIGNED, retries={"max_attempts": 5}), **options
        )
    return credentials.aws(access.get("profile")).client("s3", config=Config(retries={"max_attempts": 5}), **options)


def _denied(bucket: str) -> str:
    return (
        f"S3 refused access to bucket {bucket!r}: the credentials in use (access.profile, AWS_* variables or ~/.aws) "
        "must be granted access to it (EMBED: register and sign the research use agreement via "
        "https://registry.opendata.aws/emory-breast-imaging-dataset-embed/)"
    )


def _client_error(exc: Any, bucket: str, what: str) -> Exception:
    """Our error for a botocore ClientError: denied -> CredentialsError, else InputError."""
    code = exc.response.get("Error", {}).get("Code", "")
    if code in (
        "AccessDenied",
        "403",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "AllAccessDisabled",
    ):
        return CredentialsError(f"s3://{bucket}: {code}. {_denied(bucket)}")
    return InputError(
        f"s3://{bucket}/{what}", f"S3 error {code or exc}", "check access.bucket, access.prefix and access.endpoint_url"
    )


def list_objects(s3: Any, bucket: str, prefix: str) -> list[dict]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj for page in pages for obj in page.get("Contents", []) if not obj["Key"].endswith("/")]


def download(s3: Any, bucket: str, obj: dict, dest: Path) -> None:
    """One object to `dest` via `dest.part`, continuing a partial part with a ranged GET."""
    size = obj["Size"]
    if dest.exists() and dest.stat().st_size == size:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    if have < size:
        body = s3.get_object(Bucket=bucket, Key=obj["Key"], Range=f"bytes={have}-")["Body"]
        with open(part, "ab") as handle:
            for chunk in body.iter_chunks(transfer.NET_CHUNK):
                handle.write(chunk)
    md5 = _MD5_ETAG.match(obj.get("ETag", ""))
    remote = transfer.Remote(f"s3://{bucket}/{obj['Key']}", obj["Key"], size, f"md5:{md5.group(1)}" if md5 else None)
    transfer.verify(part, remote)
    part.replace(dest)


def fetch(source: dict, raw_dir: Path, *, seed: int) -> Path:
    from botocore.exceptions import BotoCoreError, ClientError

    access = source["access"]
    bucket, prefix = access["bucket"], access.get("prefix", "")
    s3 = client(access)
    files = raw_dir / "files"
    try:
        objects = list_objects(s3, bucket, prefix)
        if not objects:
            raise InputError(
                f"s3://{bucket}/{prefix}", "no objects under this prefix", "check access.bucket and access.prefix"
            )
        for obj in objects:
            if transfer.included(obj["Key"], access.get("include")):
                relative = safe_relative(obj["Key"][len(prefix) :].lstrip("/"), f"s3://{bucket}/{prefix}")
                download(s3, bucket, obj, files / relative)
    except ClientError as exc:
        raise _client_error(exc, bucket, prefix) from None
    except BotoCoreError as exc:
        raise InputError(
            f"s3://{bucket}/{prefix}",
            f"S3 request failed: {transfer.redact(str(exc))}",
            "check the network and access.endpoint_url, then re-run",
        ) from None
    return files
