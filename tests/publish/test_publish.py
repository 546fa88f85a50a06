"""Publishing latent datasets with DVC: licence gate, versions as git tags, the collaborator path.

Everything runs in temporary git repositories with a local DVC remote; the project's own
.gitignore is copied in, so its rules for data/ are what is tested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from latent_fixtures import CC0, extract_spec, index_spec, tiny_model, write_source

from medlatent import config as mlconfig
from medlatent import load_latents
from medlatent.latents.extract import extract_shards
from medlatent.latents.index import write_dataset_files
from medlatent.publish.dvc import LicenseError, PublishError, dvc_setup, publish, sharing_allowed

REPO = Path(__file__).resolve().parents[2]
KNEE = {
    "name": "synthetic (CC0)",
    "share_derived": False,
    "commercial": False,
    "permission": None,
    "notes": "marked not shareable on purpose",
}


@pytest.fixture(autouse=True)
def git_identity(monkeypatch):
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "MedLatent Tests")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "tests@medlatent.invalid")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")


def run(cwd: Path, *command: str) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{command} failed: {result.stderr}"
    return result.stdout


def dvc(cwd: Path, *args: str) -> str:
    return run(cwd, sys.executable, "-m", "dvc", *args)


def new_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    run(path, "git", "init", "-q", "-b", "main")
    shutil.copy(REPO / ".gitignore", path / ".gitignore")
    run(path, "git", "add", ".gitignore")
    run(path, "git", "commit", "-q", "-m", "init")
    return path


def build_dataset(root: Path, shards: dict[str, int], seed: int = 0) -> Path:
    """data/latents/tiny/demo.wrist in the repository, from fixture shards."""
    weights = tiny_model(root / "work" / "stage2.pt")
    folder, manifest = write_source(root / "work", "demo.wrist", shards, (16, 16), seed=seed)
    dataset = root / "data" / "latents" / "tiny" / "demo.wrist"
    part = root / "work" / "parts" / "all.json"
    extract_shards(
        extract_spec("tiny", "demo.wrist"), [folder / f"{s}.h5" for s in shards], manifest, weights, dataset, part
    )
    write_dataset_files(index_spec("tiny", "demo.wrist", CC0), [part], weights.parent / "card.json", dataset)
    return dataset


def spec(remote: Path, license_block: dict = CC0, source: str = "demo.wrist") -> dict:
    return {
        "remote": {"name": "demo", "url": str(remote)},
        "data": "data",
        "datasets": [{"model": "tiny", "source": source, "license": license_block}],
        "withheld": [],
    }


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def test_non_shareable_source_is_refused_naming_licence_and_config_key(tmp_path):
    root = new_repo(tmp_path / "repo")
    with pytest.raises(LicenseError) as refused:
        publish(root, spec(tmp_path / "remote", KNEE, source="demo_knee"))
    message = str(refused.value)
    assert "'synthetic (CC0)'" in message and "share_derived: false" in message
    assert "sources[id=demo_knee].license.permission" in message
    assert not (root / ".dvc").exists() and not (tmp_path / "remote").exists()  # refused before anything moved


def test_recorded_permission_opens_the_gate_and_the_demo_knee_is_withheld():
    assert not sharing_allowed(KNEE)
    assert sharing_allowed({**KNEE, "permission": "written permission, 2025-03-01, ref 42"})
    config = mlconfig.load(REPO / "config.yaml", REPO / "workflow" / "demo" / "config.yaml")
    sliced = mlconfig.publish_slice(config)
    assert {d["source"] for d in sliced["withheld"]} == {"demo_knee"}
    assert "demo_knee" not in {d["source"] for d in sliced["datasets"]}
    config["publish"]["sources"] = ["demo_knee"]  # asked for explicitly: handed to publish, which refuses it
    assert {d["source"] for d in mlconfig.publish_slice(config)["datasets"]} == {"demo_knee"}


def test_publishing_needs_a_git_repository(tmp_path):
    with pytest.raises(PublishError, match="not a git repository.*git init"):
        dvc_setup(tmp_path, {"name": "demo", "url": "remote"})


def test_publish_versions_and_a_second_clone_imports_and_updates(tmp_path):
    root = new_repo(tmp_path / "repo")
    remote = tmp_path / "remote"
    dvc_setup(root, {"name": "demo", "url": str(remote)})
    config_once = (root / ".dvc" / "config").read_text()
    dvc_setup(root, {"name": "demo", "url": str(remote)})  # idempotent
    assert (root / ".dvc" / "config").read_text() == config_once
    assert 'type = hardlink' in config_once

    dataset = build_dataset(root, {"train-000": 4, "test-000": 2})
    before = mtimes(dataset)
    receipt = publish(root, spec(remote))
    assert [(p["tag"], p["changed"]) for p in receipt["published"]] == [("latents/tiny/demo.wrist/v1", True)]
    assert mtimes(dataset) == before  # hardlinked into the cache: Snakemake sees nothing new
    shutil.rmtree(dataset)
    dvc(root, "checkout", "--quiet")
    assert mtimes(dataset) == before
    again = publish(root, spec(remote))
    assert [(p["tag"], p["changed"]) for p in again["published"]] == [("latents/tiny/demo.wrist/v1", False)]
    assert not run(root, "git", "status", "--porcelain", "--", "data", ".dvc")  # pointer and remote committed
    assert run(root, "git", "tag", "--list").split() == ["latents/tiny/demo.wrist/v1"]

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(root), str(clone))
    dvc(
        clone,
        "import",
        "--quiet",
        str(root),
        "data/latents/tiny/demo.wrist",
        "-o",
        "shared",
        "--rev",
        "latents/tiny/demo.wrist/v1",
    )
    samples = [meta["item_id"] for _, _, meta in load_latents(clone / "shared", split="train")]
    assert len(samples) == 3  # 4 train items, the first one rejected in normalization

    build_dataset(root, {"train-000": 6, "test-000": 2}, seed=1)
    receipt = publish(root, spec(remote))
    assert [(p["tag"], p["changed"]) for p in receipt["published"]] == [("latents/tiny/demo.wrist/v2", True)]
    dvc(clone, "update", "--quiet", "--rev", "latents/tiny/demo.wrist/v2", "shared.dvc")
    assert len(list(load_latents(clone / "shared", split="train"))) == 5
    assert os.listdir(remote)  # the bytes came from the DVC remote


def test_dvc_setup_command_reads_the_remote_from_the_config_and_is_idempotent(tmp_path):
    from medlatent import cli

    root = new_repo(tmp_path / "repo")
    files = [str(REPO / "config.yaml"), str(REPO / "workflow" / "demo" / "config.yaml")]
    for _ in range(2):
        assert cli.main(["dvc-setup", "--root", str(root), "--configfile", *files]) == 0
    config = (root / ".dvc" / "config").read_text()
    assert f"url = {root / '.dvc-remote-demo'}" in config and "remote = demo" in config
    assert config.count("['remote") == 1 and (root / ".dvc-remote-demo").is_dir()
    assert run(root, "git", "check-ignore", ".dvc-remote-demo/x").strip()  # the demo remote stays out of git
