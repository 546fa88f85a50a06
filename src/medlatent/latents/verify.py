"""`medlatent verify`: check a latent dataset folder against its own index.json.

What a collaborator runs after `dvc import` / `dvc pull`, or anyone before trusting a copy:
every shard listed must be present with the recorded sha256 and sample count, no unlisted
tar may sit beside them, the split counts must add up, and `_info.json` and `README.md` must
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


def count_samples(tar_path: Path) -> int:
    """Samples in a WebDataset tar: runs of members sharing a key, as webdataset groups them."""
    count, previous = 0, None
    with tarfile.open(tar_path, mode="r:") as archive:
        for member in archive:
            if not member.isfile():
                continue
            key, _ = base_plus_ext(member.name)
            if key != previous:
                count, previous = count + 1, key
    return count


def _shard_problems(folder: Path, shard: dict) -> list[str]:
    path = folder / shard["file"]
    if not path.is_file():
        return [f"{shard['file']}: missing"]
    problems = []
    if file_sha256(path) != shard["sha256"]:
        problems.append(f"{shard['file']}: sha256 differs from index.json (the file was changed or truncated)")
    try:
        found = count_samples(path)
    except (tarfile.TarError, OSError) as error:
        return [*problems, f"{shard['file']}: not a readable tar ({error})"]
    if found != shard["num_samples"]:
        problems.append(f"{shard['file']}: {found} samples, index.json says {shard['num_samples']}")
    return problems


def verify_dataset(dataset_dir: str | Path) -> dict:
    """Check every shard and dataset file of a latent dataset; InputError lists every difference.

    Args:
        dataset_dir: the dataset folder (`data/latents/<model>/<source>`) or its index.json.

    Returns:
        A summary: dataset name, shards checked, samples per split.
    """
    folder, index = read_index(dataset_dir)
    problems = [problem for shard in index["shards"] for problem in _shard_problems(folder, shard)]
    listed = {shard["file"] for shard in index["shards"]}
    problems += [
        f"{path.name}: a tar that index.json does not list"
        for path in sorted(folder.glob("*.tar"))
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
