"""Training data: crops and patches from real HDF5 shards, the seeded sample stream, and how a
global batch is cut into micro-batches across processes and accumulation steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from train_helpers import (
    make_data,
    one_thread,  # noqa: F401 (autouse fixture)
    write_shard,
)

from medlatent.core.errors import ConfigError, InputError
from medlatent.io.h5 import ShardReader
from medlatent.train.data import (
    CropDataset,
    MicroBatches,
    StepSampler,
    crop_size,
    index_shards,
    train_loader,
    validation_loader,
)


def test_2d_crops_are_clipped_to_the_smallest_image_and_to_the_downsampling(tmp_path):
    train, _ = make_data(tmp_path, (40, 36), n_val=0)
    items = index_shards(train, dims=2)
    assert len(items) == 12 and all(item.shape == (40, 36) for item in items)
    assert crop_size(items, [384, 384], multiple=4, dims=2) == (40, 36)  # whole image when smaller
    assert crop_size(items, [16, 30], multiple=4, dims=2) == (16, 28)
    dataset = CropDataset(items, (16, 28), seed=0, shuffle=True)
    sample = dataset[5]
    assert sample.shape == (1, 16, 28) and sample.dtype == torch.float32


def test_3d_patches_pad_small_volumes_with_the_background(tmp_path):
    path = write_shard(tmp_path / "src" / "train-000.h5", 2, (10, 30, 20), seed=0)
    items = index_shards([path], dims=3)
    size = crop_size(items, [24, 24, 24], multiple=4, dims=3)
    patch = CropDataset(items, size, seed=0, shuffle=True)[0]
    assert patch.shape == (1, 24, 24, 24)
    # the 10-voxel axis is padded by 7 on each side with -1
    assert torch.all(patch[0, :7] == -1.0) and torch.all(patch[0, -7:] == -1.0)
    with pytest.raises(ConfigError, match="multiple of the model's downsampling 8"):
        crop_size(items, [20, 24, 24], multiple=8, dims=3)


def test_a_sample_is_a_function_of_seed_and_number_only(tmp_path):
    train, _ = make_data(tmp_path, (32, 32), n_val=0)
    items = index_shards(train, dims=2)
    a, b = CropDataset(items, (16, 16), 3, True), CropDataset(items, (16, 16), 3, True)
    assert torch.equal(a[17], b[17])  # another instance, another order of calls
    assert not torch.equal(a[17], CropDataset(items, (16, 16), 4, True)[17])
    # one epoch visits every item exactly once
    firsts = {tuple(a[n][0, 8, :4].tolist()) for n in range(len(items))}
    assert len(firsts) == len(items)


def test_micro_batches_partition_the_global_batch_the_same_way_for_any_world():
    single, double = MicroBatches(8, 4, world=1), MicroBatches(8, 4, world=2)
    assert (single.accumulation, double.accumulation) == (2, 1)
    step = 3
    assert single.numbers(step, 0) == [list(range(24, 28)), list(range(28, 32))]
    assert [double.numbers(step, r)[0] for r in (0, 1)] == single.numbers(step, 0)
    assert single.loss_scale(4) == 0.5 and double.loss_scale(4) == 1.0
    uneven = MicroBatches(10, 4, world=1)
    assert uneven.accumulation == 3 and uneven.sizes == [4, 3, 3]
    assert sorted(n for batch in uneven.numbers(0, 0) for n in batch) == list(range(10))


def test_processes_are_limited_so_that_no_micro_batch_is_empty():
    assert MicroBatches.fit(32, 4, granted=8).world == 8
    assert MicroBatches.fit(2, 1, granted=8).world == 2
    plan = MicroBatches.fit(5, 1, granted=4)  # 4 ranks x 2 steps would leave 3 of 8 micro-batches empty
    assert plan.world * plan.accumulation <= 5 and min(plan.sizes) >= 1


@pytest.fixture()
def stream(tmp_path):
    """Micro-batches of a seeded 2D dataset for steps start..steps-1."""
    train, _ = make_data(tmp_path, (32, 32), n_val=0)
    dataset = CropDataset(index_shards(train, 2), (16, 16), seed=1, shuffle=True)
    return lambda plan, start, steps, workers=0: list(train_loader(dataset, plan, 0, start, steps, workers, False))


def test_loader_resumes_mid_run_with_the_same_batches(stream):
    plan = MicroBatches(6, 3, world=1)
    whole, resumed = stream(plan, 0, 4), stream(plan, 2, 4)
    assert len(whole) == 8 and len(resumed) == 4 and len(StepSampler(plan, 0, 2, 4)) == 4
    assert all(torch.equal(x, y) for x, y in zip(whole[4:], resumed))


def test_workers_give_the_same_stream_as_the_main_process(stream):
    plan = MicroBatches(4, 2, world=1)
    assert all(torch.equal(x, y) for x, y in zip(stream(plan, 0, 3), stream(plan, 0, 3, workers=2)))


def test_validation_uses_centre_crops_of_the_first_items(tmp_path):
    _, val = make_data(tmp_path, (32, 32), n_train=2, n_val=4)
    items = index_shards(val, 2)
    loader = validation_loader(items, (16, 16), batch_size=3, batches=1)
    (batch,) = list(loader)
    assert batch.shape == (3, 1, 16, 16)
    with ShardReader(items[1].shard) as reader:
        whole, _ = reader.read(items[1].item_id)
    np.testing.assert_array_equal(batch[1, 0].numpy(), whole[8:24, 8:24])
    assert validation_loader([], (16, 16), 3, 1) is None


def test_a_2d_model_refuses_3d_shards(tmp_path):
    path = write_shard(tmp_path / "s" / "train-000.h5", 1, (8, 8, 8), seed=0)
    with pytest.raises(InputError, match="expected a 2D array"):
        index_shards([path], dims=2)
