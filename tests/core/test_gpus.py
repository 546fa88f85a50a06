"""GPU slots: disjoint devices for concurrent jobs, blocking while busy, SLURM and CPU-only
machines; and a real Snakemake run of concurrent GPU jobs that never share a device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from medlatent.core import gpus


@pytest.fixture()
def fake_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv(gpus.FAKE_ENV, "4")
    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    return tmp_path / "locks"


def test_concurrent_grants_are_disjoint_and_freed_on_release(fake_gpus):
    first, second = gpus.acquire(2), gpus.acquire(2)
    assert sorted(first.devices + second.devices) == ["0", "1", "2", "3"]
    assert first.environment() == {"CUDA_VISIBLE_DEVICES": ",".join(first.devices)}
    with pytest.raises(TimeoutError, match="no 1 free GPU slot"):
        gpus.acquire(1, timeout=0.5)
    gpus.release(first)
    third = gpus.acquire(2, timeout=5)
    assert sorted(third.devices) == sorted(first.devices)
    gpus.release(second)
    gpus.release(third)


def test_a_waiting_job_gets_its_devices_when_another_finishes(fake_gpus):
    holder = gpus.acquire(4)
    got: list[list[str]] = []
    waiter = threading.Thread(target=lambda: got.append(gpus.acquire(3, timeout=20).devices))
    waiter.start()
    time.sleep(0.6)
    assert not got  # still blocked
    gpus.release(holder)
    waiter.join(timeout=20)
    assert len(got) == 1 and len(got[0]) == 3


def test_a_killed_job_frees_its_slots(fake_gpus):
    script = (
        "from medlatent.core import gpus; import os; g = gpus.acquire(4); print(g.devices, flush=True); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", script], check=True, env=os.environ.copy(), capture_output=True)
    with gpus.granted(4, timeout=5) as grant:
        assert grant.count == 4


def test_more_gpus_than_exist_are_cut_and_zero_means_cpu(fake_gpus, monkeypatch):
    with gpus.granted(9) as grant:
        assert grant.count == 4
    with gpus.granted(0) as grant:
        assert grant.devices == [] and grant.environment() == {"CUDA_VISIBLE_DEVICES": ""}
    monkeypatch.setenv(gpus.FAKE_ENV, "0")
    with gpus.granted(2) as grant:
        assert grant.devices == [] and "no GPU" in grant.source


def test_visible_devices_are_the_slots_and_slurm_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.delenv(gpus.FAKE_ENV, raising=False)
    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with gpus.granted(1) as a, gpus.granted(1) as b:
        assert sorted(a.devices + b.devices) == ["3", "5"]
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(tmp_path / "slurm-locks"))
    with gpus.granted(2) as a, gpus.granted(2) as b:  # SLURM bound the devices: no locking
        assert a.devices == b.devices == ["3", "5"] and "SLURM job 42" in a.source
    assert not (tmp_path / "slurm-locks").exists()


def test_gpu_run_passes_the_devices_to_the_command(fake_gpus, tmp_path):
    out = tmp_path / "seen.txt"
    command = [
        sys.executable,
        "-m",
        "medlatent.cli",
        "gpu-run",
        "--gpus",
        "3",
        "--",
        sys.executable,
        "-c",
        f"import os; open({str(out)!r}, 'w').write(os.environ['CUDA_VISIBLE_DEVICES'])",
    ]
    subprocess.run(command, check=True, env=os.environ.copy(), capture_output=True)
    assert sorted(out.read_text().split(",")) == ["0", "1", "2"]


JOB = """\
import json, os, sys, time
start = time.time()
time.sleep(float(sys.argv[2]))
json.dump({"devices": os.environ["CUDA_VISIBLE_DEVICES"].split(","), "start": start, "end": time.time()},
          open(sys.argv[1], "w"))
"""

SNAKEFILE = """\
JOBS = {jobs!r}

rule all:
    input: expand("out/{{job}}.json", job=list(JOBS))

rule gpu_job:
    output: "out/{{job}}.json"
    resources: gpu=lambda wildcards: JOBS[wildcards.job]
    shell: "{python} -m medlatent.cli gpu-run --gpus {{resources.gpu}} -- {python} job.py {{output}} 1.0"
"""


@pytest.mark.parametrize("budget", [8, 16])
def test_concurrent_snakemake_jobs_never_share_a_device(tmp_path, budget):
    """--resources gpu=8 (the real cap) and gpu=16 (Snakemake over-admits: the slots must block)."""
    jobs = {f"j{k:02d}": 1 + k % 2 for k in range(10)}  # 15 GPUs asked in all, 8 exist
    (tmp_path / "job.py").write_text(JOB)
    (tmp_path / "Snakefile").write_text(SNAKEFILE.format(jobs=jobs, python=sys.executable))
    env = {**os.environ, gpus.FAKE_ENV: "8", gpus.LOCK_DIR_ENV: str(tmp_path / "locks")}
    env.pop("SLURM_JOB_ID", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "8",
            "--resources",
            f"gpu={budget}",
            "-d",
            str(tmp_path),
            "-s",
            str(tmp_path / "Snakefile"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    records = {name: json.loads((tmp_path / "out" / f"{name}.json").read_text()) for name in jobs}
    assert all(len(records[name]["devices"]) == jobs[name] for name in jobs)
    overlapping = 0
    names = sorted(records)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ra, rb = records[a], records[b]
            if ra["start"] < rb["end"] and rb["start"] < ra["end"]:
                overlapping += 1
                assert set(ra["devices"]).isdisjoint(rb["devices"]), (a, b, ra, rb)
    assert overlapping > 0  # the jobs really ran concurrently


def test_a_compute_job_sees_only_its_locked_devices_until_it_ends(fake_gpus, monkeypatch):
    import torch

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    threads = torch.get_num_threads()
    try:
        with gpus.job_device(1, 2) as device:
            visible = os.environ["CUDA_VISIBLE_DEVICES"].split(",")
            assert len(visible) == 2 and torch.get_num_threads() == 1
            with pytest.raises(TimeoutError):  # the other two are free, these two are held
                gpus.acquire(3, timeout=0.5)
            assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
        gpus.release(gpus.acquire(4, timeout=5))  # freed when the job ends
    finally:
        torch.set_num_threads(threads)
