"""`hf://OWNER/REPO[/PATH]` weight paths (PATH: a file or a folder), resolved from the local Hugging Face cache only.

Weights inputs (`models[].weights`, `embedder.path`, `perceptual.vgg_weights|lpips_weights`)
may name a file of a Hugging Face hub repository instead of a local path. Nothing is ever
downloaded: the file must already be in the hub cache, laid out as huggingface_hub lays it
out (`models--OWNER--REPO/snapshots/<commit>/PATH`, `refs/main` naming the commit). The
cache folder is the one huggingface_hub uses: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
`$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`; it is read from the
environment at each call, so a job sees the cache its shell was given. A missing file is an
error that gives the download command (huggingface_hub 2.x ships it as `hf download`).
"""

from __future__ import annotations

import os
from pathlib import Path

from medlatent.core.errors import InputError

SCHEME = "hf://"


def is_hub_path(value: str | os.PathLike | None) -> bool:
    return isinstance(value, str) and value.startswith(SCHEME)


def split_hub_path(value: str) -> tuple[str, str]:
    """`hf://OWNER/REPO/PATH` -> ("OWNER/REPO", "PATH"); PATH may be empty (the whole repo)."""
    parts = value[len(SCHEME) :].strip("/").split("/", 2)
    if len(parts) < 2 or not all(parts[:2]):
        raise InputError(
            value,
            "not a hub path",
            "write hf://OWNER/REPO/PATH, e.g. hf://stanfordmimi/MedVAE/model_weights/vae_4x_1c_2D.ckpt",
        )
    return f"{parts[0]}/{parts[1]}", parts[2] if len(parts) == 3 else ""


def cache_dir() -> Path:
    """The Hugging Face hub cache folder the environment selects (huggingface_hub's rule)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def download_command(repo_id: str, filename: str = "") -> str:
    """The shell command that puts the file into the hub cache (run where there is internet)."""
    return f"hf download {repo_id}{' ' + filename if filename else ''}"


def _missing(value: str, repo_id: str, filename: str, cache: Path) -> InputError:
    return InputError(
        value,
        f"not in the Hugging Face cache {cache} (nothing is downloaded)",
        f"on a machine with internet run `{download_command(repo_id, filename)}` (huggingface_hub "
        "2.x; older releases call it `huggingface-cli download`), then copy its hub cache folder "
        f"to {cache} here, or set HF_HUB_CACHE / HF_HOME to where that copy is",
    )


def resolve(value: str | os.PathLike) -> Path:
    """A local path for a weights input: local paths unchanged, hub paths from the cache.

    `hf://OWNER/REPO` without a file resolves to the repository's snapshot folder, and
    `hf://OWNER/REPO/SUBFOLDER` to that folder of it (e.g. a diffusers model's `vae`).
    """
    if not is_hub_path(value):
        return Path(value)
    from huggingface_hub import try_to_load_from_cache  # only hub paths pay for the import

    repo_id, filename = split_hub_path(value)
    cache = cache_dir()
    if not filename:
        snapshot = _snapshot_folder(cache, repo_id)
        if snapshot is None:
            raise _missing(value, repo_id, filename, cache)
        return snapshot
    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache)
    if isinstance(found, str):
        return Path(found)
    snapshot = _snapshot_folder(cache, repo_id)  # a folder of the repository (a diffusers subfolder)
    if snapshot is not None and (snapshot / filename).is_dir():
        return snapshot / filename
    raise _missing(
        value, repo_id, filename, cache
    )  # None: never cached; _CACHED_NO_EXIST: the hub said it does not exist


def _snapshot_folder(cache: Path, repo_id: str) -> Path | None:
    """The snapshot `refs/main` names, as huggingface_hub resolves a repo without a revision."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    if not ref.is_file():
        return None
    snapshot = repo / "snapshots" / ref.read_text(encoding="utf-8").strip()
    return snapshot if snapshot.is_dir() else None
