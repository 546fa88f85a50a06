"""`medlatent sources`: every configured source with credential status, local data and size;
`medlatent sources check ID` for the manually placed ones. Secret values never appear."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import FULL_CONFIG

from medlatent import cli
from medlatent.fetch.credentials import NEEDS_CREDENTIALS

pytest_plugins = ["servers.fixtures"]

SECRETS = {
    "PHYSIONET_PASSWORD": "physionet-secret-4711",
    "KAGGLE_KEY": "kaggle-secret-4712",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-4713",
    "AIMI_SAS_URL": "https://acct.blob.core.windows.net/mrnet?sv=2021-08-06&se=2099-01-01T00:00:00Z&sp=rl&sig=SASSECRET4714",
}


@pytest.fixture()
def repo(home, monkeypatch, tmp_path, full_config) -> Path:
    """A repository root holding the full config.yaml, no data, and no credentials anywhere."""
    for source in full_config["sources"]:
        if source["access"].get("sas_env"):
            monkeypatch.delenv(source["access"]["sas_env"], raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # boto3 would otherwise ask the EC2 metadata service
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(FULL_CONFIG, root / "config.yaml")
    return root


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["sources", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table(out: str) -> dict[str, list[str]]:
    """The listing's rows by source id: method, credentials, local, size."""
    lines = out.split("\n\n")[0].splitlines()
    assert lines[0].split() == ["id", "method", "credentials", "local", "size"]
    starts = [lines[0].index(name) for name in lines[0].split()]  # cells may hold spaces ("not needed")
    cells = [[line[a:b].strip() for a, b in zip(starts, [*starts[1:], None])] for line in lines[1:]]
    return {row[0]: row[1:] for row in cells}


def test_lists_all_sources_with_missing_credentials_and_what_to_set(repo, capsys, full_config):
    code, out, _ = run(capsys, "--root", str(repo))
    rows = table(out)
    sources = full_config["sources"]
    assert code == 0 and list(rows) == [s["id"] for s in sources] and len(rows) == 22
    for source in sources:
        method, status, local, size = rows[source["id"]]
        assert method == source["access"]["method"] and (local, size) == ("absent", "-")
        assert status == ("missing" if method in NEEDS_CREDENTIALS else "not needed"), source["id"]
    hints = out.split("missing credentials:")[1]
    assert (
        "PHYSIONET_USER and PHYSIONET_PASSWORD" in hints
        and "AIMI_SAS_URL_BONE_AGE" in hints
        and "KAGGLE_USERNAME" in hints
    )


def test_present_credentials_show_as_present_and_their_values_never(repo, capsys, monkeypatch):
    monkeypatch.setenv("PHYSIONET_USER", "someone")
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    code, out, err = run(capsys, "--root", str(repo))
    rows = table(out)
    assert code == 0
    assert {
        source: rows[source][1] for source in ("mimic_cxr", "vindr_mammo", "rsna_screening_mammo", "embed", "mrnet")
    } == dict.fromkeys(("mimic_cxr", "vindr_mammo", "rsna_screening_mammo", "embed", "mrnet"), "present")
    assert rows["rsna_bone_age"][1] == "missing"  # its own variable, AIMI_SAS_URL_BONE_AGE, is unset
    secrets = [*SECRETS.values(), "SASSECRET4714"]
    assert not [s for s in secrets if s in out + err]


def test_local_presence_and_size(repo, capsys):
    raw = repo / "data" / "raw"
    (raw / "cmmd").mkdir(parents=True)
    (raw / "cmmd" / "fetch.json").write_text(
        json.dumps({"files": [{"path": "a.dcm", "size": 1_500_000}, {"path": "b.dcm", "size": 500_000}]})
    )
    (raw / "cq500" / "downloads").mkdir(parents=True)
    (raw / "cq500" / "downloads" / "CQ500-CT-0.zip.part").write_bytes(b"\0" * 2048)
    placed = repo / "data" / "manual" / "oasis3" / "sub-OAS30001"
    placed.mkdir(parents=True)
    (placed / "sub-OAS30001_ses-d0757_acq-TSE_T2w.nii.gz").write_bytes(b"\0" * 100)
    rows = table(run(capsys, "--root", str(repo))[1])
    assert rows["cmmd"][2:] == ["fetched", "2.0 MB"]
    assert rows["cq500"][2:] == ["partial", "2.0 KB"]
    assert rows["oasis3"][2:] == ["placed", "100 B"]
    assert rows["adni"][2:] == ["absent", "-"]


def test_check_passes_on_a_correctly_placed_source(repo, capsys):
    placed = repo / "data" / "manual" / "oasis3" / "sub-OAS30001" / "anat"
    placed.mkdir(parents=True)
    (placed / "sub-OAS30001_ses-d0757_acq-TSE_T2w.nii.gz").write_bytes(b"\0" * 100)
    code, out, _ = run(capsys, "check", "oasis3", "--root", str(repo))
    assert code == 0 and out.startswith("oasis3: OK") and "**/*T2w.nii.gz" in out


@pytest.mark.parametrize("placed", [None, "sub-OAS30001_ses-d0757_T1w.nii.gz"])
def test_check_fails_with_the_steps_to_obtain_the_data(repo, capsys, placed):
    folder = repo / "data" / "manual" / "oasis3"
    if placed:
        folder.mkdir(parents=True)
        (folder / placed).write_bytes(b"\0")  # a T1w volume: not what the source expects
    code, _, err = run(capsys, "check", "oasis3", "--root", str(repo))
    assert code == 1
    assert f"expected files matching **/*T2w.nii.gz under {folder}" in err
    assert "To obtain it:" in err and "1. Apply at https://www.oasis-brains.org" in err and "NITRC-IR" in err


def test_check_is_for_manual_sources_only(repo, capsys):
    code, _, err = run(capsys, "check", "cmmd", "--root", str(repo))
    assert code == 1 and "fetched by method 'tcia'" in err and "oasis3" in err
    code, _, err = run(capsys, "check", "nonexistent", "--root", str(repo))
    assert code == 1 and "unknown source 'nonexistent'" in err
