"""Provenance hashes: a file's sha256, and the code version of a checkout and of an installed copy."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import medlatent
from medlatent.core.hashing import CHECKOUT, code_version, file_sha256, manifest_hashes

PACKAGE = Path(medlatent.__file__).resolve().parent


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_file_sha256_streams_the_whole_file(tmp_path):
    data = bytes(range(256)) * 9000  # over two 1 MiB blocks
    (tmp_path / "manifest.parquet").write_bytes(data)
    assert file_sha256(tmp_path / "manifest.parquet") == hashlib.sha256(data).hexdigest()
    assert manifest_hashes([tmp_path / "manifest.parquet"]) == {tmp_path.name: hashlib.sha256(data).hexdigest()}


def test_code_version_names_the_checkout_commit():
    if CHECKOUT is None or shutil.which("git") is None or not (CHECKOUT / ".git").exists():
        pytest.skip("the tests run from an installed copy or without git")
    version = code_version()
    assert CHECKOUT == PACKAGE.parents[1]  # src/medlatent: the repository is two levels above the package
    assert version["git_commit"] == git(CHECKOUT, "rev-parse", "HEAD")
    assert version["package"] == medlatent.__version__ and isinstance(version["dirty"], bool)


def test_an_installed_copy_reports_no_commit_even_inside_a_repository(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("no git")
    # a venv inside a clone: site-packages sits in a git repository that is not the package's checkout
    git(tmp_path, "init", "-q")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x")
    site = tmp_path / ".venv" / "lib" / "python3" / "site-packages"
    shutil.copytree(PACKAGE, site / "medlatent", ignore=shutil.ignore_patterns("__pycache__"))
    script = "import json; from medlatent.core.hashing import code_version; print(json.dumps(code_version()))"
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    ).stdout
    assert json.loads(out) == {"package": medlatent.__version__, "git_commit": None, "dirty": None}
