"""The normalized shard store read back by plain h5py: lossless, Blosc LZ4, ~1 MiB chunks."""

import os
import subprocess
import sys

import h5py
import hdf5plugin
import numpy as np

from medlatent.io.h5 import ShardReader, ShardWriter


def test_shard_items_round_trip_exactly_with_blosc_lz4_and_megabyte_chunks(tmp_path):
    rng = np.random.default_rng(0)
    items = {
        "mammo": np.pad(rng.uniform(-1, 1, (1024, 300)), ((0, 0), (106, 106)), constant_values=-1.0),
        "ct": rng.uniform(-1, 1, (70, 80, 90)).astype(np.float32),
        "small": rng.uniform(-1, 1, (8, 6)).astype(np.float32),
    }
    path = tmp_path / "shard.h5"
    with ShardWriter(path, {"shard": "train-000"}) as writer:
        for item_id, array in items.items():
            writer.add(item_id, array, {"split": "train"})
    with h5py.File(path, "r") as handle:
        datasets = handle["items"]
        assert {name: datasets[name].chunks for name in items} == {
            "mammo": (512, 512),
            "ct": (64, 64, 64),
            "small": (8, 6),
        }
        filters = {name: datasets[name].id.get_create_plist().get_filter(0) for name in items}
        # Blosc with LZ4 (compressor code 1) and byte shuffle (1) at level 5
        assert all(f[0] == hdf5plugin.BLOSC_ID and tuple(f[2][4:7]) == (5, 1, 1) for f in filters.values())
    with ShardReader(path) as reader:
        for item_id, array, meta in reader:
            assert reader.read(item_id)[0].dtype == np.float32 and meta == {"split": "train"}
            np.testing.assert_array_equal(array, items[item_id].astype(np.float32))


WRITE_SHARD = """
import sys, numpy as np
from medlatent.io.h5 import ShardWriter
with ShardWriter(sys.argv[1], {"shard": "s"}) as writer:
    writer.add("ct", np.random.default_rng(0).uniform(-1, 1, (70, 80, 90)).astype(np.float32), {})
"""


def test_shard_bytes_do_not_depend_on_the_blosc_thread_count(tmp_path):
    # with 4 Blosc threads the compressed bytes differ; the writer pins one thread
    for name, threads in (("one.h5", "1"), ("four.h5", "4")):
        environment = {**os.environ, "BLOSC_NTHREADS": threads}
        subprocess.run([sys.executable, "-c", WRITE_SHARD, str(tmp_path / name)], check=True, env=environment)
    assert (tmp_path / "one.h5").read_bytes() == (tmp_path / "four.h5").read_bytes()
