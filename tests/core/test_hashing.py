"""Provenance hashes: a file's sha256, and the code version of a checkout (what makes it dirty) and of an
installed copy."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import medlatent
from medlatent.core import hashing
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


def test_only_tracked_changes_and_untracked_code_make_a_checkout_dirty(tmp_path, monkeypatch):
    if shutil.which("git") is None:
        pytest.skip("no git")
    package = tmp_path / "src" / "medlatent"
    package.mkdir(parents=True)
    (package / "losses.py").write_text("WEIGHT = 1\n")
    (tmp_path / "workflow").mkdir()
    (tmp_path / "workflow" / "train.smk").write_text("rule train: shell: 'medlatent train'\n")
    (tmp_path / ".gitignore").write_text("/results/\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
    monkeypatch.setattr(hashing, "CHECKOUT", tmp_path.resolve())
    assert code_version()["dirty"] is False

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "card.json").write_text("{}")  # ignored output
    (tmp_path / "demo-run").mkdir()
    (tmp_path / "demo-run" / "log.txt").write_text("another run's folder")  # untracked, outside the code
    (tmp_path / "scratch.py").write_text("print('scratch')")
    assert code_version()["dirty"] is False

    for untracked_code in (package / "new_loss.py", tmp_path / "workflow" / "rules" / "extra.smk"):
        untracked_code.parent.mkdir(exist_ok=True)
        untracked_code.write_text("# not committed\n")
        assert code_version()["dirty"] is True
        untracked_code.unlink()
    assert code_version()["dirty"] is False
    (package / "losses.py").write_text("WEIGHT = 2\n")
    assert code_version()["dirty"] is True
    git(tmp_path, "checkout", "-q", "--", ".")
    (tmp_path / ".gitignore").unlink()  # a deleted tracked file counts too
    assert code_version()["dirty"] is True
