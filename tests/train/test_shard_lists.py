"""Shard lists (what training jobs read instead of every shard): counts and sha256 agree with
h5py and hashlib, a changed shard changes the list, and a list whose shard changed since is refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import pytest
from train_helpers import write_shard

from medlatent import cli
from medlatent.core.errors import InputError
from medlatent.train.shard_lists import read_shard_lists


@pytest.fixture
def shards(tmp_path) -> list[str]:
    folder = tmp_path / "data" / "normalized" / "src"
    return [write_shard(folder / f"train-{k:03d}.h5", 2 + k, (8, 8), seed=k) for k in range(2)]


def list_shards(shards: list[str], out: Path) -> dict:
    assert cli.main(["list-shards", "--shards", *shards, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_a_list_names_each_shard_with_its_items_and_sha256_in_order(shards, tmp_path):
    out = tmp_path / "train.shards.json"
    entries = list_shards(shards, out)["shards"]
    for entry, path in zip(entries, shards, strict=True):
        with h5py.File(path, "r") as handle:
            assert entry["items"] == len(handle["items"])
        assert entry["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
        assert entry["path"] == path and entry["bytes"] == Path(path).stat().st_size
    assert [e["items"] for e in entries] == [2, 3]
    assert read_shard_lists([out, out]) == shards + shards


def test_a_rewritten_shard_changes_the_list(shards, tmp_path):
    before = list_shards(shards, tmp_path / "before.json")
    write_shard(Path(shards[1]), 3, (8, 8), seed=7)  # same item count, other pixels
    after = list_shards(shards, tmp_path / "after.json")
    assert [e["sha256"] for e in before["shards"]][0] == after["shards"][0]["sha256"]
    assert before["shards"][1]["sha256"] != after["shards"][1]["sha256"]


def test_a_list_whose_shard_is_gone_or_not_a_list_is_refused_naming_it(shards, tmp_path):
    out = tmp_path / "train.shards.json"
    list_shards(shards, out)
    Path(shards[0]).unlink()
    with pytest.raises(InputError, match=f"{out}: lists {shards[0]}.*rerun snakemake"):
        read_shard_lists([out])
    with pytest.raises(InputError, match=f"{shards[1]}: not a readable shard list"):
        read_shard_lists([shards[1]])  # a shard given where its list belongs
