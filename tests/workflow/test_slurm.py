"""The workflow on a real SLURM cluster, through workflow/profiles/slurm and the site template.

A single-node cluster (munged, mariadbd, slurmdbd, slurmctld, slurmd with two fake GPUs) is
brought up on localhost under a temporary directory by tests/slurm/up.sh and stopped by
tests/slurm/down.sh whatever happens. Missing Debian packages are installed with apt-get when
the host allows it (root, package registry reachable); a failed install is remembered for a
day so later runs skip at once. Otherwise the cluster tests are skipped with the reason
(`pytest -rs` lists it); MEDLATENT_SLURM_TESTS=0 skips them on purpose.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import DEMO_CONFIG, REPO, edited_demo_config
from workflow_helpers import snakemake as local_snakemake

from medlatent import config as mlconfig
from medlatent.io.h5 import ShardReader

pytestmark = pytest.mark.workflow

SLURM_SCRIPTS = REPO / "tests" / "slurm"
SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm"
SITE_TEMPLATE = REPO / "workflow" / "profiles" / "slurm-site-example" / "config.yaml"
PACKAGES = ("slurm-wlm", "slurmdbd", "munge", "mariadb-server")
TOOLS = (
    "slurmctld",
    "slurmd",
    "slurmdbd",
    "sbatch",
    "srun",
    "sacct",
    "sacctmgr",
    "munged",
    "mungekey",
    "mariadbd",
    "mariadb-install-db",
)
APT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medlatent" / "slurm-apt.json"
APT_RETRY_AFTER_S = 24 * 3600
# What up.sh creates: account, partition, GPU type and node feature; the site template's
# placeholders are replaced by these.
TEST_SITE = {
    "slurm_partition": "debug",
    "slurm_account": "medlatent-test",
    "gpu_model": "fake",
    "constraint": "fake_gpu",
}
RUN_ID = re.compile(r"SLURM run ID: (\S+)")
DEMO_SOURCE = "demo_cxr"
TRAIN_MODEL = "demo_f16_c1"
TRAIN_STEPS = 1


# ---------------------------------------------------------------------------------------
# The packages and the cluster


def _missing_tools() -> list[str]:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [tool for tool in TOOLS if shutil.which(tool, path=search) is None]


def _apt_get(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # wait for another apt/dpkg (e.g. a second test session) instead of failing on its lock
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=120", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def _install_packages() -> str | None:
    """apt-get update + install of PACKAGES; None when it worked, else what went wrong."""
    try:
        update = _apt_get("update", "-qq", timeout=240)
        if update.returncode != 0:
            return f"apt-get update failed: {update.stderr.strip()[-300:]}"
        install = _apt_get("install", "-y", "-qq", "--no-install-recommends", *PACKAGES, timeout=420)
    except subprocess.TimeoutExpired as error:
        return f"apt-get timed out after {error.timeout:.0f} s"
    if install.returncode != 0:
        return f"apt-get install {' '.join(PACKAGES)} failed: {install.stderr.strip()[-300:]}"
    missing = _missing_tools()
    return f"installed {' '.join(PACKAGES)} but {', '.join(missing)} still missing" if missing else None


def _cached_failure() -> str | None:
    try:
        cached = json.loads(APT_CACHE.read_text())
    except (OSError, ValueError):
        return None
    if cached.get("ok") or time.time() - cached.get("time", 0) > APT_RETRY_AFTER_S:
        return None
    return cached.get("reason")


def slurm_unavailable() -> str | None:
    """Why the cluster tests cannot run on this host, or None (installing packages if needed)."""
    if os.environ.get("MEDLATENT_SLURM_TESTS") == "0":
        return "SLURM cluster tests disabled by MEDLATENT_SLURM_TESTS=0"
    missing = _missing_tools()
    if not missing:
        return None
    why = f"SLURM not installed ({', '.join(missing)} missing)"
    if os.geteuid() != 0:
        return f"{why} and not root, so cannot apt-get install {' '.join(PACKAGES)}"
    if shutil.which("apt-get") is None:
        return f"{why} and no apt-get to install {' '.join(PACKAGES)} with"
    if failure := _cached_failure():
        return f"{why}; the last install attempt failed: {failure} (remembered in {APT_CACHE}; delete it to retry)"
    started = time.monotonic()
    failure = _install_packages()
    APT_CACHE.parent.mkdir(parents=True, exist_ok=True)
    APT_CACHE.write_text(
        json.dumps(
            {
                "ok": failure is None,
                "reason": failure,
                "seconds": round(time.monotonic() - started, 1),
                "time": time.time(),
            }
        )
    )
    return f"{why}; {failure}" if failure else None


@dataclass
class Cluster:
    """The running test cluster: its state directory and the environment its clients need."""

    state: Path
    env: dict[str, str]

    def run(self, *command: str, timeout: float = 60) -> str:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr}")
        return result.stdout

    def jobs(self, run_id: str) -> list[dict[str, str]]:
        """sacct's record of every job of one Snakemake run (job name = the plugin's run id)."""
        fields = ["JobID", "State", "Comment", "ReqTRES"]
        out = self.run("sacct", "-X", "-n", "-P", "--starttime", "now-2hours", "--name", run_id, "-o", ",".join(fields))
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}"
            for log in sorted((self.state / "log").glob("*.log"))
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, request) -> Cluster:
    reason = slurm_unavailable()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm")
    # registered first, so that a half-started cluster is stopped as well
    request.addfinalizer(lambda: subprocess.run([str(SLURM_SCRIPTS / "down.sh"), str(state)], timeout=180, check=True))
    up = subprocess.run([str(SLURM_SCRIPTS / "up.sh"), str(state)], capture_output=True, text=True, timeout=240)
    if up.returncode == 3:
        pytest.skip(f"this host cannot run the test cluster: {up.stderr.strip()}")
    path = os.pathsep.join([str(state / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]])
    # sbatch exports the submitter's environment: GPU choices must come from SLURM alone
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "MEDLATENT_FAKE_GPUS")
    }
    found = Cluster(state, {**inherited, "SLURM_CONF": str(state / "etc" / "slurm.conf"), "PATH": path})
    if up.returncode != 0:
        pytest.fail(f"SLURM bring-up failed:\n{up.stdout}\n{up.stderr}\n{found.logs()}")
    return found


def site_profile(
    directory: Path,
    gpu_rules: tuple[str, ...] = (),
    set_threads: dict[str, int] | None = None,
    set_resources: dict[str, dict] | None = None,
) -> Path:
    """The site template filled in for the test cluster; `gpu_rules` get its GPU settings too."""
    site = yaml.safe_load(SITE_TEMPLATE.read_text())
    site["default-resources"].update(
        slurm_partition=TEST_SITE["slurm_partition"], slurm_account=TEST_SITE["slurm_account"], runtime=15, mem_mb=2000
    )
    gpu_settings = {key: TEST_SITE[key] for key in next(iter(site["set-resources"].values()))}
    rules = [*site["set-resources"], *gpu_rules]
    site["set-resources"] = {rule: {**gpu_settings, **(set_resources or {}).get(rule, {})} for rule in rules}
    if set_threads:
        site["set-threads"] = set_threads
    profile = directory / "site-profile"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "config.yaml").write_text(yaml.safe_dump(site))
    return profile


def slurm_command(site: Path, *args: str, snakefile: Path = REPO / "Snakefile") -> list[str]:
    # Status polls start 2 s after submission instead of the plugin's 40 s.
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(snakefile),
        "--profile",
        str(SLURM_PROFILE),
        "--profile",
        str(site),
        "--slurm-init-seconds-before-status-checks",
        "2",
        *args,
    ]


def run_on_slurm(
    cluster: Cluster, workdir: Path, command: list[str], timeout: float = 240, check: bool = True
) -> tuple[subprocess.CompletedProcess, str]:
    """Run Snakemake in `workdir` against the cluster; returns the result and the plugin's run id."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(command, cwd=workdir, env=cluster.env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake on SLURM failed ({result.returncode}):\n{result.stderr[-6000:]}\n"
            f"{_slurm_logs(workdir)}\n{cluster.logs()}"
        )
    found = RUN_ID.search(result.stderr)
    return result, found.group(1) if found else "(no run id: snakemake stopped before submitting)"


def _slurm_logs(workdir: Path) -> str:
    return "\n".join(
        f"--- {log}\n{log.read_text(errors='replace')[-3000:]}" for log in sorted(workdir.glob("logs/**/*.log"))
    )


# ---------------------------------------------------------------------------------------
# The profiles themselves (no cluster needed)


def test_profiles_combine_into_a_slurm_dry_run(tmp_path):
    """Generic + site profile parse, combine, and give every job the site's partition and account."""
    site = site_profile(tmp_path)
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(tmp_path / "work"),
        "--configfile",
        str(DEMO_CONFIG),
        "--profile",
        str(SLURM_PROFILE),
        "--profile",
        str(site),
        "-n",
        f"data/curated/{DEMO_SOURCE}/report.json",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    resources = re.findall(r"^\s+resources: (.+)$", result.stdout, re.MULTILINE)
    assert len(resources) == 2  # fetch_source, curate_source
    for line in resources:
        assert "slurm_partition=debug" in line and "slurm_account=medlatent-test" in line and "nodes=1" in line


def _dry_run_jobs(*profiles: Path) -> list[tuple[str, str]]:
    """(rule, resources line) of every job of the whole demo, planned with these profiles."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", str(DEMO_CONFIG), "-n"]
    for profile in profiles:
        command += ["--profile", str(profile)]
    with tempfile.TemporaryDirectory() as workdir:
        result = subprocess.run([*command, "-d", workdir], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    return re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.+)$", result.stdout, re.MULTILINE)


def test_site_template_sends_every_gpu_rule_to_the_gpu_partition():
    """Snakemake ignores set-resources of unknown rules: a renamed or new GPU rule would land on a CPU partition."""
    jobs = _dry_run_jobs(SLURM_PROFILE, SITE_TEMPLATE.parent)
    rules = {rule for rule, _ in jobs}
    template = yaml.safe_load(SITE_TEMPLATE.read_text())["set-resources"]
    assert set(template) <= rules, (
        f"{SITE_TEMPLATE} sets resources of rules the demo does not run: {sorted(set(template) - rules)}"
    )
    gpu_rules = {rule for rule, resources in jobs if re.search(r"\bgpu=[1-9]", resources)}
    assert gpu_rules, "the demo plans no GPU job"
    assert gpu_rules <= set(template), f"GPU rules missing from {SITE_TEMPLATE}: {sorted(gpu_rules - set(template))}"
    for rule, resources in jobs:
        if rule in gpu_rules:
            assert f"slurm_partition={template[rule]['slurm_partition']}" in resources and "gpu_model=" in resources


# ---------------------------------------------------------------------------------------
# On the cluster


@dataclass
class DemoRun:
    """One Snakemake run of the demo on the cluster (keep-going: every job that can run has run)."""

    workdir: Path
    local_workdir: Path
    local_run: Future
    result: subprocess.CompletedProcess
    run_id: str
    data_targets: list[str]
    train_target: str
    extract_target: str


def _small_training(config: dict) -> None:
    """The demo with one 2D training source in one train and one val shard, and one stage-1
    step: a training job, and the data it needs, within the test budget."""
    for source in config["sources"]:
        if source["id"] == DEMO_SOURCE:
            source["shards"] = {"train": 1, "val": 1, "test": 1}
        elif source["dims"] == 2 and source["role"] in ("train", "both"):
            source["role"] = "cad"
    (model,) = [m for m in config["models"] if m["id"] == TRAIN_MODEL]
    model["stage1"].update(steps=TRAIN_STEPS, disc_start=0)
    model["stage2"].update(steps=TRAIN_STEPS)


@pytest.fixture(scope="module")
def demo_on_slurm(cluster, tmp_path_factory) -> DemoRun:
    """One demo source up to normalization, and stage 1 of one small model (gpu=1), as SLURM jobs."""
    directory = tmp_path_factory.mktemp("demo-on-slurm")
    configfile = edited_demo_config(directory, _small_training)
    config = mlconfig.load(REPO / "config.yaml", configfile)
    shards = [
        f"data/normalized/{s}/{shard}.h5"
        for s, shard in mlconfig.training_shards(config, 2, "train") + mlconfig.training_shards(config, 2, "val")
    ]
    extract_group = next(g for g in mlconfig.extraction_groups(config, DEMO_SOURCE) if g.startswith("test-"))
    extracted = [f"data/normalized/{DEMO_SOURCE}/{shard}.h5" for shard in mlconfig.group_shards(extract_group)]
    data_targets = [f"data/curated/{DEMO_SOURCE}/report.json", *shards, *extracted]
    train_target = f"results/models/{TRAIN_MODEL}/stage1.pt"
    extract_target = f"data/latent_parts/{TRAIN_MODEL}/{DEMO_SOURCE}/{extract_group}.json"
    # The test node has 2 CPUs and ~80 % of this host's memory; the demo's training jobs ask
    # for the full recipe's threads and memory, which a site profile caps like this.
    training = ("train_stage1", "train_stage2_2d")
    site = site_profile(
        directory,
        set_threads={rule: 2 for rule in training},
        set_resources={rule: {"mem_mb": 4000} for rule in training},
    )
    command = slurm_command(site, *data_targets, train_target, extract_target, "--configfile", str(configfile))
    # The local run of the same data targets works while the SLURM run waits between polls.
    with ThreadPoolExecutor(1) as pool:
        local = pool.submit(local_snakemake, directory / "local", *data_targets, configfile=configfile)
        result, run_id = run_on_slurm(cluster, directory / "work", command, timeout=400, check=False)
        local.exception()
    return DemoRun(
        directory / "work", directory / "local", local, result, run_id, data_targets, train_target, extract_target
    )


def _rule(job: dict[str, str]) -> str:
    return job["Comment"].removeprefix("rule_").split("_wildcards_")[0]


def test_demo_slice_on_slurm_matches_local_run(cluster, demo_on_slurm):
    """fetch -> curate -> normalize of one demo source as SLURM jobs gives the files a local run gives."""
    run, local = demo_on_slurm, demo_on_slurm.local_workdir
    run.local_run.result()  # raises when the local run failed
    failed = _failure_report(cluster, run)
    for name in ("manifest.parquet", "rejected.parquet"):
        remote = run.workdir / f"data/curated/{DEMO_SOURCE}/{name}"
        assert remote.exists(), failed
        pd.testing.assert_frame_equal(
            pd.read_parquet(remote), pd.read_parquet(local / f"data/curated/{DEMO_SOURCE}/{name}")
        )
    for shard in run.data_targets[1:]:
        with ShardReader(run.workdir / shard) as remote, ShardReader(local / shard) as here:
            assert remote.meta == here.meta and remote.rejected == here.rejected
            assert remote.item_ids() == here.item_ids() and len(remote) > 0
            for item_id in here.item_ids():
                (remote_array, remote_meta), (array, meta) = remote.read(item_id), here.read(item_id)
                np.testing.assert_array_equal(remote_array, array)
                assert remote_meta == meta

    data_jobs = [
        job for job in cluster.jobs(run.run_id) if _rule(job) in ("fetch_source", "curate_source", "normalize_shard")
    ]
    assert {job["State"] for job in data_jobs} == {"COMPLETED"}, data_jobs
    ours = [job for job in data_jobs if DEMO_SOURCE in job["Comment"]]
    assert sorted(map(_rule, ours)) == ["curate_source", "fetch_source"] + ["normalize_shard"] * (
        len(run.data_targets) - 1
    )


def test_training_job_runs_on_the_gpu_slurm_gave_it(cluster, demo_on_slurm):
    """The stage-1 job asked SLURM for one GPU and medlatent.core.gpus took the device SLURM bound."""
    run = demo_on_slurm
    assert run.result.returncode == 0, _failure_report(cluster, run)
    assert (run.workdir / run.train_target).stat().st_size > 0
    train_log = (run.workdir / f"logs/train/{TRAIN_MODEL}/stage1.log").read_text()
    assert re.search(r"GPUs \['[01]'\] \(SLURM job \d+ \(CUDA_VISIBLE_DEVICES\)\)", train_log), train_log[-3000:]
    (train_job,) = [job for job in cluster.jobs(run.run_id) if _rule(job) == "train_stage1"]
    assert train_job["State"] == "COMPLETED" and "gres/gpu=1" in train_job["ReqTRES"].split(",")


def test_extraction_after_training_runs_on_slurm_and_writes_a_complete_shard(cluster, demo_on_slurm):
    """train stage 1 -> stage 2 -> extract the test shards, each a SLURM job: the tar holds every item of its shard."""
    run = demo_on_slurm
    assert run.result.returncode == 0, _failure_report(cluster, run)
    part = json.loads((run.workdir / run.extract_target).read_text())["parts"][0]
    assert part["shard"] == "test-000"
    with ShardReader(run.workdir / f"data/normalized/{DEMO_SOURCE}/test-000.h5") as shard:
        items = shard.item_ids()
    tar = run.workdir / f"data/latents/{TRAIN_MODEL}/{DEMO_SOURCE}/test-000.tar"
    assert items and part["num_samples"] == len(items) and tar.stat().st_size > 0
    rules = {_rule(job): job["State"] for job in cluster.jobs(run.run_id)}
    assert {rules[r] for r in ("train_stage1", "train_stage2_2d", "extract_latents")} == {"COMPLETED"}, rules


def _failure_report(cluster: Cluster, run: DemoRun) -> str:
    return (
        f"snakemake exit {run.result.returncode}:\n{run.result.stderr[-6000:]}\n"
        f"{_slurm_logs(run.workdir)}\n{cluster.logs()}"
    )


PROBE_SNAKEFILE = """
import json, os
from medlatent.core import gpus

def probe(path, wanted):
    grant = gpus.acquire(wanted)
    env = {k: v for k, v in os.environ.items() if k.startswith(("SLURM_", "CUDA_", "GPU_"))}
    with open(path, "w") as out:
        json.dump({"env": env, "granted": grant.devices, "source": grant.source}, out, indent=1, sort_keys=True)

rule all:
    input: "gpu.json", "cpu.json"

rule gpu_probe:
    output: "gpu.json"
    resources: gpu=1
    run: probe(output[0], resources.gpu)

rule cpu_probe:
    output: "cpu.json"
    run: probe(output[0], 0)
"""


def test_gpu_job_gets_the_device_slurm_bound(cluster, tmp_path):
    """`resources: gpu=1` -> sbatch --gpus=<model>:1; the job sees SLURM's device and medlatent.core.gpus keeps it."""
    (tmp_path / "Snakefile").write_text(PROBE_SNAKEFILE)
    site = site_profile(tmp_path, gpu_rules=("gpu_probe",))
    result, run_id = run_on_slurm(cluster, tmp_path, slurm_command(site, "--verbose", snakefile=tmp_path / "Snakefile"))

    sbatch = {
        line.split("--comment ")[1].split()[0]: line
        for line in result.stderr.splitlines()
        if line.startswith("sbatch call:")
    }
    assert "--gpus=fake:1" in sbatch["rule_gpu_probe"] and "-C fake_gpu" in sbatch["rule_gpu_probe"]
    assert "--gpus" not in sbatch["rule_cpu_probe"]

    gpu = json.loads((tmp_path / "gpu.json").read_text())
    env = gpu["env"]
    assert env["SLURM_JOB_ID"] and env["CUDA_VISIBLE_DEVICES"] in {"0", "1"}
    assert env["CUDA_VISIBLE_DEVICES"] == env["SLURM_STEP_GPUS"] == env["GPU_DEVICE_ORDINAL"]
    assert gpu["granted"] == [env["CUDA_VISIBLE_DEVICES"]] and gpu["source"].startswith(
        f"SLURM job {env['SLURM_JOB_ID']}"
    )
    cpu = json.loads((tmp_path / "cpu.json").read_text())
    assert cpu["env"]["SLURM_JOB_ID"] and "CUDA_VISIBLE_DEVICES" not in cpu["env"] and cpu["granted"] == []

    requested = {job["Comment"]: job["ReqTRES"] for job in cluster.jobs(run_id)}
    assert "gres/gpu=1" in requested["rule_gpu_probe"].split(",")
    assert "gres/gpu" not in requested["rule_cpu_probe"]


COUNTER = """
import json, os, sys, time
steps, state, attempts, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
start = json.load(open(state))["step"] if os.path.exists(state) else 0
with open(attempts, "a") as log:
    log.write(f"{os.environ['SLURM_JOB_ID']} {start}\\n")
for step in range(start, steps):
    time.sleep(0.5)
    with open(state + ".tmp", "w") as tmp:
        json.dump({"step": step + 1}, tmp)
    os.replace(state + ".tmp", state)
with open(out, "w") as done:
    done.write(str(steps))
"""

COUNTER_STEPS = 16

COUNTER_SNAKEFILE = f"""
rule count:
    output: "done.txt"
    shell: "{sys.executable} counter.py {COUNTER_STEPS} state.json attempts.log {{output}}"
"""


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.3)


def _progress(state: Path) -> int:
    try:
        return json.loads(state.read_text())["step"]
    except (OSError, ValueError):
        return 0


def test_cancelled_job_is_retried_and_resumes_from_its_checkpoint(cluster, tmp_path):
    """scancel mid-run: Snakemake reports the failure, resubmits (profile: retries 1), the rerun resumes."""
    (tmp_path / "Snakefile").write_text(COUNTER_SNAKEFILE)
    (tmp_path / "counter.py").write_text(COUNTER)
    command = slurm_command(site_profile(tmp_path), snakefile=tmp_path / "Snakefile")
    with open(tmp_path / "snakemake.log", "w") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=cluster.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for(
                lambda: process.poll() is not None or _progress(tmp_path / "state.json") >= 3,
                120,
                "the job to checkpoint 3 steps",
            )
            assert process.poll() is None, (tmp_path / "snakemake.log").read_text()[-5000:]
            running = cluster.run("squeue", "-h", "-o", "%i %k").split()
            first_job = running[running.index("rule_count") - 1]
            cluster.run("scancel", first_job)
            process.wait(timeout=180)
        finally:
            if process.poll() is None:
                process.kill()
    output = (tmp_path / "snakemake.log").read_text()
    assert process.returncode == 0, output[-5000:]
    assert f"SLURM-job '{first_job}' failed, SLURM status is: 'CANCELLED'" in output

    attempts = [line.split() for line in (tmp_path / "attempts.log").read_text().splitlines()]
    assert len(attempts) == 2 and attempts[0] == [first_job, "0"]
    second_job, resumed_at = attempts[1][0], int(attempts[1][1])
    assert second_job != first_job and 3 <= resumed_at < COUNTER_STEPS
    assert (tmp_path / "done.txt").read_text() == str(COUNTER_STEPS)

    states = {job["JobID"]: job["State"].split()[0] for job in cluster.jobs(RUN_ID.search(output).group(1))}
    assert states == {first_job: "CANCELLED", second_job: "COMPLETED"}
