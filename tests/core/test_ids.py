import hashlib

from medlatent.core import ids

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def test_item_ids_have_no_dots_and_are_stable():
    key = ids.salted_key("salt", "demo.wrist", ids.file_key("p1/s2/image.dcm"))
    item = ids.item_id("demo.wrist", key)
    assert "." not in item and item.startswith("demo-wrist_")
    assert item == ids.item_id("demo.wrist", ids.salted_key("salt", "demo.wrist", ids.file_key("p1/s2/image.dcm")))


def test_salted_keys_depend_on_salt_and_source_and_are_no_digest_of_the_path():
    path = "PID123/ACC456/image.dcm"
    key = ids.salted_key("salt-a", "src", ids.file_key(path))
    assert len(key) == 16 and int(key, 16) >= 0
    assert key != ids.salted_key("salt-b", "src", ids.file_key(path))
    assert key != ids.salted_key("salt-a", "other", ids.file_key(path))
    digests = {
        hashlib.new(name, text.encode()).hexdigest()
        for name in ("md5", "sha1", "sha256")
        for text in (path, ids.file_key(path))
    }
    assert not any(key in digest for digest in digests) and ids.file_key(path) not in key


def test_patient_keys_depend_on_the_salt_and_hide_the_id():
    a = ids.patient_key("salt-a", "src", "PID123")
    assert a != ids.patient_key("salt-b", "src", "PID123")
    assert "PID123" not in a and len(a) == 20


def test_splits_are_patient_level_proportional_and_stable_under_additions():
    keys = [ids.patient_key("s", "src", str(i)) for i in range(4000)]
    splits = {k: ids.patient_split(0, k, FRACTIONS) for k in keys}
    share = sum(v == "train" for v in splits.values()) / len(keys)
    assert 0.77 < share < 0.83
    more = keys + [ids.patient_key("s", "src", f"new{i}") for i in range(100)]
    assert all(ids.patient_split(0, k, FRACTIONS) == splits[k] for k in more[:4000])


def test_zero_fraction_split_is_never_assigned():
    fractions = {"train": 0.8, "val": 0.0, "test": 0.2}
    assert {ids.patient_split(1, str(i), fractions) for i in range(2000)} == {"train", "test"}


def test_shards_stay_within_their_split():
    shards = {ids.shard_of(f"item{i}", "train", 3) for i in range(300)}
    assert shards == {"train-000", "train-001", "train-002"}
