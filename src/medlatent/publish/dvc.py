"""Versioned sharing of latent datasets: DVC for the bytes, a git tag per dataset version.

`dvc_setup` (idempotent) initialises DVC in the git repository, points it at the remote of
`publish.remote` and sets `cache.type` to `hardlink`. Why: Snakemake reruns every job whose
input is newer than its outputs, so publishing must not touch the mtimes of the files it
tracks. With `hardlink`, `dvc add` moves each file into the cache and links it back (the same
inode: same mtime) and `dvc checkout` / `dvc pull` relink the cached inode, so Snakemake sees
its outputs unchanged (checked: after add, delete and checkout a downstream job stays done).
`symlink` and `reflink,copy` (DVC's default) both leave files with new mtimes: DVC copies
into the cache, and Snakemake compares a symlink by its target's mtime, so every job
downstream of the latents (CAD training) would rerun. Where hardlinks are impossible (cache
on another filesystem) DVC leaves the workspace files as they are and says so; keep the cache
on the workspace's filesystem. Linked files are read-only (DVC guards its cache); our writers
replace files by rename and never write into them.

`publish` (one Snakemake job: DVC holds a repository-wide lock) refuses every dataset whose
source licence, or whose model's weights licence (`models[].license`), forbids sharing derived
data unless that `license.permission` records a permission, then per dataset: `dvc add` the
folder, `dvc push` it, commit its `.dvc` pointer (with the DVC config naming the remote) and tag
`latents/{model}/{source}/vN`. N grows only when the dataset's content hash changed since the
last tag; republishing unchanged latents is a no-op. Collaborators `dvc import <repo>
data/latents/{model}/{source} --rev <tag>` and move to a later version with `dvc update --rev
<newer tag>`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from medlatent.core.errors import MedLatentError

log = logging.getLogger(__name__)

TAG_PREFIX = "latents"
CACHE_TYPE = "hardlink"
#: DVC files committed with every version: without .dvc/config a clone would not know the remote.
DVC_CONFIG_FILES = (".dvc/config", ".dvc/.gitignore", ".dvcignore")
#: Remote URL schemes that need a DVC plugin package (http, https and local paths do not).
REMOTE_PLUGINS = {
    "s3": "dvc_s3",
    "gs": "dvc_gs",
    "ssh": "dvc_ssh",
    "azure": "dvc_azure",
    "webdav": "dvc_webdav",
    "webdavs": "dvc_webdav",
    "oss": "dvc_oss",
    "hdfs": "dvc_hdfs",
}
GITIGNORE_FIX = (
    "let git and DVC see the .dvc pointers beside the data, as the project's .gitignore does: replace "
    "`/data/` by the five lines `/data/**`, `!/data/*/`, `!/data/latents/**/`, "
    "`!/data/latents/**/*.dvc`, `!/data/latents/**/.gitignore`"
)


class PublishError(MedLatentError):
    """DVC or git refused, or the working directory cannot hold versions."""


class LicenseError(PublishError):
    """The source's licence does not allow sharing data derived from it."""


def sharing_allowed(license_block: dict) -> bool:
    """Derived data may be shared: the licence says so, or a written permission is recorded."""
    return bool(license_block.get("share_derived")) or bool(license_block.get("permission"))


def _refusal(subject: str, license_block: dict, permission_key: str, otherwise: str) -> str:
    return (
        f"{subject} under the licence {license_block['name']!r}, which does not allow sharing derived data "
        f"(license.share_derived: false), and no permission is recorded. If you hold written permission, "
        f"record it in the config at {permission_key} (who granted it, when, reference); otherwise {otherwise}"
    )


def license_refusal(source_id: str, license_block: dict) -> str:
    """Why latents of this source are not shared, and the config key that changes it."""
    return _refusal(
        f"source {source_id!r} is", license_block, f"sources[id={source_id}].license.permission",
        "leave it out of publish.sources",
    )  # fmt: skip


def weights_license_refusal(model_id: str, license_block: dict) -> str:
    """Why latents made with these weights are not shared, and the config key that changes it."""
    return _refusal(
        f"model {model_id!r} has weights", license_block, f"models[id={model_id}].license.permission",
        "leave the model's datasets out of publish.sources",
    )  # fmt: skip


def refusals(dataset: dict) -> list[str]:
    """Why one dataset of the publish slice may not be shared: its source's licence, its weights' licence."""
    reasons = [] if sharing_allowed(dataset["license"]) else [license_refusal(dataset["source"], dataset["license"])]
    weights = dataset.get("weights_license")
    if weights is not None and not sharing_allowed(weights):
        reasons.append(weights_license_refusal(dataset["model"], weights))
    return reasons


def _run(root: Path, *command: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, env=env)
    if result.returncode:
        shown = " ".join(command[2:] if command[0] == sys.executable else command)
        raise PublishError(
            f"`{shown}` failed in {root} (exit {result.returncode}): {(result.stderr or result.stdout).strip()[-2000:]}"
        )
    return result.stdout


def git(root: Path, *args: str) -> str:
    return _run(root, "git", *args)


def dvc(root: Path, *args: str) -> str:
    return _run(root, sys.executable, "-m", "dvc", *args)


def require_git_root(root: str | Path) -> Path:
    """The repository root, or a PublishError saying why versions need git."""
    root = Path(root).resolve()
    result = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True)
    if result.returncode:
        raise PublishError(
            f"{root} is not a git repository: DVC keeps dataset versions as git commits and publish tags each "
            f"version (latents/<model>/<source>/vN). Fix: run `git init` there (or work in a git clone of the "
            f"project), commit, and rerun"
        )
    top = Path(result.stdout.strip()).resolve()
    if top != root:
        raise PublishError(f"{root} is inside the git repository {top}, not its root: run publishing from {top}")
    return root


def _remote_url(root: Path, url: str) -> str:
    """Local remotes become absolute directories (a clone elsewhere must find them)."""
    scheme = url.split("://", 1)[0] if "://" in url else None
    if scheme is None:
        path = (root / url).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return str(path)
    plugin = REMOTE_PLUGINS.get(scheme)
    if plugin and importlib.util.find_spec(plugin) is None:
        raise PublishError(
            f"publish.remote.url={url!r} needs DVC's {scheme} support: "
            f"pip install 'dvc[{scheme}]' (same version as dvc) and rerun"
        )
    return url


def dvc_setup(root: str | Path, remote: dict) -> dict:
    """Idempotent: `dvc init` once, link cache, the configured remote as the default."""
    root = require_git_root(root)
    if not (root / ".dvc").is_dir():
        dvc(root, "init", "--quiet")
    dvc(root, "config", "cache.type", CACHE_TYPE)
    url = _remote_url(root, remote["url"])
    dvc(root, "remote", "add", "--force", "--default", remote["name"], url)
    log.info("DVC ready in %s: cache.type %s, default remote %s -> %s", root, CACHE_TYPE, remote["name"], url)
    return {"cache_type": CACHE_TYPE, "remote": {"name": remote["name"], "url": url}}


def _dvc_md5(text: str) -> str:
    return yaml.safe_load(text)["outs"][0]["md5"]


def _versions(root: Path, tag_base: str) -> list[int]:
    pattern = re.compile(rf"^{re.escape(tag_base)}/v(\d+)$")
    tags = git(root, "tag", "--list", f"{tag_base}/v*").split()
    return sorted(int(m.group(1)) for m in map(pattern.match, tags) if m)


def _pointer(root: Path, folder: Path) -> Path:
    """The dataset's .dvc pointer; PublishError unless the dataset is built and git can track the pointer."""
    if not (root / folder / "index.json").is_file():
        raise PublishError(f"{folder}: no index.json; build the dataset first (snakemake {folder}/index.json)")
    pointer = folder.parent / f"{folder.name}.dvc"
    if subprocess.run(["git", "check-ignore", "-q", str(pointer)], cwd=root).returncode == 0:
        raise PublishError(
            f"{pointer} would be ignored by git, so no version of it could be committed: {GITIGNORE_FIX}"
        )
    return pointer


def tag_version(root: Path, folder: Path, model: str, source: str, license_block: dict) -> dict:
    """Commit the dataset's (already added and pushed) pointer and tag a new version if it changed."""
    pointer = folder.parent / f"{folder.name}.dvc"
    md5 = _dvc_md5((root / pointer).read_text(encoding="utf-8"))
    tag_base = f"{TAG_PREFIX}/{model}/{source}"
    versions = _versions(root, tag_base)
    result = {"dataset": str(folder), "pointer": str(pointer), "md5": md5}
    if versions:
        latest = f"{tag_base}/v{versions[-1]}"
        if _dvc_md5(git(root, "show", f"{latest}:{pointer.as_posix()}")) == md5:
            log.info("%s unchanged since %s", folder, latest)
            return {**result, "tag": latest, "version": versions[-1], "changed": False}
    version = versions[-1] + 1 if versions else 1
    tag = f"{tag_base}/v{version}"
    paths = [p for p in (str(pointer), str(folder.parent / ".gitignore"), *DVC_CONFIG_FILES) if (root / p).exists()]
    git(root, "add", "--", *paths)
    if subprocess.run(["git", "diff", "--cached", "--quiet", "--", *paths], cwd=root).returncode:
        git(
            root,
            "commit",
            "--quiet",
            "-m",
            f"latents: {model}/{source} v{version} ({license_block['name']})",
            "--",
            *paths,
        )
    git(
        root,
        "tag",
        "-a",
        tag,
        "-m",
        f"latent dataset {model}/{source} v{version}; dvc md5 {md5}; licence {license_block['name']}",
    )
    log.info("published %s as %s", folder, tag)
    return {**result, "tag": tag, "version": version, "changed": True}


def publish(root: str | Path, spec: dict) -> dict:
    """Set up DVC, refuse unshareable datasets, then publish every dataset of the slice."""
    root = require_git_root(root)
    refused = [reason for d in spec["datasets"] for reason in refusals(d)]
    if refused:
        raise LicenseError("; ".join(refused))
    setup = dvc_setup(root, spec["remote"])
    folders = [Path(f"{spec['data']}/latents/{d['model']}/{d['source']}") for d in spec["datasets"]]
    pointers = [_pointer(root, folder) for folder in folders]
    if folders:  # one dvc call for all datasets: each dvc start costs about a second
        dvc(root, "add", "--quiet", *map(str, folders))
        dvc(root, "push", "--quiet", "--remote", spec["remote"]["name"], *map(str, pointers))
    published = [
        tag_version(root, folder, d["model"], d["source"], d["license"]) for folder, d in zip(folders, spec["datasets"])
    ]
    withheld = []
    for dataset in spec["withheld"]:
        reason = "; ".join(refusals(dataset))
        log.warning("not publishing %s/%s: %s", dataset["model"], dataset["source"], reason)
        withheld.append({"model": dataset["model"], "source": dataset["source"], "reason": reason})
    return {"remote": setup["remote"], "published": published, "withheld": withheld}
