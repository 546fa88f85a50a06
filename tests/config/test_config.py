import copy
import re

import pytest

from medlatent import config as mlconfig
from medlatent.core.errors import ConfigError


def test_full_config_encodes_the_published_recipe(full_config):
    sources = full_config["sources"]
    assert len(sources) == 22
    training = [s for s in sources if s["role"] in ("train", "both")]
    assert len(training) == 19
    assert sorted(s["id"] for s in sources if s["role"] == "cad") == ["grazpedwri_dx", "rsna_bone_age", "verse19"]
    assert sum(s["dims"] == 2 for s in training) == 8  # 2 chest X-ray + 6 FFDM
    models = {m["id"]: m for m in full_config["models"]}
    assert len(models) == 6
    assert models["medvae_f16_c1"]["stage1"]["disc_start"] == 3125
    assert models["medvae3d_f512_c1"]["inflate_from"] == "medvae_f64_c1"
    assert len(full_config["cad_tasks"]) == 8


def test_schema_fills_defaults(full_config):
    inbreast = mlconfig.source(full_config, "inbreast")
    assert inbreast["split"] == {"method": "patient_random", "fractions": {"train": 0.8, "val": 0.1, "test": 0.1}}
    assert inbreast["license"]["permission"] is None
    assert full_config["curate"]["decode_check"] is True


def test_demo_lists_replace_full_lists_and_mappings_merge(demo_config):
    assert all(s["access"]["method"] == "synthetic" for s in demo_config["sources"])
    assert demo_config["normalize"]["xray"]["size"] == [64, 64]
    # Keys the demo does not set come from config.yaml.
    assert demo_config["normalize"]["ct"]["hu_window"] == [-1000.0, 1000.0]


def test_invalid_config_names_the_key(full_config):
    broken = copy.deepcopy(full_config)
    broken["sources"][0]["modality"] = "ultrasound"
    with pytest.raises(ConfigError, match="modality"):
        mlconfig.validate(broken)


def test_cross_references_are_checked(full_config):
    broken = copy.deepcopy(full_config)
    broken["cad_tasks"][0]["source"] = "nowhere"
    with pytest.raises(ConfigError, match=r"cad_tasks\[cmmd_malignancy\]\.source"):
        mlconfig.validate(broken)
    broken = copy.deepcopy(full_config)
    broken["models"][0]["sources"] = ["cq500"]  # a 3D source for a 2D model
    with pytest.raises(ConfigError, match=r"models\[.+\]\.sources names \['cq500'\]"):
        mlconfig.validate(broken)


def test_fixed_salt_is_refused_outside_the_demo(full_config):
    broken = copy.deepcopy(full_config)
    broken["project"]["salt"] = "abc"
    with pytest.raises(ConfigError, match="project.salt"):
        mlconfig.validate(broken)


def test_slices_are_canonical_and_local(demo_config):
    ct = mlconfig.normalize_slice(demo_config, "demo_headct")
    assert ct["hu_window"] == [-1000.0, 1000.0] and ct["spacing"] == [2.0, 2.0, 2.0]
    knee = mlconfig.normalize_slice(demo_config, "demo_knee")
    assert knee["spacing"] is None  # the source's own override wins
    assert mlconfig.canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'


def test_shards_are_split_pure(demo_config):
    cxr = mlconfig.source(demo_config, "demo_cxr")
    cxr["shards"]["train"] = 2
    assert mlconfig.shard_ids(cxr) == ["train-000", "train-001", "val-000", "test-000"]
    # a random split with no validation fraction plans no validation shard; a provided split keeps it
    assert mlconfig.shard_ids(mlconfig.source(demo_config, "demo_mammo")) == ["train-000", "test-000"]
    assert mlconfig.shard_ids(mlconfig.source(demo_config, "demo_knee")) == ["train-000", "val-000", "test-000"]


def test_extraction_groups_cover_every_shard_once_in_split_pure_runs(demo_config):
    cxr = mlconfig.source(demo_config, "demo_cxr")
    cxr["shards"] = {"train": 5, "val": 1, "test": 2}
    demo_config["latents"]["shards_per_job"] = 2
    groups = mlconfig.extraction_groups(demo_config, "demo_cxr")
    assert groups == ["train-000-001", "train-002-003", "train-004-004", "val-000-000", "test-000-001"]
    assert [s for g in groups for s in mlconfig.group_shards(g)] == mlconfig.shard_ids(cxr)
    assert all(re.fullmatch(mlconfig.shard_group_pattern(), g) for g in groups)
    assert not re.fullmatch(mlconfig.shard_group_pattern(), "train-000")  # a shard id is not a group id
    demo_config["latents"]["shards_per_job"] = 8  # the default: one job per split here
    assert mlconfig.extraction_groups(demo_config, "demo_cxr") == ["train-000-004", "val-000-000", "test-000-001"]
