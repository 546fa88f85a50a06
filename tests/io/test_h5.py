"""The normalized shard store read back by plain h5py: lossless, LZF-compressed, ~1 MiB chunks."""

import h5py
import numpy as np

from medlatent.io.h5 import ShardReader, ShardWriter


def test_shard_items_round_trip_exactly_with_lzf_and_megabyte_chunks(tmp_path):
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
        assert all(datasets[name].compression == "lzf" and datasets[name].shuffle for name in items)
    with ShardReader(path) as reader:
        for item_id, array, meta in reader:
            assert reader.read(item_id)[0].dtype == np.float32 and meta == {"split": "train"}
            np.testing.assert_array_equal(array, items[item_id].astype(np.float32))
