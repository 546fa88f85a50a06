"""A Snakemake lock is removed only when no Snakemake process works in the folder."""

from __future__ import annotations

import subprocess
import sys
import time

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
    ready = tmp_path / "ready"
    program.write_text(f"import pathlib, time\npathlib.Path({str(ready)!r}).touch()\ntime.sleep(60)\n")
    running = subprocess.Popen([sys.executable, str(program)], cwd=work)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:  # the interpreter is up (slow on a busy machine)
            time.sleep(0.05)
        with pytest.raises(InputError, match=f"locked by a running Snakemake \\(pid {running.pid}\\)"):
            unlock_if_stale(work)
    finally:
        running.kill()
        running.wait()
    assert (work / LOCKS / "0.input.lock").exists()
