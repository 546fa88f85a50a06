"""Byte-identical reruns: one 2D source and one tiny model, fetch -> curate -> normalize -> train ->
extract -> index, run for real in two work folders by two processes, the second killed with
SIGKILL in the middle of training and then continued. Every file under data/ and results/ must
be the same bytes in both; a weights file's sha256 is in every shard's sidecar (the samples'
meta), so one stray byte in a weights file would change every sidecar and part record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from workflow_helpers import edited_demo_config, snakemake, snakemake_command, snakemake_env

from medlatent import cli

MODEL, SOURCE = "demo_f16_c1", "demo_cxr"
#: What may differ between two runs of the same workflow, and why: Snakemake's own records,
#: logs and benchmarks (times, pids). Everything else under the work folder is compared.
EXCLUDED = (".snakemake", "logs", "benchmarks")


def small_slice(config: dict) -> None:
    config["sources"] = [s for s in config["sources"] if s["id"] == SOURCE]
    # two shards: one extraction job encodes both (latents.shards_per_job), one part record
    config["sources"][0].update(split={"fractions": {"train": 1.0, "val": 0.0, "test": 0.0}}, shards={"train": 2})
    config["sources"][0]["access"]["n_patients"] = 8
    config["models"] = [m for m in config["models"] if m["id"] == MODEL]
    config["models"][0]["stage1"].update(steps=10, checkpoint_every=3, disc_start=5)
    config["models"][0]["stage2"].update(steps=2, checkpoint_every=1)
    config["cad_tasks"] = []
    config["evaluation"]["cad"]["models"] = None


def files(workdir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(workdir)): p.read_bytes()
        for p in sorted(workdir.rglob("*"))
        if p.is_file() and p.relative_to(workdir).parts[0] not in EXCLUDED
    }


def kill_during_training(workdir: Path, configfile: Path) -> None:
    """Start the slice and SIGKILL its whole process group once stage 1 wrote a checkpoint."""
    checkpoints = workdir / "results" / "checkpoints" / MODEL / "stage1"
    run = subprocess.Popen(
        snakemake_command(workdir, "latents", configfile=configfile),
        env=snakemake_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while not list(checkpoints.glob("step-*.pt")):
        assert run.poll() is None, "the run ended before stage 1 wrote a checkpoint"
        assert time.monotonic() < deadline, "no stage-1 checkpoint within 10 minutes"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()


def test_two_runs_and_a_killed_then_continued_run_give_byte_identical_data_and_results(tmp_path, capsys):
    configfile = edited_demo_config(tmp_path, small_slice)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    snakemake(whole, "latents", configfile=configfile)

    kill_during_training(killed, configfile)
    assert not (killed / "results" / "models" / MODEL / "stage1.pt").exists()
    locked = snakemake(killed, "latents", configfile=configfile, check=False)
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr
    assert cli.main(["unlock-stale", str(killed)]) == 0
    assert "removed the lock left by a killed Snakemake run" in capsys.readouterr().out
    snakemake(killed, "latents", "--rerun-incomplete", configfile=configfile)
    assert "resuming from" in (killed / "logs" / "train" / MODEL / "stage1.log").read_text()

    expected, got = files(whole), files(killed)
    assert sorted(got) == sorted(expected)
    assert any(name.endswith(".tar") for name in expected) and f"results/models/{MODEL}/stage2.pt" in expected
    assert [n for n in expected if n.startswith("data/latent_parts/")] == [
        f"data/latent_parts/{MODEL}/{SOURCE}/train-000-001.json"
    ]
    differing = [name for name in expected if expected[name] != got[name]]
    assert differing == []
    assert cli.main(["verify", str(killed / "data" / "latents" / MODEL / SOURCE)]) == 0
