"""A Snakemake lock is removed only when no Snakemake process works in the folder."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medlatent.core.errors import InputError
from medlatent.core.workdir import LOCKS, unlock_if_stale


def locked(folder):
    (folder / LOCKS).mkdir(parents=True)
    (folder / LOCKS / "0.input.lock").write_text("data/raw/x\n")
    return folder


def test_a_folder_without_lock_is_left_alone(tmp_path):
    assert unlock_if_stale(tmp_path) is None


def test_a_lock_left_by_a_killed_run_is_removed(tmp_path):
    assert "removed the lock" in unlock_if_stale(locked(tmp_path))
    assert list((tmp_path / LOCKS).iterdir()) == []


def test_a_lock_of_a_running_snakemake_is_kept_and_its_pid_named(tmp_path):
    work = locked(tmp_path / "work")
    program = tmp_path / "snakemake"  # a process that looks like Snakemake, working in the folder
    program.write_text("import time\ntime.sleep(60)\n")
    running = subprocess.Popen([sys.executable, str(program)], cwd=work)
    try:
        with pytest.raises(InputError, match=f"locked by a running Snakemake \\(pid {running.pid}\\)"):
            unlock_if_stale(work)
    finally:
        running.kill()
        running.wait()
    assert (work / LOCKS / "0.input.lock").exists()
