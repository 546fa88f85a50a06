"""Compact latent shards: one tar member per sample, labels and meta in a sidecar per shard.

Read back with `load_latents`, plain `webdataset` and timm's WebDataset reader; checked by
`medlatent verify`.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from latent_fixtures import CC0, extract_per_split, extract_spec, index_spec, tiny_model, write_source

from medlatent import cli, load_latents
from medlatent.core.errors import InputError
from medlatent.latents.index import write_dataset_files
from medlatent.latents.sidecar import build_sidecar, sample_entry

SHARDS = {"train-000": 16, "train-001": 4, "val-000": 2, "test-000": 3}
#: A 1 x 16 x 16 float16 latent (1 channel, 32 x 32 image, f=4): 512 bytes.
LATENT_BYTES = 512


def _build(root: Path, timm_json: bool, shards: dict[str, int] = SHARDS) -> dict:
    weights = tiny_model(root / "models" / "tiny1" / "stage2.pt", latent_channels=1, model_id="tiny1")
    folder, manifest = write_source(root, "compact", shards, (32, 32), rejected=0)
    dataset = root / "latents"
    spec = extract_spec("tiny1", "compact", store=[], timm_json=timm_json)
    parts, _ = extract_per_split(spec, folder, shards, manifest, weights, dataset, root / "parts")
    index = write_dataset_files(index_spec("tiny1", "compact", CC0), parts, weights.parent / "card.json", dataset)
    return {"dataset": dataset, "index": index, "labels": manifest.set_index("item_id")["label_finding"]}


@pytest.fixture(scope="module")
def compact(tmp_path_factory) -> dict:
    return _build(tmp_path_factory.mktemp("compact"), timm_json=False)


def _latents_in_tar(path: Path) -> dict[str, np.ndarray]:
    """{key: latent} read with tarfile and numpy alone."""
    with tarfile.open(path) as archive:
        return {
            member.name.split(".", 1)[0]: np.load(io.BytesIO(archive.extractfile(member).read()))
            for member in archive.getmembers()
            if member.name.endswith(".latent.npy")
        }


def test_a_512_byte_latent_is_one_tar_member_and_under_2_kib_per_sample(compact):
    dataset, index = compact["dataset"], compact["index"]
    for shard in index["shards"]:
        with tarfile.open(dataset / shard["file"]) as archive:
            names = archive.getnames()
        assert names == sorted(names) and all(name.endswith(".latent.npy") for name in names)
        assert len(names) == shard["num_samples"]
        # header block + 640-byte .npy padded to 1024, then the two end blocks: no record padding
        assert shard["bytes"] == shard["num_samples"] * (512 + 1024) + 1024
    storage = index["storage"]
    on_disk = sum(s["bytes"] + s["sidecar_bytes"] for s in index["shards"])
    assert storage["bytes_per_sample"] == pytest.approx(on_disk / 25, abs=0.1) and storage["bytes_per_sample"] <= 2048
    assert storage["overhead_bytes_per_sample"] == pytest.approx(storage["bytes_per_sample"] - LATENT_BYTES, abs=0.1)
    card = (dataset / "README.md").read_text()
    assert f"- On disk per sample: {storage['bytes_per_sample']:,.0f} bytes, of which" in card


def test_load_latents_joins_labels_and_meta_from_the_sidecar(compact):
    dataset = compact["dataset"]
    for split in ("train", "val", "test"):
        in_tars = {
            key: latent
            for shard in compact["index"]["shards"]
            if shard["split"] == split
            for key, latent in _latents_in_tar(dataset / shard["file"]).items()
        }
        seen = set()
        for latent, labels, meta in load_latents(dataset, split=split):
            key = meta["item_id"]
            seen.add(key)
            assert torch.equal(latent, torch.from_numpy(in_tars[key].astype(np.float32)))
            assert labels["finding"] == compact["labels"][key]
            assert meta["split"] == split and meta["latent_shape"] == [1, 16, 16]
            assert meta["normalization"]["scale"] == 0.5 and meta["original_shape"] == [35, 35]
        assert seen == set(in_tars)


def test_a_shuffled_load_reads_each_sidecar_once(compact, monkeypatch):
    from medlatent.latents import sidecar

    reads = []
    real = sidecar.read_sidecar
    monkeypatch.setattr(sidecar, "read_sidecar", lambda path: reads.append(Path(path).name) or real(path))
    samples = list(load_latents(compact["dataset"], split="train", shuffle=8, seed=1))
    assert sorted(reads) == ["train-000.meta.json", "train-001.meta.json"]
    assert sorted(meta["item_id"] for _, _, meta in samples) == sorted(compact["labels"].index[:20])
    assert all(labels["finding"] == compact["labels"][meta["item_id"]] for _, labels, meta in samples)


def test_plain_webdataset_reads_the_latent_and_the_readme_join_gives_labels_and_meta(compact):
    import webdataset as wds

    dataset = compact["dataset"]
    expected = {meta["item_id"]: (latent, labels, meta) for latent, labels, meta in load_latents(dataset)}
    sidecar = json.loads((dataset / "train-000.meta.json").read_text())
    count = 0
    for sample in wds.WebDataset(str(dataset / "train-000.tar"), shardshuffle=False).decode():
        entry = sidecar["samples"][sample["__key__"]]
        latent, labels = sample["latent.npy"], entry["labels"]
        meta = {**sidecar["meta"], **entry["meta"], "item_id": sample["__key__"]}
        assert latent.dtype == np.float16 and set(sample) == {"__key__", "__url__", "__local_path__", "latent.npy"}
        want = expected[sample["__key__"]]
        assert torch.equal(torch.from_numpy(latent.astype(np.float32)), want[0]) and (labels, meta) == want[1:]
        count += 1
    assert count == 16


def test_timm_reader_yields_every_sample_with_its_target_and_exact_latent(tmp_path):
    from timm.data import create_dataset

    import medlatent.latents.pil_npy  # noqa: F401  (lets PIL, so timm, open .npy members)

    built = _build(tmp_path, timm_json=True, shards={"train-000": 16, "train-001": 4})
    dataset = built["dataset"]
    with tarfile.open(dataset / "train-000.tar") as archive:
        assert {name.split(".", 1)[1] for name in archive.getnames()} == {"latent.npy", "json"}
    in_tar = {**_latents_in_tar(dataset / "train-000.tar"), **_latents_in_tar(dataset / "train-001.tar")}
    timm_dataset = create_dataset(
        "wds/compact",
        root=str(dataset),
        split="train",
        input_key="latent.npy;jpg",
        input_img_mode="",
        target_key="finding",
        transform=lambda image: (image.latent, np.asarray(image)),
    )
    got = []
    for (latent, pixels), target in timm_dataset:
        assert np.array_equal(pixels.reshape(latent.shape), latent.astype(np.float32))  # mode F holds it exactly
        got.append((latent, target))
    assert len(got) == 20
    expected = sorted((latent.tobytes(), int(built["labels"][key])) for key, latent in in_tar.items())
    assert sorted((latent.tobytes(), target) for latent, target in got) == expected
    assert all(latent.dtype == np.float16 and latent.shape == (1, 16, 16) for latent, _ in got)
    assert "json" in (dataset / "README.md").read_text()  # the card names the timm member


def test_sidecar_restores_every_sample_meta_exactly():
    metas = {
        "a": {"source": "s", "scale": 1, "only_a": [1, 2], "flag": True},
        "b": {"source": "s", "scale": 1.0, "flag": True},
        "c": {"source": "s", "scale": 1, "flag": True},
    }
    sidecar = json.loads(build_sidecar("x.tar", {key: ({"y": key}, meta) for key, meta in metas.items()}))
    assert sidecar["meta"] == {"source": "s", "flag": True}  # 1 and 1.0 differ in the file: not shared
    for key, meta in metas.items():
        labels, restored = sample_entry(sidecar, key, "x.meta.json")
        assert labels == {"y": key} and json.dumps(restored, sort_keys=True) == json.dumps(
            {**meta, "item_id": key}, sort_keys=True
        )
    with pytest.raises(InputError, match="x.meta.json: has no entry for sample 'd'"):
        sample_entry(sidecar, "d", "x.meta.json")


def test_verify_names_a_tampered_or_missing_sidecar(compact, tmp_path, capsys):
    copy = shutil.copytree(compact["dataset"], tmp_path / "copy")
    sidecar = json.loads((copy / "train-000.meta.json").read_text())
    dropped = sorted(sidecar["samples"])[0]
    del sidecar["samples"][dropped]
    (copy / "train-000.meta.json").write_text(json.dumps(sidecar))
    (copy / "val-000.meta.json").unlink()
    (copy / "test-000.meta.json").write_text("{")
    assert cli.main(["verify", str(copy)]) == 1
    error = capsys.readouterr().err
    assert "train-000.meta.json: sha256 differs" in error
    assert (
        f"train-000.meta.json: keys differ from train-000.tar (1 samples without an entry, e.g. ['{dropped}']" in error
    )
    assert "val-000.meta.json: missing" in error
    assert "test-000.meta.json: sha256 differs" in error and "test-000.meta.json: not a readable shard sidecar" in error
    with pytest.raises(InputError, match="val-000.meta.json: not a readable shard sidecar"):
        list(load_latents(copy, split="val"))


def test_a_dataset_of_the_earlier_format_is_refused_naming_the_fix(compact, tmp_path, capsys):
    copy = shutil.copytree(compact["dataset"], tmp_path / "old")
    index = json.loads((copy / "index.json").read_text())
    (copy / "index.json").write_text(json.dumps({**index, "format": "medlatent-latents/2"}))
    with pytest.raises(
        InputError, match=r"index.json: is a 'medlatent-latents/2' latent dataset.*rerun the extraction"
    ):
        load_latents(copy)
    assert cli.main(["verify", str(copy)]) == 1
    assert "rerun the extraction" in capsys.readouterr().err
