"""Method s3 against moto's S3 server on 127.0.0.1: listing, ETag/size checks, resume with Range, credentials."""

from __future__ import annotations

import hashlib
import os

import boto3
import pytest
from servers import clean_env
from servers.s3 import moto_s3

from medlatent.core.errors import CredentialsError, InputError
from medlatent.fetch import fetch_source, s3
from medlatent.fetch.credentials import credential_status

KEY_ID, SECRET = "AKIAEXAMPLEKEYID0000", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
OBJECTS = {
    "images/cohort_1/p1/s1/a.dcm": os.urandom(200_000),
    "images/cohort_1/p1/s1/b.dcm": os.urandom(1000),
    "tables/EMBED_OpenData_metadata.csv": b"anon_dicom_path,FinalImageType\n",
}


@pytest.fixture(scope="module")
def endpoint():
    with moto_s3() as url:
        yield url


@pytest.fixture()
def bucket(endpoint, monkeypatch, tmp_path, request):
    clean_env(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    name = request.node.name.replace("_", "-")[:60].lower()
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    for key, body in OBJECTS.items():
        client.put_object(Bucket=name, Key=f"open-data/{key}", Body=body)
    return name


def source(endpoint: str, bucket: str, **access) -> dict:
    return {
        "id": "embed",
        "access": {
            "method": "s3",
            "identifier": "embed",
            "bucket": bucket,
            "prefix": "open-data/",
            "endpoint_url": endpoint,
            "region": "us-east-1",
            **access,
        },
    }


def test_bucket_prefix_fetched_with_receipt(endpoint, bucket, tmp_path):
    receipt = fetch_source(source(endpoint, bucket), tmp_path / "raw")
    assert receipt["files"] == [
        {"path": k, "size": len(v), "sha256": hashlib.sha256(v).hexdigest()} for k, v in sorted(OBJECTS.items())
    ]
    assert SECRET not in (tmp_path / "raw" / "fetch.json").read_text()
    assert (
        fetch_source(source(endpoint, bucket, include=["*.csv"]), tmp_path / "raw2")["files"][0]["path"]
        == "tables/EMBED_OpenData_metadata.csv"
    )


def test_partial_object_resumes_with_range_and_complete_objects_are_skipped(endpoint, bucket, tmp_path, monkeypatch):
    files = tmp_path / "raw" / "files"
    key = "images/cohort_1/p1/s1/a.dcm"
    (files / key).parent.mkdir(parents=True)
    (files / (key + ".part")).write_bytes(OBJECTS[key][:50_000])
    (files / "images/cohort_1/p1/s1/b.dcm").write_bytes(OBJECTS["images/cohort_1/p1/s1/b.dcm"])
    ranges = []
    make_client = s3.client

    def recording_client(access):
        client = make_client(access)
        client.meta.events.register(
            "before-send.s3.GetObject",
            lambda request, **_: ranges.append((request.url.rsplit("/", 1)[-1], request.headers.get("Range"))),
        )
        return client

    monkeypatch.setattr(s3, "client", recording_client)
    fetch_source(source(endpoint, bucket), tmp_path / "raw")
    assert sorted(ranges) == [("EMBED_OpenData_metadata.csv", b"bytes=0-"), ("a.dcm", b"bytes=50000-")]
    assert (files / key).read_bytes() == OBJECTS[key]


def test_etag_mismatch_leaves_no_file(endpoint, bucket, tmp_path, monkeypatch):
    listed = s3.list_objects
    monkeypatch.setattr(s3, "list_objects", lambda *a: [{**o, "ETag": '"' + "0" * 32 + '"'} for o in listed(*a)])
    with pytest.raises(InputError, match="md5 checksum"):
        fetch_source(source(endpoint, bucket), tmp_path / "raw")
    assert not [p for p in (tmp_path / "raw" / "files").rglob("*") if p.is_file()]


def test_missing_credentials_name_the_variables(endpoint, bucket, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CredentialsError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.*access.profile"):
        fetch_source(source(endpoint, bucket), tmp_path / "raw")
    assert credential_status(source(endpoint, bucket)) == "missing"
    with pytest.raises(CredentialsError, match="profile 'embed' not found"):
        fetch_source(source(endpoint, bucket, profile="embed"), tmp_path / "raw")


def test_missing_prefix_and_bucket_are_input_errors(endpoint, bucket, tmp_path):
    assert credential_status(source(endpoint, bucket)) == "present"
    with pytest.raises(InputError, match="no objects under this prefix"):
        fetch_source(source(endpoint, bucket, prefix="nothing/"), tmp_path / "raw")
    with pytest.raises(InputError, match="NoSuchBucket"):
        fetch_source(source(endpoint, "no-such-bucket"), tmp_path / "raw")


def test_access_denied_maps_to_credentials_error_naming_the_bucket():
    """moto does not enforce bucket policies, so the mapping of S3's AccessDenied is checked directly."""
    from botocore.exceptions import ClientError

    error = s3._client_error(
        ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "ListObjectsV2"),
        "embed-open-data",
        "",
    )
    assert isinstance(error, CredentialsError)
    assert "s3://embed-open-data: AccessDenied" in str(error) and "registry.opendata.aws" in str(error)
