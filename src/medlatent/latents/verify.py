"""`medlatent verify`: check a latent dataset folder against its own index.json.

What a collaborator runs after `dvc import` / `dvc pull`, or anyone before trusting a copy:
every shard listed must be present with the recorded sha256 and sample count, its sidecar
(`<shard>.meta.json`) with the recorded sha256 and exactly the tar's sample keys, no unlisted
tar or sidecar may sit beside them, the split counts must add up, and `_info.json` and `README.md` must
be exactly what the index renders to. Any difference (a tampered, truncated or missing shard,
an edited card) is reported, all at once, with the file it concerns.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from webdataset.tariterators import base_plus_ext

from medlatent.core.errors import InputError
from medlatent.core.hashing import file_sha256
from medlatent.core.ids import SPLITS
from medlatent.latents.index import dataset_files
from medlatent.latents.loader import read_index
from medlatent.latents.sidecar import SIDECAR_SUFFIX, read_sidecar


def sample_keys(tar_path: Path) -> list[str]:
    """Sample keys of a WebDataset tar: runs of members sharing a key, as webdataset groups them."""
    keys: list[str] = []
    with tarfile.open(tar_path, mode="r:") as archive:
        for member in archive:
            if not member.isfile():
                continue
            key, _ = base_plus_ext(member.name)
            if not keys or key != keys[-1]:
                keys.append(key)
    return keys


def _sidecar_problems(folder: Path, shard: dict, keys: list[str] | None) -> list[str]:
    """The sidecar present, with the recorded sha256 and exactly the tar's keys (when the tar was readable)."""
    name = shard["sidecar"]
    path = folder / name
    if not path.is_file():
        return [f"{name}: missing"]
    problems = []
    if file_sha256(path) != shard["sidecar_sha256"]:
        problems.append(f"{name}: sha256 differs from index.json (the file was changed or truncated)")
    try:
        sidecar = read_sidecar(path)
    except InputError as error:
        return [*problems, f"{name}: {error.reason}"]
    if keys is not None and sorted(sidecar["samples"]) != sorted(keys):
        missing, extra = sorted(set(keys) - set(sidecar["samples"])), sorted(set(sidecar["samples"]) - set(keys))
        problems.append(
            f"{name}: keys differ from {shard['file']} ({len(missing)} samples without an entry, e.g. "
            f"{missing[:3]}; {len(extra)} entries without a sample, e.g. {extra[:3]})"
        )
    return problems


def _shard_problems(folder: Path, shard: dict) -> list[str]:
    path = folder / shard["file"]
    if not path.is_file():
        return [f"{shard['file']}: missing", *_sidecar_problems(folder, shard, None)]
    problems = []
    if file_sha256(path) != shard["sha256"]:
        problems.append(f"{shard['file']}: sha256 differs from index.json (the file was changed or truncated)")
    try:
        keys = sample_keys(path)
    except (tarfile.TarError, OSError) as error:
        keys = None
        problems.append(f"{shard['file']}: not a readable tar ({error})")
    if keys is not None and len(keys) != shard["num_samples"]:
        problems.append(f"{shard['file']}: {len(keys)} samples, index.json says {shard['num_samples']}")
    return problems + _sidecar_problems(folder, shard, keys)


def verify_dataset(dataset_dir: str | Path) -> dict:
    """Check every shard and dataset file of a latent dataset; InputError lists every difference.

    Args:
        dataset_dir: the dataset folder (`data/latents/<model>/<source>`) or its index.json.

    Returns:
        A summary: dataset name, shards checked, samples per split.
    """
    folder, index = read_index(dataset_dir)
    problems = [problem for shard in index["shards"] for problem in _shard_problems(folder, shard)]
    listed = {name for shard in index["shards"] for name in (shard["file"], shard["sidecar"])}
    problems += [
        f"{path.name}: a shard file that index.json does not list"
        for path in sorted([*folder.glob("*.tar"), *folder.glob(f"*{SIDECAR_SUFFIX}")])
        if path.name not in listed
    ]
    for split in SPLITS:
        counted = sum(shard["num_samples"] for shard in index["shards"] if shard["split"] == split)
        if counted != index["splits"].get(split, 0):
            problems.append(f"index.json: split {split!r} counts {index['splits'].get(split)}, its shards {counted}")
    for name, expected in dataset_files(index).items():
        path = folder / name
        if name != "index.json" and (not path.is_file() or path.read_text(encoding="utf-8") != expected):
            problems.append(f"{name}: does not match index.json (missing or edited)")
    if problems:
        raise InputError(
            folder,
            "failed verification:\n  - " + "\n  - ".join(problems),
            "fetch the dataset again (`dvc pull` / `dvc update`), or rerun its index_latents job",
        )
    return {"dataset": index["name"], "shards": len(index["shards"]), "splits": index["splits"]}
