"""Training rules in the real Snakefile: every model's final weights are targets, and editing
one model's knob reruns exactly the jobs that depend on it."""

from __future__ import annotations

import re

import pytest
from workflow_helpers import edited_demo_config, planned_jobs, snakemake

WEIGHTS = [
    f"results/models/{m}/stage2.pt"
    for m in ("demo_f16_c1", "demo_f16_c3", "demo_f64_c1", "demo_f64_c4", "demo3d_f64_c1", "demo3d_f512_c1")
]


def jobs(dry_run: str) -> list[tuple[str, str | None]]:
    """(rule, model) of every planned job, sorted."""
    return sorted((rule, wildcards.get("model")) for rule, wildcards in planned_jobs(dry_run))


def model(config: dict, model_id: str) -> dict:
    return next(m for m in config["models"] if m["id"] == model_id)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A workdir where every training output exists with Snakemake's metadata (jobs touched, not run)."""
    work = tmp_path_factory.mktemp("work")
    plan = snakemake(work, "-n", *WEIGHTS).stdout
    planned = jobs(plan)
    assert [job for job in planned if job[0].startswith("train_")] == sorted(
        [
            (f"train_stage{s}", m)
            for m in ("demo_f16_c1", "demo_f16_c3", "demo_f64_c1", "demo_f64_c4")
            for s in ("1", "2_2d")
        ]
        + [("train_stage2_3d", "demo3d_f64_c1"), ("train_stage2_3d", "demo3d_f512_c1")]
    )
    for line in re.findall(r"^\s+output: (.+)$", plan, re.MULTILINE):
        for name in line.split(", "):
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).touch()
    snakemake(work, "--touch", "--forceall", *WEIGHTS)
    assert jobs(snakemake(work, "-n", *WEIGHTS).stdout) == []
    return work


def test_a_stage2_knob_reruns_only_that_models_stage2(finished, tmp_path):
    edited = edited_demo_config(tmp_path, lambda c: model(c, "demo_f16_c1")["stage2"].update(lr=5.0e-4))
    assert jobs(snakemake(finished, "-n", *WEIGHTS, configfile=edited).stdout) == [("train_stage2_2d", "demo_f16_c1")]


def test_a_stage1_knob_reruns_the_model_and_the_3d_model_inflated_from_it(finished, tmp_path):
    edited = edited_demo_config(tmp_path, lambda c: model(c, "demo_f64_c1")["stage1"].update(disc_start=20))
    assert jobs(snakemake(finished, "-n", *WEIGHTS, configfile=edited).stdout) == [
        ("train_stage1", "demo_f64_c1"),
        ("train_stage2_2d", "demo_f64_c1"),
        ("train_stage2_3d", "demo3d_f512_c1"),
    ]


def test_resources_and_threads_do_not_rerun_anything(finished, tmp_path):
    edited = edited_demo_config(tmp_path, lambda c: model(c, "demo3d_f64_c1")["stage2"].update(mem_mb=1000, threads=1))
    assert jobs(snakemake(finished, "-n", *WEIGHTS, configfile=edited).stdout) == []
